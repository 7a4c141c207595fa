"""`/history` and `/queue` answers → typed state. The only place that interprets them.

Facts this relies on (recorded from ComfyUI 0.3.64):
- `/history/{id}` is `{}` while queued, while running and for ids ComfyUI never
  ran or forgot; only `/queue` tells those apart.
- A failed run and an interrupted run both say `status_str: "error"`; the last
  message (`execution_error` / `execution_interrupted`) says which.
- Outputs are listed per node under `images` (stills, animated WebP, SaveVideo),
  `audio` (SaveAudio) or, for custom nodes, `gifs`/`videos`; each entry says
  `type: output` or `type: temp` (previews).
- `/queue`'s pending list is not sorted; order is by `number` (front=true
  prompts get negative numbers).
"""

from __future__ import annotations

from typing import Any

from comfykube.comfyui.errors_text import describe_execution_error, describe_interruption
from comfykube.comfyui.models import (
    HistoryEntry,
    OutputImage,
    PromptState,
    QueueItem,
    QueueSnapshot,
)
from comfykube.errors import ExecutionFailed, Interrupted

#: The lists of a node's UI output that name files: core savers (`images`, also for
#: SaveAnimatedWEBP and SaveVideo, captures 91, 93), SaveAudio (`audio`), custom video
#: nodes such as VideoHelperSuite's VHS_VideoCombine (`gifs`) and others (`videos`).
OUTPUT_LISTS = ("images", "gifs", "videos", "audio")


def _as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (ComfyUI's shapes vary by version)."""
    return value if isinstance(value, dict) else {}


def parse_history(prompt_id: str, body: Any) -> HistoryEntry | None:
    """The entry for `prompt_id` from a `/history/{id}` body, or None while absent (`{}`)."""
    if not isinstance(body, dict):
        return None
    raw = body.get(prompt_id)
    if not isinstance(raw, dict):
        return None
    status = _as_dict(raw.get("status"))
    messages: list[tuple[str, dict[str, Any]]] = []
    for item in status.get("messages") or ():
        if isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str):
            messages.append((item[0], item[1] if isinstance(item[1], dict) else {}))
    images: list[OutputImage] = []
    for node_id, output in _as_dict(raw.get("outputs")).items():
        images.extend(output_files(str(node_id), output))
    prompt = raw.get("prompt")
    number = prompt[0] if isinstance(prompt, list) and prompt and isinstance(prompt[0], int | float) else None
    status_str = status.get("status_str")
    if not isinstance(status_str, str):
        # Older ComfyUI wrote entries without status: outputs present means it ran.
        status_str = "success" if images else "error"
    return HistoryEntry(
        prompt_id=prompt_id,
        status_str=status_str,
        completed=bool(status.get("completed", status_str == "success")),
        images=tuple(images),
        messages=tuple(messages),
        number=number,
    )


def output_files(node_id: str, output: Any) -> list[OutputImage]:
    """The files one node's UI output names (a history entry's `outputs[node]`, a WS `executed` frame's `output`)."""
    if not isinstance(output, dict):
        return []
    flags = output.get("animated")
    flags = flags if isinstance(flags, list) else []
    files: list[OutputImage] = []
    for listed_under in OUTPUT_LISTS:
        items = output.get(listed_under)
        for position, image in enumerate(items if isinstance(items, list) else ()):
            if isinstance(image, dict) and image.get("filename"):
                files.append(
                    OutputImage(
                        filename=str(image["filename"]),
                        subfolder=str(image.get("subfolder") or ""),
                        type=str(image.get("type") or "output"),
                        node_id=node_id,
                        listed_under=listed_under,
                        # `animated` runs parallel to `images` (captures 91, 93).
                        animated=listed_under == "images" and position < len(flags) and flags[position] is True,
                    )
                )
    return files


def parse_queue(body: Any) -> QueueSnapshot:
    """A `/queue` body as a snapshot with pending prompts sorted by number."""

    def items(key: str) -> list[QueueItem]:
        found: list[QueueItem] = []
        raw = body.get(key) if isinstance(body, dict) else None
        for entry in raw or ():
            if isinstance(entry, list | tuple) and len(entry) >= 2:
                number = entry[0] if isinstance(entry[0], int | float) else 0
                found.append(QueueItem(number=number, prompt_id=str(entry[1])))
        return found

    running = items("queue_running")
    pending = sorted(items("queue_pending"), key=lambda item: item.number)
    return QueueSnapshot(running=tuple(running), pending=tuple(pending))


def prompt_state(entry: HistoryEntry | None, queue: QueueSnapshot, prompt_id: str) -> PromptState:
    """Combine history and queue: DONE beats RUNNING beats PENDING beats UNKNOWN."""
    if entry is not None:
        return PromptState.done(entry)
    if queue.is_running(prompt_id):
        return PromptState.running()
    position = queue.position(prompt_id)
    if position is not None:
        return PromptState.pending(position)
    return PromptState.unknown()


def outcome(entry: HistoryEntry) -> HistoryEntry:
    """Return a successful entry; raise ExecutionFailed or Interrupted for the others."""
    interruption = entry.interruption
    if interruption is not None:
        raise Interrupted(describe_interruption(interruption, entry.prompt_id))
    error = entry.error
    if error is not None:
        raise ExecutionFailed(describe_execution_error(error, entry.prompt_id))
    if entry.status_str != "success":
        raise ExecutionFailed(f"prompt {entry.prompt_id} ended with status {entry.status_str!r} and no error message")
    return entry
