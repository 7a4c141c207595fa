"""The result of a multi-image job as ONE 2×2 grid, with U1–U4 / V1–V4, and the single-image buttons.

A job with several images is shown as one picture (Midjourney's grid): the
stored originals are read (checked against their recorded sha256), tiled with
Pillow in a worker thread, and the grid is downscaled until it fits the
channel's upload limit. The originals stay in storage; U<n> and V<n> name them
by index.

Buttons carry their whole state in the custom id,
`ig:<action>:<index>:<namespace>/<name>` (`up` upscale, `vs`/`vv` vary subtle /
strong, `rx` remix), so they work after a restart like `views.JobButton`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import re
from dataclasses import replace

from PIL import Image

from comfykube_bot.images import ImageSource, reencode_preview
from comfykube_bot.jobs import JobInfo
from comfykube_bot.render import MAX_CUSTOM_ID, ButtonSpec, FileSpec

log = logging.getLogger(__name__)

GRID_ACTIONS = ("up", "vs", "vv", "rx")
GRID_ID_PATTERN = (
    r"ig:(?P<action>up|vs|vv|rx):(?P<index>[0-7]):(?P<namespace>[a-z0-9-]{1,63})/(?P<name>[a-z0-9.-]{1,253})"
)
_GRID_ID = re.compile(GRID_ID_PATTERN)
#: JPEG quality of the grid.
GRID_QUALITY = 90
#: Images shown in a grid (2×2).
GRID_CELLS = 4


def grid_custom_id(action: str, index: int, namespace: str, name: str) -> str | None:
    """`ig:<action>:<index>:<ns>/<name>`, or None when it would not fit Discord's 100 characters."""
    if action not in GRID_ACTIONS:
        raise ValueError(f"unknown grid action {action!r}")
    value = f"ig:{action}:{index}:{namespace}/{name}"
    return value if len(value) <= MAX_CUSTOM_ID and _GRID_ID.fullmatch(value) else None


def compose_grid(pictures: list[bytes], budget: int) -> bytes:
    """Up to four pictures tiled 2×2 (cells of the first picture's size) as a JPEG under `budget` bytes.

    Blocking (Pillow): call it through `asyncio.to_thread`.
    """
    frames: list[Image.Image] = []
    for data in pictures[:GRID_CELLS]:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            frames.append(img.convert("RGB"))
    if not frames:
        raise ValueError("no pictures to compose")
    cell_w, cell_h = frames[0].size
    grid = Image.new("RGB", (cell_w * 2, cell_h * 2), (0, 0, 0))
    for index, frame in enumerate(frames):
        if frame.size != (cell_w, cell_h):
            frame = frame.resize((cell_w, cell_h), Image.Resampling.LANCZOS)
        grid.paste(frame, ((index % 2) * cell_w, (index // 2) * cell_h))
    # JPEG: a 1024² grid encodes in a few ms where PNG takes ~1 s for a detailed picture, and is a
    # fraction of the size; the grid is a preview (the originals stay in storage, U<n> uses them).
    out = io.BytesIO()
    grid.save(out, "JPEG", quality=GRID_QUALITY)
    if out.tell() <= budget:
        return out.getvalue()
    smaller = reencode_preview(out.getvalue(), budget)
    if smaller is None:
        raise ValueError(f"a grid under {budget} bytes is not possible")
    return smaller


async def grid_file(job: JobInfo, source: ImageSource, limit: int) -> tuple[FileSpec | None, str | None]:
    """The grid attachment of a finished job (None with a note when its images cannot be read)."""
    wanted = job.status.images[:GRID_CELLS]
    # The four reads at once: each is a round trip to the store.
    results = await asyncio.gather(*(source.fetch(image.key) for image in wanted), return_exceptions=True)
    pictures: list[bytes] = []
    for image, data in zip(wanted, results, strict=True):
        if isinstance(data, BaseException):
            if not isinstance(data, OSError | ValueError):
                raise data
            log.warning("[%s] could not read image %s: %s", job.key, image.key, data)
            return None, "The images could not be read for the grid; use the link."
        if hashlib.sha256(data).hexdigest() != image.sha256:
            log.warning("[%s] image %s does not match its recorded sha256; no grid", job.key, image.key)
            return None, "An image did not match its checksum; use the link."
        pictures.append(data)
    try:
        grid = await asyncio.to_thread(compose_grid, pictures, limit)
    except (OSError, ValueError) as exc:
        log.warning("[%s] composing the grid failed: %s", job.key, exc)
        return None, "The grid could not be composed; use the link."
    note = None
    if len(job.status.images) > GRID_CELLS:
        note = f"The grid shows the first {GRID_CELLS} of {len(job.status.images)} images."
    return FileSpec(f"{job.name}-grid.jpg", grid, spoiler=job.spoiler), note


def derive_buttons(job: JobInfo) -> list[ButtonSpec]:
    """U1–U4 (row 0) and V1–V4 + Remix (row 1) for a grid; Upscale, Vary (Subtle/Strong) for one image; Remix."""
    ns, name = job.namespace, job.name
    count = min(len(job.status.images), GRID_CELLS)
    out: list[ButtonSpec] = []

    def add(action: str, index: int, label: str, style: str, row: int, emoji: str | None = None) -> None:
        cid = grid_custom_id(action, index, ns, name)
        if cid:
            out.append(ButtonSpec(label, style, custom_id=cid, emoji=emoji, row=row))

    if count > 1:
        for i in range(count):
            add("up", i, f"U{i + 1}", "secondary", 0)
        for i in range(count):
            add("vv", i, f"V{i + 1}", "secondary", 1)
        add("rx", 0, "Remix", "secondary", 1, "🖌️")
    elif count == 1:
        add("up", 0, "Upscale", "secondary", 0, "⬆️")
        add("vs", 0, "Vary (Subtle)", "secondary", 0)
        add("vv", 0, "Vary (Strong)", "secondary", 0)
        add("rx", 0, "Remix", "secondary", 0, "🖌️")
    return out


def with_derive_buttons(buttons: tuple[ButtonSpec, ...], job: JobInfo) -> tuple[ButtonSpec, ...]:
    """The job's own buttons on the first row, the derive buttons on the rows below."""
    derived = derive_buttons(job)
    if not derived:
        return buttons
    return (*(replace(b, row=0) for b in buttons), *(replace(b, row=(b.row or 0) + 1) for b in derived))


__all__ = [
    "GRID_ID_PATTERN",
    "compose_grid",
    "derive_buttons",
    "grid_custom_id",
    "grid_file",
    "with_derive_buttons",
]
