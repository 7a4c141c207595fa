"""Result images: read them from the object store and make them fit Discord's upload limit.

The bot reads the stored object itself (S3 GET with the bot's credentials, or
the local directory) rather than following the presigned URL: that URL may be
signed for a public host the pod cannot reach, and it may have expired. Every
read is checked against the sha256 the operator recorded in status, so the
attachment is byte for byte the stored image.

An image larger than the channel's limit is re-encoded with Pillow (JPEG,
shrinking until it fits) as a preview; the full-size original stays behind the
link button. Pillow work runs in a thread: a 2048² PNG takes tens of
milliseconds to decode, which the event loop must not spend.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import urllib3
from minio import Minio
from minio.error import S3Error
from PIL import Image

from comfykube.settings import Settings
from comfykube.storage import check_key
from comfykube_bot.jobs import JobInfo
from comfykube_bot.render import FileSpec

log = logging.getLogger(__name__)

#: discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES: the limit when nothing better is known.
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


class ImageSource(Protocol):
    """Something that returns the bytes of a stored object."""

    async def fetch(self, key: str) -> bytes:
        """The object's bytes; raises on any failure."""
        ...


class StoreReader:
    """Reads objects from the store configured by `comfykube.settings.Settings` (MinIO/S3 or a directory)."""

    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.bucket = settings.minio_bucket
        self._client: Minio | None = None
        if settings.minio_endpoint:
            endpoint = settings.minio_endpoint.strip()
            secure = settings.minio_secure
            if "://" in endpoint:
                parts = urllib.parse.urlsplit(endpoint)
                endpoint, secure = parts.netloc, parts.scheme == "https"
            self._client = Minio(
                endpoint,
                access_key=settings.minio_access_key,
                secret_key=settings.minio_secret_key,
                secure=secure,
                region=settings.minio_region,
                http_client=urllib3.PoolManager(
                    timeout=urllib3.Timeout(connect=5.0, read=timeout),
                    retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
                ),
            )

    async def fetch(self, key: str) -> bytes:
        """GET the object (in a worker thread: the minio SDK blocks)."""
        check_key(key)
        if self._client is None:
            path = Path(self.settings.output_dir) / key
            return await asyncio.to_thread(path.read_bytes)
        client = self._client

        def run() -> bytes:
            response = client.get_object(self.bucket, key)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        try:
            return await asyncio.to_thread(run)
        except S3Error as exc:
            raise OSError(f"could not read {key} from bucket {self.bucket!r}: {exc.code}") from None


def reencode_preview(data: bytes, budget: int) -> bytes | None:
    """A JPEG of the image that is at most `budget` bytes, or None if even a small one is not."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        rgb = img.convert("RGB")
    quality = 88
    scale = 1.0
    for _ in range(8):
        frame = rgb
        if scale < 1.0:
            size = (max(16, int(rgb.width * scale)), max(16, int(rgb.height * scale)))
            frame = rgb.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        frame.save(out, "JPEG", quality=quality, optimize=True)
        if out.tell() <= budget:
            return out.getvalue()
        # Shrink by the area ratio needed, a bit more to converge in few rounds.
        scale *= max(0.3, min(0.9, (budget / out.tell()) ** 0.5 * 0.95))
        quality = max(60, quality - 8)
    return None


@dataclass
class PreparedImages:
    """Files to attach, plus a note for the embed when something was changed or left out."""

    files: tuple[FileSpec, ...]
    note: str | None


async def prepare_images(job: JobInfo, source: ImageSource, limit: int) -> PreparedImages:
    """Fetch every stored image of the job and fit each one under `limit` bytes."""
    images = job.status.images
    files: list[FileSpec] = []
    previews = 0
    missing = 0
    for index, image in enumerate(images[:10]):  # Discord: at most 10 attachments per message
        key = image.key
        try:
            data = await source.fetch(key)
        except (OSError, ValueError) as exc:
            log.warning("[%s] could not read image %s: %s", job.key, key, exc)
            missing += 1
            continue
        if hashlib.sha256(data).hexdigest() != image.sha256:
            log.warning("[%s] image %s does not match its recorded sha256; not attaching it", job.key, key)
            missing += 1
            continue
        ext = _EXT.get(image.content_type, Path(key).suffix.lstrip(".") or "png")
        name = f"{job.name}-{index}.{ext}"
        if len(data) <= limit:
            files.append(FileSpec(name, data, spoiler=job.spoiler))
            continue
        preview = await asyncio.to_thread(reencode_preview, data, limit)
        if preview is None:
            missing += 1
            continue
        previews += 1
        files.append(FileSpec(f"{job.name}-{index}-preview.jpg", preview, spoiler=job.spoiler))
    notes = []
    if previews:
        notes.append(
            f"{'A preview is' if previews == 1 else f'{previews} previews are'} shown: the original is larger "
            f"than this channel's {limit / 1024 / 1024:.0f} MB upload limit. Full size behind the link."
        )
    if missing:
        notes.append(f"{missing} image(s) could not be attached; use the link.")
    return PreparedImages(tuple(files), " ".join(notes) or None)


__all__ = ["DEFAULT_UPLOAD_LIMIT", "ImageSource", "PreparedImages", "StoreReader", "prepare_images", "reencode_preview"]
