"""A running job's live preview: the latest ComfyUI preview frame, kept in the bucket.

ComfyUI sends a preview frame per sampler step (tens per second on a fast GPU).
Writing each to the API server would put megabytes per job into etcd; writing
each to the bucket would still be a PUT per step. So per job:

- frames are only *kept* as they arrive (the newest replaces the older, nothing
  is decoded on the event loop);
- at most once per `interval` (PREVIEW_INTERVAL_SECONDS) the newest one is shrunk
  to a JPEG of at most `MAX_SIDE` px (Pillow, in a worker thread) and stored at
  `ns/name/uid/preview.jpg`, overwriting the previous one;
- status learns the key once (`status.preview`, via `on_first`), never per frame;
- when the job ends the object is deleted (`close(delete=True)`); a job deleted
  while it runs has it removed by `teardown.py`.

Previews are best effort: a frame Pillow cannot read, or a bucket that refuses the
write, is logged and the render goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from comfykube import metrics, tempfiles
from comfykube.clock import Clock, now_rfc3339
from comfykube.comfyui.events import PreviewImage
from comfykube.errors import JobError
from comfykube.storage import ObjectStore
from comfykube.storage.thumbnails import small_jpeg
from comfykube.types import LivePreview

log = logging.getLogger(__name__)

#: Longest side of a stored preview: enough for a chat thumbnail, a few KB per write.
MAX_SIDE = 256
#: Seconds the deletion at the end may take before it is left to the bucket's lifecycle.
DELETE_TIMEOUT = 10.0


class PreviewPublisher:
    """Keeps one job's latest preview in the bucket; see the module docstring."""

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        *,
        interval: float,
        clock: Clock,
        on_first: Callable[[LivePreview], None] | None = None,
        metadata: dict[str, str] | None = None,
        tmp_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.interval = interval
        self.clock = clock
        self.on_first = on_first
        self.metadata = metadata or {}
        self.tmp_dir = tmp_dir
        #: Frames offered and previews stored (tests and the benchmark read them).
        self.frames = 0
        self.stored = 0
        self._latest: PreviewImage | None = None
        self._last_store = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def offer(self, frame: PreviewImage) -> None:
        """Keep `frame` as the newest; a store is scheduled if none is on its way. Returns at once."""
        if self._closed:
            return
        self.frames += 1
        metrics.PREVIEW_FRAMES.inc()
        self._latest = frame
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"preview-{self.key}")

    async def _run(self) -> None:
        while self._latest is not None and not self._closed:
            wait = self._last_store + self.interval - self.clock.now()
            if wait > 0:
                await self.clock.sleep(wait)
            frame, self._latest = self._latest, None
            if frame is None or self._closed:
                return
            try:
                await self._publish(frame)
            finally:
                # Counted from the end of a store: two writes are never closer than the interval,
                # however long shrinking and the bucket took.
                self._last_store = self.clock.now()

    async def _publish(self, frame: PreviewImage) -> None:
        try:
            data = await asyncio.to_thread(small_jpeg, frame.data, MAX_SIDE)
        except Exception as exc:  # Pillow raises many kinds for bytes it cannot read
            log.info("preview frame for %s not usable: %s", self.key, exc)
            return
        with tempfiles.job_dir(self.tmp_dir) as tmp:  # named by pid: swept at start-up if we are killed
            path = Path(tmp) / "preview.jpg"
            path.write_bytes(data)
            try:
                await self.store.put_verified(
                    self.key, path, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                    content_type="image/jpeg", metadata=self.metadata,
                )
            except (JobError, OSError, ValueError) as exc:
                metrics.PREVIEWS_STORED.labels("failed").inc()
                log.info("could not store the preview %s: %s", self.key, exc)
                return
        metrics.PREVIEWS_STORED.labels("ok").inc()
        self.stored += 1
        if self.stored == 1 and self.on_first is not None:
            self.on_first(
                LivePreview(key=self.key, interval_seconds=self.interval, started_at=now_rfc3339(self.clock))
            )

    async def close(self, *, delete: bool) -> None:
        """Stop storing; with `delete`, remove the object if one was stored (best effort, bounded)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if delete and self.stored:
            try:
                await asyncio.wait_for(self.store.delete(self.key), timeout=DELETE_TIMEOUT)
            except Exception as exc:  # the job's result matters more than a leftover preview
                log.info("could not delete the preview %s: %s", self.key, exc)


__all__ = ["MAX_SIDE", "PreviewPublisher"]
