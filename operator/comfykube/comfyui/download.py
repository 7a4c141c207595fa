"""Fetch one output file from `/view`, streamed to disk and checked. Nothing else.

Checks, each refusing with DownloadFailed naming the file: status 200, not an
HTML page, a non-empty body whose length matches Content-Length (a cut-off
stream is caught here), then the checks of its kind (`media.py`: magic bytes,
a full Pillow decode of pictures and animations, container structure of
video and audio) and, for a still picture, the expected pixel size. Memory
stays bounded (one chunk) whatever the size; the SHA-256 is computed while
streaming; the decode runs in a thread. A failed download leaves no file behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from comfykube.comfyui.media import HEAD_BYTES, check_media
from comfykube.comfyui.models import DownloadedImage, OutputImage
from comfykube.comfyui.transport import describe_transport_error, status_text, unavailable
from comfykube.errors import ComfyUIUnavailable, DownloadFailed
from comfykube.types import OutputKind

#: Refuse anything larger: a 2048x2048 PNG is ~12 MB; this leaves room for odd workflows.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
CHUNK = 64 * 1024

def view_params(image: OutputImage) -> dict[str, str]:
    """The `/view` query; httpx encodes every value (spaces, `&`, `#`, unicode, subfolders)."""
    return {"filename": image.filename, "subfolder": image.subfolder, "type": image.type}


async def download_image(
    http: httpx.AsyncClient,
    base_url: str,
    image: OutputImage,
    dest_dir: str | os.PathLike[str],
    *,
    expected_size: tuple[int, int] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    http_timeout: float | None = None,
    preview_side: int | None = None,
) -> DownloadedImage:
    """Stream `image` into a new file in `dest_dir` and check it; see the module docstring.

    With `preview_side`, a picture comes with its first frame reduced to that size
    (`DownloadedImage.preview`, for the thumbnail), made from the check's decode.

    Raises DownloadFailed for a bad answer or bad bytes, ComfyUIUnavailable when
    ComfyUI cannot be reached at all (retry later).
    """
    name = image.describe()
    url = f"{base_url}/view"
    # Local-disk calls below are short and bounded (one chunk); no thread hop needed.
    os.makedirs(dest_dir, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix="comfy-", suffix=".part", dir=dest_dir)
    temp = Path(temp_name)
    ok = False
    try:
        digest = hashlib.sha256()
        received = 0
        head = b""
        declared: int | None = None
        kwargs: dict[str, Any] = {"timeout": http_timeout} if http_timeout is not None else {}
        with os.fdopen(fd, "wb") as out:
            try:
                async with http.stream(
                    "GET",
                    url,
                    params=view_params(image),
                    # Raw bytes on the wire must be the file itself: Content-Length and magic checks.
                    headers={"Accept-Encoding": "identity"},
                    **kwargs,
                ) as response:
                    if response.status_code != 200:
                        if response.status_code in (502, 503, 504):
                            raise ComfyUIUnavailable(f"GET {url} for {name!r}: answered {status_text(response)}")
                        raise DownloadFailed(f"image {name!r}: /view answered {status_text(response)}")
                    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    if content_type in ("text/html", "application/xhtml+xml"):
                        raise DownloadFailed(
                            f"image {name!r}: /view answered an HTML page ({content_type}), not an image"
                        )
                    declared = _content_length(response, name)
                    if declared is not None and declared > max_bytes:
                        raise DownloadFailed(f"image {name!r} is {declared} bytes, more than {max_bytes}")
                    async for chunk in response.aiter_raw(CHUNK):
                        if not chunk:
                            continue
                        if len(head) < HEAD_BYTES:
                            head += chunk[: HEAD_BYTES - len(head)]
                        received += len(chunk)
                        if received > max_bytes:
                            raise DownloadFailed(f"image {name!r} is larger than {max_bytes} bytes")
                        digest.update(chunk)
                        out.write(chunk)
            except httpx.HTTPError as exc:
                if received == 0 and isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    raise unavailable("GET", url, describe_transport_error(exc)) from None
                # The connection broke mid-stream (the backend died or a proxy reset it): the
                # file is still on ComfyUI's disk, so a later attempt may fetch it whole, or the
                # job moves to another backend. Nothing unchecked is ever stored either way.
                raise DownloadFailed(
                    f"image {name!r} was cut off after {received} bytes ({describe_transport_error(exc)})",
                    retryable=True,
                ) from None
        if received == 0:
            raise DownloadFailed(f"image {name!r}: /view answered an empty body")
        if declared is not None and received != declared:
            raise DownloadFailed(f"image {name!r} was cut off: got {received} of {declared} bytes (Content-Length)")
        media = await asyncio.to_thread(check_media, temp, head, name, preview_side=preview_side)
        if media.kind is OutputKind.IMAGE and image.animated:
            # An animation of identical frames is stored as one frame by the encoder; ComfyUI's
            # flag still says what the node made.
            media = replace(media, kind=OutputKind.ANIMATION, frames=media.frames or 1)
        width, height = media.width, media.height
        if (
            expected_size is not None
            and media.kind is OutputKind.IMAGE
            and (width, height) != tuple(expected_size)
        ):
            raise DownloadFailed(f"image {name!r} is {width}x{height}, expected {expected_size[0]}x{expected_size[1]}")
        final = temp.with_suffix("." + media.ext)
        os.replace(temp, final)
        ok = True
        return DownloadedImage(
            path=final,
            bytes=received,
            sha256=digest.hexdigest(),
            content_type=media.content_type,
            width=width,
            height=height,
            source=image,
            kind=media.kind,
            frames=media.frames,
            preview=media.preview,
        )
    finally:
        if not ok:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


def _content_length(response: httpx.Response, name: str) -> int | None:
    raw = response.headers.get("content-length")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise DownloadFailed(f"image {name!r}: /view sent a bad Content-Length {raw!r}") from None
    if value == 0:
        raise DownloadFailed(f"image {name!r}: /view answered an empty body (Content-Length: 0)")
    return value
