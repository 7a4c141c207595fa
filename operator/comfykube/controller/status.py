"""Writing an ImageJob's status: throttled progress, immediate transitions, conditions.

Progress arrives once per sampler step; writing each one would flood the API
server. Phase changes are written at once (and announced with an Event);
progress within a phase is coalesced to about one write per second per job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from comfykube import metrics
from comfykube.pipeline import PipelineEvent, now_rfc3339
from comfykube.types import ImageJobStatus, Phase

log = logging.getLogger(__name__)

EventSink = Callable[[str, str, str], Awaitable[None]]  # (type, reason, message)
Patcher = Callable[[dict[str, Any]], Awaitable[Any]]


class ObjectGone(Exception):
    """The ImageJob no longer exists: stop working on it."""


def succeeded_condition(phase: Phase, reason: str, message: str, generation: int | None,
                        previous: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The standard `Succeeded` condition (Knative/Tekton style) for a phase.

    Unknown while the job is on its way, True when it succeeded, False when it
    failed or was cancelled. `lastTransitionTime` moves only when the status
    value changes, as Kubernetes conventions require.
    """
    value = {Phase.SUCCEEDED: "True", Phase.FAILED: "False", Phase.CANCELLED: "False"}.get(phase, "Unknown")
    old = next((c for c in previous or [] if c.get("type") == "Succeeded"), None)
    transition = old["lastTransitionTime"] if old and old.get("status") == value else now_rfc3339()
    condition: dict[str, Any] = {
        "type": "Succeeded",
        "status": value,
        "reason": reason or phase.value,
        "message": message or "",
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    others = [c for c in previous or [] if c.get("type") != "Succeeded"]
    return [*others, condition]


class StatusWriter:
    """Writes one job's status; coalesces progress and announces transitions."""

    def __init__(
        self,
        patch: Patcher,
        emit: EventSink,
        *,
        generation: int | None,
        status: dict[str, Any] | None = None,
        min_interval: float = 1.0,
    ) -> None:
        self._patch = patch
        self._emit = emit
        self.generation = generation
        self.status: dict[str, Any] = dict(status or {})
        self.min_interval = min_interval
        self._pending: dict[str, Any] = {}
        self._last_write = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def phase(self) -> Phase:
        """The phase as last written."""
        try:
            return Phase(self.status.get("phase") or Phase.PENDING)
        except ValueError:
            return Phase.PENDING

    async def set(self, fields: dict[str, Any], *, reason: str = "", message: str | None = None) -> None:
        """Write fields now; a phase change also updates conditions and posts an Event."""
        patch = dict(self._pending)
        self._pending.clear()
        patch.update(fields)
        old_phase = self.phase
        new_phase = Phase(patch.get("phase", old_phase))
        text = message if message is not None else patch.get("message", "")
        if new_phase != old_phase or "conditions" not in self.status:
            patch["conditions"] = succeeded_condition(
                new_phase, reason or new_phase.value, text or "", self.generation, self.status.get("conditions")
            )
        await self._write(patch)
        await self._announce(old_phase, new_phase, text or "", reason=reason or None)

    def stage(self, fields: dict[str, Any]) -> None:
        """Queue fields for the next write, without writing now."""
        self._pending.update(fields)

    async def on_event(self, event: PipelineEvent) -> None:
        """Pipeline reporter: transitions at once, progress at most once per interval."""
        if event.phase == Phase.PENDING and self.phase != Phase.PENDING:
            # The pipeline starts every attempt in Pending ("checking ComfyUI"); a job the
            # operator already queued must not appear to go backwards.
            event = dataclasses.replace(event, phase=self.phase)
        fields: dict[str, Any] = {"phase": event.phase.value}
        if event.message:
            fields["message"] = event.message
        for key, value in (
            ("promptId", event.prompt_id),
            ("seed", event.seed),
            ("backend", event.backend),
            ("submissions", event.submissions),
            ("queuePosition", event.queue_position),
        ):
            if value is not None:
                fields[key] = value
        if event.progress is not None:
            fields["progress"] = {"value": event.progress.value, "max": event.progress.max}
            fields["progressText"] = f"{event.progress.value}/{event.progress.max}"
        if event.notice:
            await self.set(fields)
            await self._emit("Warning", event.notice, event.message)
            if event.phase == self.phase:
                return
        if event.phase != self.phase:
            await self.set(fields, reason=event.phase.value)
            return
        if fields.get("submissions") != self.status.get("submissions") and "submissions" in fields:
            await self.set(fields)  # a submission must be on record before anything else happens
            return
        self._pending.update(fields)
        wait = self.min_interval - (time.monotonic() - self._last_write)
        if wait <= 0:
            await self.set({})
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later(wait))

    async def finish(self, status: ImageJobStatus) -> None:
        """Write a terminal status in full (with conditions) and announce it."""
        if self._flusher is not None:
            self._flusher.cancel()
        self._pending.clear()
        old = self.phase
        data = status.wire()
        data["imageCount"] = len(status.images)
        if status.progress is not None:
            data["progressText"] = f"{status.progress.value}/{status.progress.max}"
        data.setdefault("queuePosition", None)
        if status.phase != Phase.SUCCEEDED:
            data.setdefault("progress", None)
        data["conditions"] = succeeded_condition(
            status.phase, status.reason or status.phase.value, status.message or "",
            self.generation, self.status.get("conditions"),
        )
        for attempt in range(5):
            try:
                await self._write(data)
                break
            except ObjectGone:
                raise
            except Exception as exc:  # the terminal status must land: retry a few times
                log.warning("status write failed (%s); retrying", exc)
                await asyncio.sleep(0.5 * 2**attempt)
        await self._announce(old, status.phase, status.message or "", reason=status.reason)

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._pending:
            try:
                await self.set({})
            except ObjectGone:
                pass
            except Exception as exc:  # progress is best effort; the next write carries it
                log.info("progress write failed: %s", exc)

    async def _write(self, patch: dict[str, Any]) -> None:
        if not patch:
            return
        if self.generation is not None:
            patch["observedGeneration"] = self.generation
        async with self._lock:
            try:
                await self._patch(patch)
            except ApiException as exc:
                if exc.status == 404:
                    raise ObjectGone() from None
                raise
            self._last_write = time.monotonic()
            for key, value in patch.items():
                if value is None:
                    self.status.pop(key, None)
                else:
                    self.status[key] = value

    async def _announce(self, old: Phase, new: Phase, message: str, reason: str | None = None) -> None:
        if old == new:
            return
        metrics.JOB_TRANSITIONS.labels(new.value).inc()
        if new.terminal:
            metrics.JOBS_FINISHED.labels(new.value, reason or new.value).inc()
        warning = new in (Phase.FAILED,)
        text = message or new.value
        await self._emit("Warning" if warning else "Normal", reason or new.value, text)
