"""Plain data the ComfyUI client hands to its callers.

Immutable dataclasses, no I/O: the pipeline, the operator and the tests build
and compare them freely. Parsing ComfyUI's JSON into these lives in
`history.py` (HTTP answers) and `events.py` (WebSocket frames).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfykube.comfyui.events import PreviewImage
from comfykube.types import OutputKind

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class OutputImage:
    """One image a prompt produced, as `/history` lists it (enough to fetch it from `/view`)."""

    filename: str
    subfolder: str = ""
    type: str = "output"
    node_id: str = ""
    #: Which list of the node's output named it: `images`, `gifs` (VideoHelperSuite), `videos`, `audio`.
    listed_under: str = field(default="images", compare=False)
    #: ComfyUI's `animated` flag for this entry (SaveAnimatedWEBP/PNG, SaveVideo).
    animated: bool = field(default=False, compare=False)

    @property
    def is_output(self) -> bool:
        """True for saved outputs; `temp` images (PreviewImage) are not results."""
        return self.type == "output"

    def describe(self) -> str:
        """`sub/name.png` for messages (the way people find it in ComfyUI's output dir)."""
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename


@dataclass(frozen=True)
class UploadedImage:
    """What `/upload/image` answered: where ComfyUI stored the file (it may rename it)."""

    name: str
    subfolder: str = ""
    type: str = "input"

    @property
    def load_name(self) -> str:
        """The value for LoadImage's `image` input: `subfolder/name` (capture 87)."""
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name


@dataclass(frozen=True)
class HistoryEntry:
    """A finished prompt as `/history/{id}` reports it.

    ComfyUI writes the entry only when the prompt is done (success, error or
    interrupt); before that `/history/{id}` is `{}`.
    """

    prompt_id: str
    status_str: str
    completed: bool
    images: tuple[OutputImage, ...] = ()
    messages: tuple[tuple[str, dict[str, Any]], ...] = ()
    number: float | None = None

    def _message(self, event: str) -> dict[str, Any] | None:
        for name, data in reversed(self.messages):
            if name == event:
                return data
        return None

    @property
    def error(self) -> dict[str, Any] | None:
        """The `execution_error` payload, if the run failed in a node."""
        return self._message("execution_error")

    @property
    def interruption(self) -> dict[str, Any] | None:
        """The `execution_interrupted` payload, if the run was interrupted."""
        return self._message("execution_interrupted")

    @property
    def succeeded(self) -> bool:
        """True when ComfyUI says success (interrupt and failure both say `error`)."""
        return self.status_str == "success" and self.error is None and self.interruption is None

    @property
    def output_images(self) -> tuple[OutputImage, ...]:
        """Images worth keeping: `type == "output"` only (temp previews skipped)."""
        return tuple(image for image in self.images if image.is_output)


@dataclass(frozen=True)
class QueueItem:
    """One prompt in `/queue`: its ordering number and id."""

    number: float
    prompt_id: str


@dataclass(frozen=True)
class QueueSnapshot:
    """`/queue` at one moment; `pending` sorted by number (ComfyUI does not sort it)."""

    running: tuple[QueueItem, ...] = ()
    pending: tuple[QueueItem, ...] = ()

    @property
    def length(self) -> int:
        """Prompts running plus waiting."""
        return len(self.running) + len(self.pending)

    def is_running(self, prompt_id: str) -> bool:
        """True if the prompt is executing now."""
        return any(item.prompt_id == prompt_id for item in self.running)

    def position(self, prompt_id: str) -> int | None:
        """Prompts ahead of `prompt_id`: 0 while it runs, None if it is not in the queue."""
        if self.is_running(prompt_id):
            return 0
        for index, item in enumerate(self.pending):
            if item.prompt_id == prompt_id:
                return len(self.running) + index
        return None


@dataclass(frozen=True)
class Device:
    """A compute device from `/system_stats`."""

    name: str
    type: str
    vram_total: int | None = None
    vram_free: int | None = None


@dataclass(frozen=True)
class HealthReport:
    """What a successful health check learned about one ComfyUI."""

    url: str
    version: str | None
    devices: tuple[Device, ...] = ()
    queue_running: int = 0
    queue_pending: int = 0

    @property
    def queue_length(self) -> int:
        """Prompts running plus waiting."""
        return self.queue_running + self.queue_pending


class PromptPhase(enum.StrEnum):
    """Where a prompt is, as seen from `/history` + `/queue`."""

    UNKNOWN = "Unknown"
    PENDING = "Pending"
    RUNNING = "Running"
    DONE = "Done"


@dataclass(frozen=True)
class PromptState:
    """Answer of `lookup()`: used to attach to a prompt after a restart instead of resubmitting."""

    phase: PromptPhase
    position: int | None = None
    entry: HistoryEntry | None = None

    @classmethod
    def unknown(cls) -> PromptState:
        """ComfyUI has never heard of it (or forgot it)."""
        return cls(PromptPhase.UNKNOWN)

    @classmethod
    def pending(cls, position: int) -> PromptState:
        """Waiting with `position` prompts ahead."""
        return cls(PromptPhase.PENDING, position=position)

    @classmethod
    def running(cls) -> PromptState:
        """Executing now."""
        return cls(PromptPhase.RUNNING, position=0)

    @classmethod
    def done(cls, entry: HistoryEntry) -> PromptState:
        """Finished (successfully or not): see `entry`."""
        return cls(PromptPhase.DONE, entry=entry)


@dataclass(frozen=True)
class ProgressUpdate:
    """What `follow()` reports while a prompt waits or runs.

    `value`/`max` are the sampler steps from `progress` frames (0/0 before the
    first one); `queue_position` is the count of prompts ahead (0 while running,
    None when unknown).
    """

    value: int = 0
    max: int = 0
    queue_position: int | None = None
    running: bool = False


#: Called on every change; may be a plain function or a coroutine function.
ProgressCallback = Callable[[ProgressUpdate], Awaitable[None] | None]
#: Called with each live preview frame of the followed prompt; must return at once.
PreviewCallback = Callable[[PreviewImage], None]


@dataclass(frozen=True)
class DownloadedImage:
    """An output file (picture, animation, video, sound) fetched and checked; `path` is in `dest_dir`.

    The caller owns the file (uploads it, then deletes it).
    """

    path: Path
    bytes: int
    sha256: str
    content_type: str
    width: int | None
    height: int | None
    source: OutputImage = field(compare=False)
    kind: OutputKind = OutputKind.IMAGE
    frames: int | None = None
    #: The first frame reduced for a thumbnail, when the download was asked for one
    #: (`preview_side`): the pixels the check decoded, so the file is not decoded twice.
    preview: Image.Image | None = field(default=None, repr=False, compare=False)
