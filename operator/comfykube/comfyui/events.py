"""WebSocket frames → typed events. The only place that knows ComfyUI's frame shapes.

ComfyUI sends JSON text frames `{"type": ..., "data": {...}}` and, when live
previews are on (`--preview-method` other than `none`), binary frames whose first
big-endian u32 is the event type:

- 1 `PREVIEW_IMAGE`: `[u32 1][u32 format: 1 JPEG, 2 PNG][image]`. It names no prompt:
  the hub gives it to the prompt that is executing.
- 4 `PREVIEW_IMAGE_WITH_METADATA`: `[u32 4][u32 length][JSON metadata][image]`, sent
  instead of 1 to a client that announced `supports_preview_metadata` in its
  `feature_flags`; the metadata carries `prompt_id`, `node_id` and `image_type`.

Both become a `PreviewImage`. Other binary frames (3, text from custom nodes),
truncated ones and unparsable text become `None`: a stray frame must never crash
a follower.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """Base of all parsed frames; `prompt_id` is None for broadcast frames (status)."""

    prompt_id: str | None

    @property
    def terminal(self) -> bool:
        """True when the frame means the prompt stopped running (history is about to exist)."""
        return False


@dataclass(frozen=True)
class StatusEvent(Event):
    """`status`: queue length broadcast; the first frame after connecting carries our `sid`."""

    queue_remaining: int | None = None
    sid: str | None = None


@dataclass(frozen=True)
class ExecutionStart(Event):
    """`execution_start`: the prompt left the queue and started."""


@dataclass(frozen=True)
class ExecutionCached(Event):
    """`execution_cached`: nodes whose outputs were reused."""

    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Executing(Event):
    """`executing`: a node started; `node is None` is the classic "prompt finished" marker."""

    node: str | None = None

    @property
    def terminal(self) -> bool:
        """True when this frame ends the prompt."""
        return self.node is None


@dataclass(frozen=True)
class ProgressEvent(Event):
    """`progress`: sampler steps done out of the total."""

    value: int = 0
    max: int = 0
    node: str | None = None


@dataclass(frozen=True)
class Executed(Event):
    """`executed`: an output node finished; `images` as ComfyUI lists them, `output` whole.

    `output` is the node's UI output exactly as `/history` lists it under `outputs`
    (images, gifs, audio, the `animated` flags), so the files can be read from it.
    """

    node: str | None = None
    images: tuple[dict[str, Any], ...] = ()
    output: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ExecutionSuccess(Event):
    """`execution_success`: every node ran."""

    @property
    def terminal(self) -> bool:
        """True when this frame ends the prompt."""
        return True


@dataclass(frozen=True)
class ExecutionError(Event):
    """`execution_error`: a node raised. The traceback is deliberately not kept."""

    node_id: str | None = None
    node_type: str | None = None
    exception_type: str | None = None
    exception_message: str = ""

    @property
    def terminal(self) -> bool:
        """True when this frame ends the prompt."""
        return True


@dataclass(frozen=True)
class ExecutionInterrupted(Event):
    """`execution_interrupted`: stopped by /interrupt (ours or someone else's)."""

    node_id: str | None = None
    node_type: str | None = None

    @property
    def terminal(self) -> bool:
        """True when this frame ends the prompt."""
        return True


@dataclass(frozen=True)
class OtherEvent(Event):
    """Any other frame type (progress_state, feature_flags, custom nodes' messages)."""

    type: str = ""


@dataclass(frozen=True)
class Reconnected(Event):
    """Not a ComfyUI frame: the hub tells followers the socket was re-established.

    Frames sent while it was down are gone (ComfyUI does not replay them), so a
    follower should poll `/history` right away.
    """


@dataclass(frozen=True)
class PreviewImage(Event):
    """A live preview frame (binary type 1 or 4); `prompt_id` None until the hub attributes it."""

    data: bytes = field(default=b"", repr=False)
    content_type: str = "image/jpeg"
    node: str | None = None


#: Binary event types (ComfyUI's `protocol.BinaryEventTypes`).
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
#: The format word of a type-1 frame.
_FORMATS = {1: "image/jpeg", 2: "image/png"}
#: Magic bytes of the two formats: a frame whose bytes are neither is not a picture.
_MAGIC = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n"}


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse_frame(frame: str | bytes) -> Event | None:
    """Parse one WebSocket frame; None for anything malformed or of no interest."""
    if isinstance(frame, bytes | bytearray | memoryview):
        return parse_binary(bytes(frame))
    try:
        message = json.loads(frame)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    data = message.get("data")
    return parse_message(message["type"], data if isinstance(data, dict) else {})


def parse_binary(frame: bytes) -> PreviewImage | None:
    """A binary frame → a `PreviewImage`; None for other types, truncated frames, non-pictures."""
    if len(frame) < 8:
        return None
    kind, word = struct.unpack_from(">II", frame)
    prompt_id: str | None = None
    node: str | None = None
    if kind == PREVIEW_IMAGE:
        content_type = _FORMATS.get(word)
        image = frame[8:]
    elif kind == PREVIEW_IMAGE_WITH_METADATA:
        if word > len(frame) - 8:
            return None
        try:
            meta = json.loads(frame[8 : 8 + word])
        except ValueError:
            return None
        if not isinstance(meta, dict):
            return None
        prompt_id = _str_or_none(meta.get("prompt_id"))
        node = _str_or_none(meta.get("display_node_id") or meta.get("node_id"))
        image = frame[8 + word :]
        content_type = meta.get("image_type") if meta.get("image_type") in _MAGIC else _sniff(image)
    else:
        return None
    if content_type is None or not image.startswith(_MAGIC[content_type]):
        return None
    return PreviewImage(prompt_id, data=image, content_type=content_type, node=node)


def _sniff(image: bytes) -> str | None:
    return next((kind for kind, magic in _MAGIC.items() if image.startswith(magic)), None)


def parse_message(kind: str, data: dict[str, Any]) -> Event:
    """Turn a `(type, data)` pair into an event (also used for history's `status.messages`)."""
    prompt_id = _str_or_none(data.get("prompt_id"))
    if kind == "status":
        exec_info = (data.get("status") or {}).get("exec_info") or {}
        remaining = exec_info.get("queue_remaining")
        return StatusEvent(
            prompt_id=None,
            queue_remaining=remaining if isinstance(remaining, int) else None,
            sid=_str_or_none(data.get("sid")),
        )
    if kind == "execution_start":
        return ExecutionStart(prompt_id)
    if kind == "execution_cached":
        return ExecutionCached(prompt_id, nodes=tuple(str(n) for n in data.get("nodes") or ()))
    if kind == "executing":
        return Executing(prompt_id, node=_str_or_none(data.get("node")))
    if kind == "progress":
        return ProgressEvent(
            prompt_id,
            value=_int(data.get("value")),
            max=_int(data.get("max")),
            node=_str_or_none(data.get("node")),
        )
    if kind == "executed":
        output = data.get("output") or {}
        images = output.get("images") if isinstance(output, dict) else None
        return Executed(
            prompt_id,
            node=_str_or_none(data.get("node")),
            images=tuple(i for i in images or () if isinstance(i, dict)),
            output=output if isinstance(output, dict) else {},
        )
    if kind == "execution_success":
        return ExecutionSuccess(prompt_id)
    if kind == "execution_error":
        return ExecutionError(
            prompt_id,
            node_id=_str_or_none(data.get("node_id")),
            node_type=_str_or_none(data.get("node_type")),
            exception_type=_str_or_none(data.get("exception_type")),
            exception_message=str(data.get("exception_message") or ""),
        )
    if kind == "execution_interrupted":
        return ExecutionInterrupted(
            prompt_id,
            node_id=_str_or_none(data.get("node_id")),
            node_type=_str_or_none(data.get("node_type")),
        )
    return OtherEvent(prompt_id, type=kind)
