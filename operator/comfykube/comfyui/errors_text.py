"""ComfyUI's error bodies → one readable line for people (status, CLI, chat).

ComfyUI's 400 answers are typed (`error` plus per-node `node_errors`), some
carry Python tracebacks (`exception_during_validation`) and some omit the list
of allowed values (`'euler_a' not in (list of length 42)`). These helpers keep
what helps a user fix the request and drop the rest.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: How many allowed values a message lists before it says "… and N more".
MAX_LISTED = 12
#: Longest single message we produce; the Kubernetes condition limit is far above.
MAX_MESSAGE = 2000


def format_allowed(values: Sequence[str], limit: int = MAX_LISTED) -> str:
    """`euler, euler_ancestral, … (and 30 more)`; `(none)` for an empty list."""
    if not values:
        return "(none)"
    shown = ", ".join(str(v) for v in values[:limit])
    if len(values) > limit:
        shown += f", … (and {len(values) - limit} more)"
    return shown


def did_you_mean(value: str, allowed: Iterable[str]) -> str | None:
    """The closest allowed value, or None when nothing is close.

    `euler_a` → `euler_ancestral`: a plain ratio ranks `euler` first, so a value
    that is a prefix-abbreviation of an allowed name (each `_` part a prefix of
    the matching part) wins over mere similarity.
    """
    options = [str(a) for a in allowed]
    if not options or not value:
        return None
    lowered = value.lower()
    for option in options:
        if option.lower() == lowered:
            return option
    parts = lowered.split("_")
    abbreviations = [
        option
        for option in options
        if len(option.split("_")) == len(parts)
        and all(o.startswith(p) for o, p in zip(option.lower().split("_"), parts, strict=True))
    ]
    if abbreviations:
        return min(abbreviations, key=len)
    # Compare file names without the extension they share: every checkpoint ends in
    # ".safetensors", which would make any two names look alike.
    stem = _stem(value)
    by_stem = {_stem(option): option for option in options}
    close = difflib.get_close_matches(stem, list(by_stem), n=1, cutoff=0.6)
    return by_stem[close[0]] if close else None


def _stem(name: str) -> str:
    base, dot, ext = name.rpartition(".")
    return base if dot and base and len(ext) <= 12 else name


def not_offered(kind: str, value: str, allowed: Sequence[str]) -> str:
    """`sampler 'euler_a' is not offered by this ComfyUI; did you mean …? allowed: …`."""
    text = f"{kind} {value!r} is not offered by this ComfyUI"
    guess = did_you_mean(value, allowed)
    if guess is not None and guess != value:
        text += f"; did you mean {guess!r}?"
    else:
        text += ";"
    return f"{text} allowed: {format_allowed(list(allowed))}"


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_LIST_OF_LENGTH = re.compile(r"not in \(list of length \d+\)")


def _node_sort_key(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def describe_node_error(
    node_id: str,
    class_type: str | None,
    error: Mapping[str, Any],
    allowed: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> str:
    """One node error as `node 4 (CheckpointLoaderSimple) ckpt_name: 'x' not in [...]`.

    `allowed` maps `(class_type, input_name)` to the values this ComfyUI offers,
    used when ComfyUI's own message only says "(list of length 42)".
    """
    where = f"node {node_id} ({class_type})" if class_type else f"node {node_id}"
    kind = str(error.get("type") or "")
    message = str(error.get("message") or kind or "invalid")
    details = str(error.get("details") or "")
    raw_extra = error.get("extra_info")
    extra: Mapping[str, Any] = raw_extra if isinstance(raw_extra, Mapping) else {}
    input_name = str(extra.get("input_name") or "")

    if kind == "exception_during_validation":
        # extra_info holds a Python traceback: never shown; the exception type and key suffice.
        exc_type = extra.get("exception_type")
        suffix = f": {exc_type} {details}" if exc_type else (f": {details}" if details else "")
        return _clip(f"{where}: {message}{suffix}")

    if kind == "value_not_in_list" and input_name:
        received = extra.get("received_value")
        options: Sequence[str] | None = None
        config = extra.get("input_config")
        if isinstance(config, list) and config and isinstance(config[0], list):
            options = [str(v) for v in config[0]]
        elif allowed and class_type and (class_type, input_name) in allowed:
            options = list(allowed[(class_type, input_name)])
        if options is not None and received is not None:
            text = f"{input_name}: {str(received)!r} not in [{format_allowed(options)}]"
            guess = did_you_mean(str(received), options)
            if guess is not None and guess != received:
                text += f" (did you mean {guess!r}?)"
            return _clip(f"{where} {text}")
        if details:
            return _clip(f"{where} {details}")

    if input_name:
        if details.startswith(f"{input_name}:"):
            return _clip(f"{where} {details}")
        rest = details
        for lead in (f"{input_name}, ", input_name):
            if rest.startswith(lead):
                rest = rest[len(lead) :]
                break
        text = f"{where} {input_name}: {message}"
        return _clip(f"{text} ({rest})" if rest.strip() else text)

    if details and details != message:
        return _clip(f"{where}: {message}: {details}")
    return _clip(f"{where}: {message}")


def describe_prompt_rejection(
    body: Any,
    allowed: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> str:
    """A `POST /prompt` 400 body as one readable line, node errors first, no tracebacks."""
    if not isinstance(body, Mapping):
        text = str(body or "").strip()
        return _clip(f"ComfyUI refused the workflow: {text}" if text else "ComfyUI refused the workflow")
    parts: list[str] = []
    node_errors = body.get("node_errors")
    if isinstance(node_errors, Mapping):
        for node_id in sorted((str(k) for k in node_errors), key=_node_sort_key):
            node = node_errors.get(node_id)
            if not isinstance(node, Mapping):
                continue
            class_type = node.get("class_type")
            for error in node.get("errors") or ():
                if isinstance(error, Mapping):
                    parts.append(describe_node_error(node_id, class_type, error, allowed))
    if not parts:
        error = body.get("error")
        if isinstance(error, Mapping):
            message = str(error.get("message") or error.get("type") or "invalid workflow")
            details = str(error.get("details") or "")
            text = message if not details or details == message else f"{message} ({details})"
            parts.append(text)
        elif isinstance(error, str) and error:
            parts.append(error)
    if not parts:
        parts.append("ComfyUI refused the workflow without saying why")
    return _clip("; ".join(parts))


def needs_allowed_values(body: Any) -> list[tuple[str, str]]:
    """`(class_type, input_name)` pairs whose 400 message lacks the allowed list."""
    wanted: list[tuple[str, str]] = []
    node_errors = body.get("node_errors") if isinstance(body, Mapping) else None
    if not isinstance(node_errors, Mapping):
        return wanted
    for node in node_errors.values():
        if not isinstance(node, Mapping) or not node.get("class_type"):
            continue
        for error in node.get("errors") or ():
            if not isinstance(error, Mapping) or error.get("type") != "value_not_in_list":
                continue
            extra = error.get("extra_info") or {}
            lacks_list = extra.get("input_config") is None or _LIST_OF_LENGTH.search(str(error.get("details") or ""))
            pair = (str(node["class_type"]), str(extra.get("input_name") or ""))
            if lacks_list and pair[1] and pair not in wanted:
                wanted.append(pair)
    return wanted


def describe_execution_error(data: Mapping[str, Any] | None, prompt_id: str) -> str:
    """An `execution_error` payload as `node 2 (SaveImage) failed: Exception: …` (no traceback)."""
    if not data:
        return f"prompt {prompt_id} failed in ComfyUI without an error message"
    node_id = data.get("node_id")
    node_type = data.get("node_type")
    where = f"node {node_id} ({node_type})" if node_type else f"node {node_id}"
    exc_type = data.get("exception_type")
    message = str(data.get("exception_message") or "").strip() or "no message"
    # ComfyUI pads some messages with "**** ERROR:" banners and indented dumps.
    message = message.replace("**** ERROR:", "").strip()
    prefix = f"{exc_type}: " if exc_type and exc_type != "Exception" else ""
    return _clip(f"{where} failed: {prefix}{message}")


def describe_interruption(data: Mapping[str, Any] | None, prompt_id: str) -> str:
    """An `execution_interrupted` payload as a readable line."""
    if not data:
        return f"prompt {prompt_id} was interrupted in ComfyUI"
    node_id = data.get("node_id")
    node_type = data.get("node_type")
    if node_id is None:
        return f"prompt {prompt_id} was interrupted in ComfyUI"
    where = f"node {node_id} ({node_type})" if node_type else f"node {node_id}"
    return f"prompt {prompt_id} was interrupted in ComfyUI at {where}"
