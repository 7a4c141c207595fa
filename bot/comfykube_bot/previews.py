"""Live previews in the job message: the operator's latest preview, small and blurred, while the job runs.

The operator keeps one small JPEG per running job in the bucket (`ns/name/uid/preview.jpg`,
overwritten at most once per its interval) and names it once in `status.preview`; see
docs/bot.md "Live previews". Per running job with a job message, this module:

- reads that object itself (the bot's `MINIO_*` credentials, like the result images)
  at most once per edit interval (or the operator's interval, if longer);
- skips it when it did not change; else blurs it (Pillow, in a thread) and hands the
  job message with it attached to the updater, which throttles and coalesces it with
  the progress edits (one edit per message per interval in all);
- stops when the job leaves Running; the final message replaces the attachment.

The key is made from the job's own identity, never taken from status: status is data,
and a key naming another job's image must not get that image posted here. A job whose
result would be withheld from the channel (a restricted model in a non-NSFW channel)
shows no preview either (`allowed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from dataclasses import replace as dc_replace

from comfykube.storage import preview_key
from comfykube.storage.thumbnails import small_jpeg
from comfykube.types import Phase
from comfykube_bot.images import ImageSource
from comfykube_bot.jobs import JobInfo
from comfykube_bot.metrics import BotMetrics
from comfykube_bot.render import FileSpec, render_progress
from comfykube_bot.updater import MessageUpdater, Outcome, Target

log = logging.getLogger(__name__)

PREVIEW_FILENAME = "preview.jpg"
#: The shown preview: at most this many pixels on a side, blurred so it reads as "not the result".
MAX_SIDE = 192
BLUR_RADIUS = 3


def blurred(data: bytes) -> bytes:
    """The small, blurred JPEG shown in the message. Blocking (Pillow): run it in a thread."""
    return small_jpeg(data, MAX_SIDE, blur_radius=BLUR_RADIUS, quality=60)


@dataclass
class _Followed:
    job: JobInfo
    target: Target
    task: asyncio.Task[None] | None = None
    digest: str | None = None
    #: The edit of the newest preview handed to the updater.
    pending: asyncio.Future[Outcome] | None = None


class LivePreviews:
    """Polls the preview object of each running job and attaches it to the job message."""

    def __init__(
        self,
        updater: MessageUpdater,
        source: ImageSource,
        metrics: BotMetrics,
        *,
        interval: float,
        allowed: Callable[[JobInfo], Awaitable[bool]] | None = None,
    ) -> None:
        self.updater = updater
        self.source = source
        self.metrics = metrics
        self.interval = interval
        self.allowed = allowed
        self._followed: dict[str, _Followed] = {}

    def follow(self, job: JobInfo, target: Target | None) -> None:
        """Called with every state of a job: starts, updates or stops following its preview."""
        if target is None or job.phase is not Phase.RUNNING or job.deleting or job.status.preview is None:
            self.stop(job.key)
            return
        followed = self._followed.get(job.key)
        if followed is None:
            followed = self._followed[job.key] = _Followed(job, target)
            followed.task = asyncio.create_task(self._run(followed), name=f"preview-{job.key}")
        followed.job, followed.target = job, target

    def stop(self, key: str) -> None:
        """Stop following `key` (finished, deleted, or no longer running)."""
        followed = self._followed.pop(key, None)
        if followed is not None and followed.task is not None:
            followed.task.cancel()

    def __len__(self) -> int:
        return len(self._followed)

    async def aclose(self) -> None:
        """Stop every poll (at shutdown)."""
        tasks = [f.task for f in self._followed.values() if f.task is not None]
        self._followed.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _period(self, job: JobInfo) -> float:
        preview = job.status.preview
        return max(self.interval, preview.interval_seconds if preview is not None else 0.0)

    async def _run(self, followed: _Followed) -> None:
        try:
            if self.allowed is not None and not await self.allowed(followed.job):
                log.info("[%s] no live preview: the result would not be shown in this channel", followed.job.key)
                await asyncio.Event().wait()  # stay registered (so it is not re-checked) until stopped
            while True:
                await asyncio.sleep(self._period(followed.job))
                await self._show(followed)
        except asyncio.CancelledError:
            raise
        except Exception:  # a preview must never disturb the job message's other edits
            log.exception("[%s] live preview failed", followed.job.key)
        finally:
            if self._followed.get(followed.job.key) is followed:
                del self._followed[followed.job.key]

    async def _show(self, followed: _Followed) -> None:
        """One look at the preview object; a new one goes to the updater."""
        job = followed.job
        key = preview_key(job.namespace, job.name, job.uid)
        try:
            data = await self.source.fetch(key)
        except (OSError, ValueError) as exc:  # not written yet, or deleted as the job ended
            log.debug("[%s] no preview to show: %s", job.key, exc)
            return
        digest = hashlib.sha256(data).hexdigest()
        if digest == followed.digest:
            return
        try:
            picture = await asyncio.to_thread(blurred, data)
        except Exception as exc:  # Pillow raises many kinds for bytes it cannot read
            log.info("[%s] preview not usable: %s", job.key, exc)
            return
        followed.digest = digest
        payload = dc_replace(
            render_progress(job),
            files=(FileSpec(PREVIEW_FILENAME, picture, description="live preview (blurred)"),),
        )
        # Not awaited: the edit waits for the message's next slot, while the next look at the
        # preview keeps its own cadence. A newer preview queued before this one is sent replaces it.
        future = self.updater.update(followed.target, payload)
        followed.pending = future
        future.add_done_callback(lambda done: self._sent(followed, done))

    def _sent(self, followed: _Followed, future: asyncio.Future[Outcome]) -> None:
        if future is not followed.pending or future.cancelled():
            return  # replaced by a newer preview: that one's edit is counted
        outcome = future.result()
        if outcome is Outcome.SENT:
            self.metrics.preview_edits.inc()
        elif outcome in (Outcome.GONE, Outcome.SUPERSEDED):
            # The message is gone, or shows the result: nothing more to preview.
            if self._followed.get(followed.job.key) is followed:
                self.stop(followed.job.key)


__all__ = ["PREVIEW_FILENAME", "LivePreviews", "blurred"]
