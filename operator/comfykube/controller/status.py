"""Writing an ImageJob's status: throttled progress, immediate transitions, conditions.

Progress arrives once per sampler step; writing each one would flood the API
server, and every write also comes back to the operator as a watch event that
kopf processes (most of the operator's CPU per job). So:

- what must be on record at once is written at once: a submission (the count
  guards against rendering a prompt twice), a notice, a retry, the terminal
  status;
- the in-between phases (Pending details, Queued while waiting for a slot,
  Running, Uploading) and progress are staged and written together at most once
  per `min_interval` (1 s): a job that takes less than that goes from its
  submission write straight to its terminal one. Even when the interval has
  passed, a staged change waits `GRACE_SECONDS` (0.1 s) for a write that
  carries it. Their Events are posted when they happen (in the background, so
  the pipeline does not wait on them), not when the status catches up: `Running` and `Uploading` Events date the phases
  (the gallery's timings read them);
- a terminal status is announced only after its write was confirmed by the
  API server.

Everything goes through `ImageJobStatus` (types.py): changes are named by the
model's fields, validated by it, and turned into camelCase by it.
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
from comfykube.clock import REAL_CLOCK, Clock, now_rfc3339
from comfykube.pipeline import PipelineEvent
from comfykube.types import Condition, ImageJobStatus, Phase, Progress

log = logging.getLogger(__name__)

EventSink = Callable[[str, str, str], Awaitable[None]]  # (type, reason, message)
Patcher = Callable[[dict[str, Any]], Awaitable[Any]]

#: How long a staged change waits for company when the throttle would let it go at once.
GRACE_SECONDS = 0.1

#: How often a terminal status is tried before the job is left for the next attempt.
FINISH_ATTEMPTS = 5


class ObjectGone(Exception):
    """The ImageJob no longer exists: stop working on it."""


class StatusNotWritten(Exception):
    """The terminal status could not be written (every retry failed).

    Nothing may claim the job finished: no Event, no history clean-up. The job
    stays as it was last written, so the next attempt resumes it.
    """


def succeeded_condition(
    phase: Phase, reason: str, message: str, generation: int | None, previous: list[Condition], *, now: str
) -> list[Condition]:
    """The standard `Succeeded` condition (Knative/Tekton style) for a phase.

    Unknown while the job is on its way, True when it succeeded, False when it
    failed or was cancelled. `lastTransitionTime` moves only when the status
    value changes, as Kubernetes conventions require.
    """
    value = {Phase.SUCCEEDED: "True", Phase.FAILED: "False", Phase.CANCELLED: "False"}.get(phase, "Unknown")
    old = next((c for c in previous if c.type == "Succeeded"), None)
    condition = Condition(
        type="Succeeded",
        status=value,
        reason=reason or phase.value,
        message=message or "",
        last_transition_time=old.last_transition_time if old and old.status == value else now,
        observed_generation=generation,
    )
    return [*(c for c in previous if c.type != "Succeeded"), condition]


class StatusWriter:
    """Writes one job's status; coalesces progress and announces transitions."""

    def __init__(
        self,
        patch: Patcher,
        emit: EventSink,
        *,
        generation: int | None,
        status: ImageJobStatus | None = None,
        clock: Clock = REAL_CLOCK,
        min_interval: float = 1.0,
        retry_delay: float = 0.5,
    ) -> None:
        self._patch = patch
        self._emit = emit
        self.generation = generation
        #: The status as last confirmed by the API server.
        self.status = status if status is not None else ImageJobStatus()
        self.clock = clock
        self.min_interval = min_interval
        # The throttle runs on the monotonic clock (a wall-clock step must not stall status
        # writes); a scaled test clock shortens it as it shortens every other wait.
        self._interval_real = clock.real_seconds(min_interval)
        self._grace_real = min(self._interval_real, clock.real_seconds(GRACE_SECONDS))
        self.retry_delay = retry_delay
        self._pending: dict[str, Any] = {}
        #: The throttle starts with the writer: the first staged change waits for company.
        self._last_write = time.monotonic()
        #: The last phase an Event was posted for (staged phases are announced when they happen).
        self._announced = self.status.phase
        self._background: set[asyncio.Task[None]] = set()
        #: The object as the API server answered the last write (None before one).
        self.last_object: dict[str, Any] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def phase(self) -> Phase:
        """The phase as last written."""
        return self.status.phase

    @property
    def target_phase(self) -> Phase:
        """The phase the job is in: the staged one, else the one last written."""
        return Phase(self._pending.get("phase", self.status.phase))

    async def set(self, fields: dict[str, Any], *, reason: str = "", message: str | None = None) -> None:
        """Write fields (by `ImageJobStatus` attribute name) now; a phase change also updates
        conditions and posts an Event."""
        changes = dict(self._pending)
        self._pending.clear()
        changes.update(fields)
        old_phase = self.phase
        new_phase = Phase(changes.get("phase", old_phase))
        text = message if message is not None else changes.get("message") or ""
        if new_phase != old_phase or not self.status.conditions:
            changes["conditions"] = succeeded_condition(
                new_phase, reason or new_phase.value, text, self.generation, self.status.conditions,
                now=now_rfc3339(self.clock),
            )
        await self._write(changes)
        await self._announce(old_phase, new_phase, text, reason=reason or None)

    def stage(self, fields: dict[str, Any]) -> None:
        """Queue fields for the next write, without writing now."""
        self._pending.update(fields)

    async def on_event(self, event: PipelineEvent) -> None:
        """Pipeline reporter: submissions and notices at once, the rest staged (see the module doc)."""
        current = self.target_phase
        if event.phase == Phase.PENDING and current != Phase.PENDING:
            # The pipeline starts every attempt in Pending ("checking ComfyUI"); a job the
            # operator already queued must not appear to go backwards.
            event = dataclasses.replace(event, phase=current)
        fields: dict[str, Any] = {"phase": event.phase}
        if event.message:
            fields["message"] = event.message
        for key, value in (
            ("prompt_id", event.prompt_id),
            ("seed", event.seed),
            ("backend", event.backend),
            ("submissions", event.submissions),
            ("queue_position", event.queue_position),
        ):
            if value is not None:
                fields[key] = value
        if event.progress is not None:
            fields["progress"] = Progress(value=event.progress.value, max=event.progress.max)
            fields["progress_text"] = f"{event.progress.value}/{event.progress.max}"
        if event.notice:
            await self.set(fields)
            await self._emit("Warning", event.notice, event.message)
            return
        if "submissions" in fields and fields["submissions"] != self.status.submissions:
            await self.set(fields)  # a submission must be on record before anything else happens
            return
        await self.soon(fields)

    async def soon(self, fields: dict[str, Any]) -> None:
        """Stage fields (a phase among them, perhaps) for a write within `min_interval`.

        A phase change is announced at once, in the background; the write carries
        whatever else was staged by then.
        """
        current = self.target_phase
        self.stage(fields)
        new = self.target_phase
        if new != current and self._claim(new):
            task = asyncio.create_task(self._post(new, fields.get("message") or ""))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        # Even with the throttle open, wait a moment for company: the pipeline's next step is
        # often a write of its own milliseconds later (a new job's "checking ComfyUI" comes just
        # before its submission write), which then carries this one (one write and one watch
        # event less per job).
        wait = max(self._interval_real - (time.monotonic() - self._last_write), self._grace_real)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later(wait))

    async def finish(self, status: ImageJobStatus) -> None:
        """Write a terminal status in full (with conditions); announce it once it landed.

        Raises `StatusNotWritten` when every attempt failed (`ObjectGone` when the job is
        gone): the caller must then not act as if the job were finished.
        """
        if self._flusher is not None:
            self._flusher.cancel()
        self._pending.clear()
        old = self.phase
        final = status.with_derived().model_copy(update={
            "conditions": succeeded_condition(
                status.phase, status.reason or status.phase.value, status.message or "",
                self.generation, self.status.conditions, now=now_rfc3339(self.clock),
            ),
        })
        # Every field the terminal status sets, and the in-flight ones it must clear.
        names = {name for name, value in final if value is not None}
        # (status.preview points at an object deleted with the job's end.)
        names |= {"queue_position", "preview"} | (
            {"progress", "progress_text"} if status.phase != Phase.SUCCEEDED else set()
        )
        changes = {name: getattr(final, name) for name in names}
        last: Exception | None = None
        for attempt in range(FINISH_ATTEMPTS):
            try:
                await self._write(changes)
                break
            except ObjectGone:
                raise
            except Exception as exc:  # the terminal status must land: retry a few times
                last = exc
                log.warning("terminal status write failed (%s); attempt %d of %d", exc, attempt + 1, FINISH_ATTEMPTS)
                if attempt + 1 < FINISH_ATTEMPTS:
                    await self.clock.sleep(self.retry_delay * 2**attempt)
        else:
            raise StatusNotWritten(
                f"the {status.phase.value} status was not written after {FINISH_ATTEMPTS} attempts: {last}"
            )
        await self._announce(old, status.phase, status.message or "", reason=status.reason)

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        while (left := self._interval_real - (time.monotonic() - self._last_write)) > 0:
            await asyncio.sleep(left)  # another write went out meanwhile: the interval starts again
        if self._pending:
            try:
                await self.set({})
            except ObjectGone:
                pass
            except Exception as exc:  # progress is best effort; the next write carries it
                log.info("progress write failed: %s", exc)

    async def _write(self, changes: dict[str, Any]) -> None:
        if not changes:
            return
        if self.generation is not None:
            changes = {**changes, "observed_generation": self.generation}
        async with self._lock:
            # Validated by the model: a wrong value fails here, not at the API server.
            updated = ImageJobStatus.model_validate({**dict(self.status), **changes})
            try:
                answer = await self._patch(updated.wire_fields(changes))
            except ApiException as exc:
                if exc.status == 404:
                    raise ObjectGone() from None
                raise
            self._last_write = time.monotonic()
            self.status = updated
            if isinstance(answer, dict):
                self.last_object = answer

    async def _announce(self, old: Phase, new: Phase, message: str, reason: str | None = None) -> None:
        if old != new and self._claim(new):
            await self._post(new, message, reason)

    def _claim(self, new: Phase) -> bool:
        """Whether `new` still needs its Event (each phase is announced once in a row)."""
        if new == self._announced:
            return False
        self._announced = new
        return True

    async def _post(self, new: Phase, message: str, reason: str | None = None) -> None:
        metrics.JOB_TRANSITIONS.labels(new.value).inc()
        if new.terminal:
            metrics.JOBS_FINISHED.labels(new.value, reason or new.value).inc()
        warning = new in (Phase.FAILED,)
        text = message or new.value
        await self._emit("Warning" if warning else "Normal", reason or new.value, text)
