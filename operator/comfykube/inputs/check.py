"""Is this file a picture we hand to ComfyUI? Magic bytes, a full decode, a pixel cap.

ComfyUI's `/upload/image` stores anything (a text file too, capture 86) and its
LoadImage fails only once the prompt runs, after GPU time is queued. So each
input is checked here first: the magic bytes say PNG, JPEG, WebP, GIF or BMP;
Pillow decodes every pixel (a truncated or corrupt file fails now, not in
ComfyUI); the pixel count stays under a cap, checked from the header before
decoding so a decompression bomb never expands in memory. The decode runs in a
thread: it is CPU work and must not block the event loop.
"""

from __future__ import annotations

import asyncio
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from comfykube.comfyui.media import PngWindow, png_image_data_end
from comfykube.errors import DownloadFailed, InputImageFailed

#: (magic prefix, content type, extension, Pillow format)
_MAGIC: tuple[tuple[bytes, str, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "png", "PNG"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg", "JPEG"),
    (b"GIF87a", "image/gif", "gif", "GIF"),
    (b"GIF89a", "image/gif", "gif", "GIF"),
    (b"BM", "image/bmp", "bmp", "BMP"),
)


#: Content types of the pictures accepted as inputs (what `sniff_input` recognises), for
#: checks that can only see a declared type before the bytes (a Discord attachment).
ACCEPTED_CONTENT_TYPES = frozenset({content_type for _, content_type, _, _ in _MAGIC} | {"image/webp"})


@dataclass(frozen=True)
class ImageKind:
    """What the first bytes say a file is."""

    content_type: str
    ext: str
    pillow_format: str


@dataclass(frozen=True)
class CheckedImage:
    """The facts of one input image that passed every check."""

    kind: ImageKind
    width: int
    height: int


def sniff_input(head: bytes) -> ImageKind | None:
    """The image kind from the first 16 bytes, or None when it is not a picture we accept."""
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ImageKind("image/webp", "webp", "WEBP")
    for magic, content_type, ext, fmt in _MAGIC:
        if head.startswith(magic):
            return ImageKind(content_type, ext, fmt)
    return None


def describe_head(head: bytes) -> str:
    """What a refused file starts with, for the message (`an HTML page`, `bytes 7b22…`)."""
    text = head.lstrip()[:16].lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        return "it starts like an HTML/XML page"
    if text.startswith((b"{", b"[")):
        return "it starts like JSON"
    return f"it starts with bytes {head[:8].hex() or '(none)'}"


def check_image_file(path: Path, head: bytes, *, max_pixels: int, what: str) -> CheckedImage:
    """Sniff, check the pixel count from the header, then decode every pixel (blocking: call in a thread)."""
    kind = sniff_input(head)
    if kind is None:
        raise InputImageFailed(f"{what} is not a PNG, JPEG, WebP, GIF or BMP image ({describe_head(head)})")
    try:
        with warnings.catch_warnings():
            # Our own cap below is the check; Pillow's warning would only go to the log.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open(path, "rb") as handle:
                source: Any = handle
                if kind.pillow_format == "PNG":
                    # Pillow keeps text and private chunks after the pixels in memory: it sees
                    # the file up to its last image data only; the rest is CRC-checked in blocks.
                    source = PngWindow(handle, png_image_data_end(handle, path.stat().st_size, what, what=what))
                    handle.seek(0)
                img = Image.open(source, formats=[kind.pillow_format])
                width, height = img.size
                if width <= 0 or height <= 0:
                    raise InputImageFailed(f"{what} has no pixels ({width}x{height})")
                if width * height > max_pixels:
                    raise InputImageFailed(
                        f"{what} is {width}x{height} = {width * height} pixels, more than the "
                        f"{max_pixels} allowed (INPUT_IMAGE_MAX_PIXELS)"
                    )
                img.load()  # every pixel: a cut-off or corrupt file fails here
                img.close()
    except InputImageFailed:
        raise
    except DownloadFailed as exc:  # the PNG chunk walk's message, said of this input
        raise InputImageFailed(exc.message) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputImageFailed(f"{what} does not decode as {kind.pillow_format}: {exc}") from None
    return CheckedImage(kind=kind, width=width, height=height)


async def check_image(path: Path, head: bytes, *, max_pixels: int, what: str) -> CheckedImage:
    """`check_image_file` in a worker thread."""
    return await asyncio.to_thread(check_image_file, path, head, max_pixels=max_pixels, what=what)
