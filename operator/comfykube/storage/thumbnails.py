"""Thumbnails: a small JPEG (WebP where there is transparency) beside each stored image, made once.

The web gallery shows these instead of resizing originals per request. The key is the
original's with `.thumb.jpg` (or `.thumb.webp`) in place of its extension
(`ns/job/uid/0.png` → `ns/job/uid/0.thumb.jpg`), so it lives under the job's prefix and
goes with `output.deleteWithJob` like the image itself; the key stored in status is the
one to use (older jobs have `.thumb.webp` for every picture).

JPEG, not WebP, for opaque pictures: it encodes a 384 px render in ~1.4 ms where WebP
takes ~15 (noise-like detail, Pillow 13 with libjpeg-turbo, this machine) for files of
about the same size, and the thumbnail is made on every job's critical path.

Making a thumbnail is best effort: an image Pillow cannot read (a video, an odd format)
or a failed upload leaves the job's result alone and only means "no thumbnail" (the
gallery then shows the original). Pillow runs in a worker thread; nothing blocks the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from comfykube import tempfiles
from comfykube.errors import JobError
from comfykube.storage.base import ObjectStore

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

#: Longest side of a thumbnail in pixels (grid cards show ~256 px; 2x for dense screens).
MAX_SIDE = 384
#: JPEG quality of an opaque thumbnail: small files, good enough for a preview.
JPEG_QUALITY = 80
#: WebP quality of a thumbnail with transparency (JPEG has no alpha channel).
QUALITY = 78
#: WebP effort (0-6): 1 encodes a 384 px preview in ~70 % of the time of 2 and ~35 % of 4,
#: for about the same bytes on smooth renders (measured on 384 px previews, Pillow 13).
METHOD = 1
#: Images larger than this many pixels are not decoded for a thumbnail (decompression bombs).
MAX_SOURCE_PIXELS = 64_000_000
#: Content type of each thumbnail format, by its key's extension.
CONTENT_TYPES = {"jpg": "image/jpeg", "webp": "image/webp"}


def thumbnail_key(key: str, ext: str = "jpg") -> str:
    """`ns/job/uid/0.png` → `ns/job/uid/0.thumb.jpg` (`ext="webp"`: `0.thumb.webp`)."""
    head, sep, tail = key.rpartition("/")
    stem = tail.split(".", 1)[0] or tail
    return f"{head}{sep}{stem}.thumb.{ext}"


def thumbnail_ext(frame: Image.Image) -> str:
    """`webp` for a frame with an alpha channel (JPEG cannot keep it), else `jpg`."""
    return "webp" if frame.mode in ("RGBA", "LA", "PA") else "jpg"


@dataclass(frozen=True)
class RenderedThumbnail:
    """A thumbnail written to a local file, ready to store."""

    path: Path
    bytes: int
    sha256: str
    ext: str  # `jpg` or `webp`: the key's extension (`thumbnail_key(key, ext)`)

    @property
    def content_type(self) -> str:
        """`image/jpeg` or `image/webp`."""
        return CONTENT_TYPES[self.ext]


def render_thumbnail(
    source: Path, directory: Path, stem: str, max_side: int = MAX_SIDE, *, frame: Image.Image | None = None
) -> RenderedThumbnail:
    """Write a preview of `source` to `directory/<stem>.thumb.<ext>` (JPEG; WebP with transparency).

    `frame` is the first frame already reduced to `max_side` (`DownloadedImage.preview`:
    the download's check decoded the pixels once); without it the file is decoded here
    (a JPEG in draft mode, at the smallest scale that still covers `max_side`).
    Raises on unreadable input. Blocking (Pillow): call it in a thread.
    """
    if frame is None:
        frame = _decode_reduced(source, max_side)
    ext = thumbnail_ext(frame)
    out = io.BytesIO()
    if ext == "webp":
        frame.save(out, "WEBP", quality=QUALITY, method=METHOD)
    else:
        # JPEG takes L and RGB; anything else (P without transparency, CMYK, I) as RGB.
        frame.convert("RGB" if frame.mode not in ("L", "RGB") else frame.mode).save(out, "JPEG", quality=JPEG_QUALITY)
    data = out.getvalue()
    target = directory / f"{stem}.thumb.{ext}"
    target.write_bytes(data)  # hashed from memory: no read-back of the file just written
    return RenderedThumbnail(target, len(data), hashlib.sha256(data).hexdigest(), ext)


def _decode_reduced(source: Path, max_side: int) -> Image.Image:
    from PIL import Image

    from comfykube.comfyui.media import reduced_frame

    with Image.open(source) as img:
        if img.width * img.height > MAX_SOURCE_PIXELS:
            raise ValueError(f"{img.width}x{img.height} is too large to preview")
        img.seek(0)  # first frame of an animation
        # JPEG only: decode at 1/2, 1/4 or 1/8 scale where that still leaves max_side pixels.
        img.draft(img.mode, (max_side, max_side))
        return reduced_frame(img, max_side)


def small_jpeg(data: bytes, max_side: int, *, blur_radius: float = 0.0, quality: int = 70) -> bytes:
    """A JPEG of the picture in `data`, at most `max_side` px on its longest side, blurred if asked.

    For live previews (the operator's stored one, the bot's blurred one). Blocking (Pillow):
    call it in a thread. Raises on bytes Pillow cannot read and on decompression bombs.
    """
    from PIL import Image, ImageFilter

    with Image.open(io.BytesIO(data)) as img:
        if img.width * img.height > MAX_SOURCE_PIXELS:
            raise ValueError(f"a {img.width}x{img.height} picture is too large to preview")
        frame = img.convert("RGB")
    frame.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    if blur_radius > 0:
        frame = frame.filter(ImageFilter.GaussianBlur(blur_radius))
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=quality)
    return out.getvalue()


async def store_thumbnail(
    store: ObjectStore,
    source: Path,
    key: str,
    *,
    metadata: Mapping[str, str] | None = None,
    tmp_dir: Path | None = None,
    content_type: str = "image/png",
    after: Awaitable[object] | None = None,
    work_dir: Path | None = None,
    frame: Image.Image | None = None,
) -> str | None:
    """Make and store the thumbnail of the image at `source` (stored as `key`); its key, or None.

    Never raises for a bad image or a storage problem: the image itself is stored and
    verified already, a missing preview must not fail the job. Outputs that are not
    pictures (`content_type` not image/*: videos, sounds) get none. With `after` the
    preview is made at once but stored only once `after` is done (the original stored
    and verified: the caller runs both side by side and cancels this when that fails).
    The preview file is written in `work_dir` (the caller's temporary directory, which
    it removes) or else in a temporary directory of its own under `tmp_dir`. `frame` is
    the first frame already reduced (`DownloadedImage.preview`), saving a second decode.
    """
    if not content_type.startswith("image/"):
        return None
    if work_dir is not None:
        return await _make_and_store(store, source, key, work_dir, metadata, after, frame)
    with tempfiles.job_dir(tmp_dir) as tmp:  # named by pid: swept at start-up if we are killed
        return await _make_and_store(store, source, key, Path(tmp), metadata, after, frame)


async def _make_and_store(
    store: ObjectStore,
    source: Path,
    key: str,
    work_dir: Path,
    metadata: Mapping[str, str] | None,
    after: Awaitable[object] | None,
    frame: Image.Image | None,
) -> str | None:
    stem = key.rpartition("/")[2].split(".", 1)[0] or "image"
    rendered: RenderedThumbnail | None = None
    try:
        try:
            rendered = await asyncio.to_thread(render_thumbnail, source, work_dir, stem, frame=frame)
        except Exception as exc:  # Pillow raises many kinds for unreadable input
            log.info("no thumbnail for %s: %s", key, exc)
            return None
        if after is not None:
            await after
        thumb = thumbnail_key(key, rendered.ext)
        try:
            await store.put_verified(
                thumb, rendered.path, size=rendered.bytes, sha256=rendered.sha256,
                content_type=rendered.content_type, metadata=metadata,
            )
        except (JobError, OSError, ValueError) as exc:
            log.warning("could not store the thumbnail of %s: %s", key, exc)
            return None
    finally:
        if rendered is not None:
            rendered.path.unlink(missing_ok=True)
    return thumb


__all__ = [
    "CONTENT_TYPES", "MAX_SIDE", "RenderedThumbnail", "render_thumbnail", "small_jpeg", "store_thumbnail",
    "thumbnail_key",
]
