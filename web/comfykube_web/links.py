"""Presigned image URLs, minted when a page or an update is served.

URLs in a job's status may have expired long ago, so the gallery signs its own through
the storage module. A URL is reused while more than half of its lifetime is left: the
same thumbnail keeps the same URL, so browsers cache it, and a page of 48 cards costs
48 dictionary look-ups instead of 48 signatures. URLs are never logged.
"""

from __future__ import annotations

import time
import urllib.parse
from collections import OrderedDict

from comfykube.errors import JobError
from comfykube.storage import ObjectStore, check_key
from comfykube.types import StoredImage

#: Signed URLs kept for reuse (LRU).
CACHE_SIZE = 20_000
#: A key that could not be signed is not tried again for this long (a dead S3 is not hammered per card).
FAILURE_SECONDS = 30.0


class Links:
    """Signs object keys, with a small reuse cache."""

    def __init__(self, store: ObjectStore, expiry_seconds: int) -> None:
        self.store = store
        self.expiry = expiry_seconds
        #: How long a URL is handed out again (and so how long anything built from one may be kept).
        self.reuse_seconds = expiry_seconds / 2
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def url(self, key: str | None) -> str | None:
        """A presigned GET URL for `key`; None for no key, a bad key or a store that cannot sign."""
        if not key:
            return None
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            self._cache.move_to_end(key)
            return cached[0] or None
        try:
            check_key(key)
            url, _ = await self.store.presign(key, self.expiry)
        except (JobError, ValueError, OSError):
            url = ""
        if not url.startswith(("https://", "http://")):
            # Unsignable, or a local store's file:// URL (no use to a browser): remembered briefly.
            self._cache[key] = ("", now + FAILURE_SECONDS)
            return None
        self._cache[key] = (url, now + self.reuse_seconds)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return url

    async def thumbnail(self, image: StoredImage | None) -> str | None:
        """The thumbnail's URL; the original's when a picture has no thumbnail (older jobs); None for a video."""
        if image is None:
            return None
        if image.thumbnail_key:
            return await self.url(image.thumbnail_key)
        return await self.url(image.key) if image.content_type.startswith("image/") else None


def origin_of(url: str | None) -> str | None:
    """`https://host:port` of a URL (for the Content-Security-Policy), or None."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


__all__ = ["Links", "origin_of"]
