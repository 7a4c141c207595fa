"""Node schemas as `/object_info` describes them, and checking a graph against them.

`/object_info` answers `{class: {"input": {"required": {...}, "optional": {...}},
"output": [types], ...}}`. An input is `[TYPE, {options}]` where TYPE is a
value type (`INT`, `FLOAT`, `STRING`, `BOOLEAN`), a link type (`MODEL`,
`LATENT`, …, `*` for any), or a choice list (`[[a, b], {...}]` in 0.3.x,
`["COMBO", {"options": [...]}]` in newer builds). Pure functions: no network.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

#: Value types ComfyUI checks itself; everything else in upper case is a link type.
VALUE_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})


@dataclass(frozen=True)
class ServerChoice:
    """A value that must be one the running ComfyUI offers for a node input (checked in preflight)."""

    #: What the user calls it (a workflow parameter's name), for the message.
    label: str
    class_type: str
    input: str
    value: str


def combo_values(spec: Any) -> list[str] | None:
    """Allowed values of an enum input: `[[a, b], {...}]` (0.3.x) or `["COMBO", {"options": [...]}]`."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return [str(v) for v in spec[0]]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        if isinstance(options, list):
            return [str(v) for v in options]
    return None


def input_spec(info: Mapping[str, Any], input_name: str) -> list[Any] | None:
    """The `[TYPE, {options}]` of one input of a node class (required or optional), if any."""
    inputs = info.get("input") or {}
    for group in ("required", "optional"):
        spec = (inputs.get(group) or {}).get(input_name)
        if isinstance(spec, list) and spec:
            return spec
    return None


def input_type(spec: list[Any]) -> str:
    """`INT`, `FLOAT`, `STRING`, `BOOLEAN`, `COMBO` or a link type such as `MODEL`."""
    head = spec[0]
    if isinstance(head, list):
        return "COMBO"
    return str(head)


def input_options(spec: list[Any]) -> dict[str, Any]:
    """The options object of an input spec (`min`, `max`, `default`, …), `{}` when absent."""
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def link_types_match(output_type: str, input_type_: str) -> bool:
    """Whether an output of `output_type` may feed an input of `input_type_` (ComfyUI's rule).

    `*` matches anything; a comma-separated type accepts any of its parts.
    """
    if "*" in (output_type, input_type_):
        return True
    outputs = set(output_type.split(","))
    inputs = set(input_type_.split(","))
    return bool(outputs & inputs)


def value_problem(spec: list[Any], value: Any, *, check_choices: bool = True) -> str | None:
    """Why `value` does not fit the input `spec`, or None when it does."""
    kind = input_type(spec)
    options = input_options(spec)
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer (INT), got {value!r}"
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number (FLOAT), got {value!r}"
    elif kind == "STRING":
        if not isinstance(value, str):
            return f"must be a string (STRING), got {value!r}"
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            return f"must be true or false (BOOLEAN), got {value!r}"
    elif kind == "COMBO":
        choices = combo_values(spec) or []
        if check_choices and str(value) not in choices:
            shown = ", ".join(choices[:12]) + (", …" if len(choices) > 12 else "")
            return f"{value!r} is not one of the choices ({shown})"
        if not isinstance(value, str | int | float):
            return f"must be one of the choices, got {value!r}"
        return None
    else:
        return f"expects a link from a {kind} output, got the value {value!r}"
    if kind in ("INT", "FLOAT"):
        low, high = options.get("min"), options.get("max")
        if isinstance(low, int | float) and value < low:
            return f"{value!r} is below the minimum {low}"
        if isinstance(high, int | float) and value > high:
            return f"{value!r} is above the maximum {high}"
    return None


def is_link(value: Any) -> bool:
    """`["4", 1]`: the output 1 of node 4."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def check_graph(
    graph: Mapping[str, Any],
    schema: Mapping[str, Any],
    *,
    replaced: Collection[tuple[str, str]] = (),
) -> list[str]:
    """Every way `graph` breaks the node schemas in `schema` (an `/object_info` answer).

    Checks that every class exists, every input exists, every required input is
    given, every value fits its type and bounds, and every link points at an
    existing output whose type matches. Inputs in `replaced` (node id, input)
    are filled in at render time: their choice lists are not checked (a default
    checkpoint need not be on the server the schema was taken from).
    """
    problems: list[str] = []
    for node_id, node in graph.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        where = f"node {node_id!r} ({class_type})"
        info = schema.get(class_type) if isinstance(class_type, str) else None
        if not isinstance(info, dict):
            problems.append(f"{where}: no such node class on this ComfyUI")
            continue
        inputs = node.get("inputs") or {}
        declared = info.get("input") or {}
        for name in (declared.get("required") or {}):
            if name not in inputs:
                problems.append(f"{where}: required input {name!r} is missing")
        for name, value in inputs.items():
            spec = input_spec(info, name)
            if spec is None:
                problems.append(f"{where}: has no input {name!r}")
                continue
            kind = input_type(spec)
            if is_link(value):
                problems.extend(_link_problems(graph, schema, where, name, kind, value))
                continue
            problem = value_problem(spec, value, check_choices=(str(node_id), name) not in replaced)
            if problem is not None:
                problems.append(f"{where}: input {name!r} {problem}")
    return problems


def _link_problems(
    graph: Mapping[str, Any], schema: Mapping[str, Any], where: str, name: str, kind: str, value: list[Any]
) -> list[str]:
    source_id, index = str(value[0]), value[1]
    source = graph.get(source_id)
    if not isinstance(source, dict):
        return [f"{where}: input {name!r} links to node {source_id!r}, which is not in the graph"]
    source_info = schema.get(str(source.get("class_type")))
    if not isinstance(source_info, dict):
        return []  # reported for the source node itself
    outputs = source_info.get("output") or []
    if not 0 <= index < len(outputs):
        return [f"{where}: input {name!r} links to output {index} of node {source_id!r}, which has {len(outputs)}"]
    output_type = outputs[index]
    output_type = "COMBO" if isinstance(output_type, list) else str(output_type)
    if kind in VALUE_TYPES - {"COMBO"} and output_type == kind:
        return []  # e.g. a primitive node feeding an INT
    if not link_types_match(output_type, kind):
        return [f"{where}: input {name!r} expects {kind} but node {source_id!r} output {index} is {output_type}"]
    return []
