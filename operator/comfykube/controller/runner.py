"""One ImageJob from its current status to a terminal one.

Called by the per-job kopf daemon. It reads everything it needs from the
object (state lives in the ImageJob, not in this process), so a killed and
restarted operator picks up exactly where the last one was: the pipeline
attaches to the prompt instead of submitting it again.

Retryable faults (ComfyUI or S3 down) are retried with backoff until the
job's deadline; everything else ends the job with a clear reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from comfykube import metrics
from comfykube.clock import now_rfc3339, parse_time
from comfykube.comfyui.transport import BackendRefused
from comfykube.controller import maintenance, release
from comfykube.controller.chaining import resolve_from_jobs
from comfykube.controller.context import OperatorContext
from comfykube.controller.previews import PreviewPublisher
from comfykube.controller.status import ObjectGone, StatusNotWritten, StatusWriter
from comfykube.errors import DeadlineExceeded, InvalidSpec, JobError, PreflightFailed
from comfykube.names import LABEL_REQUESTER
from comfykube.pipeline import JobIdentity, PipelineEvent, ResumeState, failed_status
from comfykube.storage import preview_key
from comfykube.types import ImageJobSpec, ImageJobStatus, Phase, parse_spec

#: Backoff between attempts after a retryable fault: 1, 2, 4 … capped.
MAX_BACKOFF_SECONDS = 30.0


def identity(body: dict[str, Any]) -> JobIdentity:
    """The job identity from the object's metadata."""
    meta = body.get("metadata", {})
    return JobIdentity(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


async def run_job(
    ctx: OperatorContext,
    body: dict[str, Any],
    stopped: Callable[[], Awaitable[Any]],
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Drive one job to a terminal phase; returns early if `stopped()` completes first.

    kopf stops the daemon only when the job is deleted or the operator exits: writing a
    terminal phase does not (no filter), so the Event and the history clean-up that follow
    it always finish.
    """
    job = identity(body)
    meta = body.get("metadata", {})
    status = ImageJobStatus.from_wire(body.get("status"))
    if status.phase.terminal:
        return

    async def patch(fields: dict[str, Any]) -> Any:
        return await ctx.api.patch_status(job.namespace, job.name, fields)

    async def emit(type_: str, reason: str, message: str) -> None:
        await ctx.api.post_event(body, type_=type_, reason=reason, message=message)

    generation = meta.get("generation")
    writer = StatusWriter(
        patch, emit, generation=generation if isinstance(generation, int) else None, status=status, clock=ctx.clock
    )
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except InvalidSpec as exc:
        # The schema should have refused it; an API server that does not validate must not crash us.
        log.warning("invalid spec: %s", exc.message)
        await _finish(ctx, body, writer, failed_status(exc, clock=ctx.clock, start_time=status.start_time))
        return

    start_time = status.start_time or now_rfc3339(ctx.clock)
    timeout = spec.timeout_seconds or ctx.settings.default_timeout_seconds
    deadline_at = (parse_time(start_time) or ctx.clock.now()) + timeout
    if not status.start_time:
        # Goes out with the first status write (one write less per job in a burst).
        writer.stage({"start_time": start_time})

    previews = _previews(ctx, job, writer)
    work = asyncio.ensure_future(_attempts(ctx, spec, job, body, writer, deadline_at, start_time, log, previews))
    stop = asyncio.ensure_future(stopped())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            # Operator exiting or object deleted: leave ComfyUI alone here. A new operator
            # re-attaches; a deletion is cancelled in ComfyUI by the delete handler.
            work.cancel()
        try:
            await work
        except (asyncio.CancelledError, ObjectGone):
            pass
        finally:
            if previews is not None:
                # Gone with the job's end; an operator that stops leaves it for the next one to overwrite.
                await previews.close(delete=writer.phase.terminal)


def _previews(ctx: OperatorContext, job: JobIdentity, writer: StatusWriter) -> PreviewPublisher | None:
    """The job's live-preview keeper (None when PREVIEW_INTERVAL_SECONDS is 0)."""
    interval = ctx.settings.preview_interval_seconds
    if interval <= 0:
        return None
    return PreviewPublisher(
        ctx.store,
        preview_key(job.namespace, job.name, job.uid),
        interval=interval,
        clock=ctx.clock,
        # Once per job, riding on the next progress write: no status write of its own.
        on_first=lambda ref: writer.stage({"preview": ref}),
        metadata={"uid": job.uid},
    )


async def _attempts(
    ctx: OperatorContext,
    spec: ImageJobSpec,
    job: JobIdentity,
    body: dict[str, Any],
    writer: StatusWriter,
    deadline_at: float,
    start_time: str,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    previews: PreviewPublisher | None = None,
) -> None:
    """Run the pipeline until it succeeds, fails for good, or the deadline passes."""
    meta = body.get("metadata", {})
    requester = (meta.get("labels") or {}).get(LABEL_REQUESTER, "")
    created = parse_time(meta.get("creationTimestamp")) or 0.0
    limit = spec.timeout_seconds or ctx.settings.default_timeout_seconds
    backoff = 1.0
    #: The last retryable fault: a job that gives up at its deadline says what kept it.
    last_error: JobError | None = None
    while True:
        status = writer.status
        resume = ResumeState(seed=status.seed, submissions=status.submissions)
        try:
            if ctx.clock.now() >= deadline_at:
                raise DeadlineExceeded(f"the job did not finish within {limit} s")
            result = await _one_attempt(
                ctx, spec, job, writer, resume, requester, created, deadline_at, log, previews
            )
        except JobError as exc:
            if isinstance(exc, DeadlineExceeded):
                await _cancel_quietly(ctx, job, writer, log)
            if exc.retryable and ctx.clock.now() < deadline_at:
                last_error = exc
                cap = MAX_BACKOFF_SECONDS if exc.max_retry_delay is None else exc.max_retry_delay
                delay = min(backoff, cap, max(0.0, deadline_at - ctx.clock.now()))
                metrics.RETRIES.labels(exc.reason).inc()
                message = f"{exc.message} (retrying in {delay:.0f} s)"
                if (message, exc.reason) != (writer.status.message, writer.status.reason):
                    # A job waiting for another checks every few seconds: one status write and
                    # one log line per change, not per check.
                    log.warning("%s; retrying in %.0f s", exc, delay)
                    await writer.set({"message": message, "reason": exc.reason})
                await ctx.clock.sleep(delay)
                backoff *= 2
                continue
            if exc.retryable:
                last_error = exc
                await _cancel_quietly(ctx, job, writer, log)
            if exc.retryable or (isinstance(exc, DeadlineExceeded) and last_error is not None):
                cause = f"; last error: {last_error.message}" if last_error is not None else ""
                exc = DeadlineExceeded(f"the job did not finish within {limit} s{cause}")
            log.warning("failed: %s", exc)
            known = writer.status
            await _finish(
                ctx,
                body,
                writer,
                failed_status(
                    exc,
                    clock=ctx.clock,
                    start_time=start_time,
                    prompt_id=known.prompt_id,
                    seed=known.seed,
                    backend=known.backend,
                    submissions=known.submissions,
                ),
            )
            return
        result.start_time = start_time
        try:
            await _finish(ctx, body, writer, result)
        except StatusNotWritten as exc:
            # The images are stored but the status does not say so: claim nothing and keep
            # the prompt in ComfyUI's history. The next attempt attaches to the finished
            # prompt and stores it again (it never renders it again); it gets the job's
            # timeout once more, since the render itself did finish in time.
            delay = min(backoff, MAX_BACKOFF_SECONDS)
            log.warning("%s; storing the result again in %.0f s", exc, delay)
            await ctx.api.post_event(body, type_="Warning", reason="StatusNotWritten", message=str(exc))
            await ctx.clock.sleep(delay)
            backoff *= 2
            deadline_at = max(deadline_at, ctx.clock.now() + limit)
            continue
        # The object keys, never the URL: a presigned URL is a bearer credential.
        log.info("succeeded: %s", ", ".join(image.key for image in result.images))
        await ctx.pipeline(result.backend or ctx.default_backend()).release(job)
        return


async def _finish(ctx: OperatorContext, body: dict[str, Any], writer: StatusWriter, status: ImageJobStatus) -> None:
    """Write the terminal status and hand the job to the maintenance loop (TTL, URL refresh).

    Then take it out of kopf's watch (`release.py`): a finished job costs kopf nothing more.
    """
    await writer.finish(status)
    maintenance.track(ctx, {"metadata": body.get("metadata"), "spec": body.get("spec"), "status": writer.status.wire()})
    if writer.last_object is not None:
        await release.release(ctx.api, writer.last_object)


async def _one_attempt(
    ctx: OperatorContext,
    spec: ImageJobSpec,
    job: JobIdentity,
    writer: StatusWriter,
    resume: ResumeState,
    requester: str,
    created: float,
    deadline_at: float,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    previews: PreviewPublisher | None = None,
) -> ImageJobStatus:
    """Wait for a backend slot, then run the pipeline there."""
    key = str(job)
    # Before a slot is taken: a job waiting for the job it chains from holds no backend.
    resolved = (
        await resolve_from_jobs(
            ctx.api, job.namespace, spec,
            age=ctx.clock.now() - created, missing_grace=ctx.settings.from_job_wait_seconds,
        )
        if spec.images
        else {}
    )
    pinned = writer.status.backend if resume.submissions else None
    # Only a model the spec names restricts the backends; without one, any installed
    # checkpoint will do (the pipeline falls back to one the backend has).
    checkpoint = spec.model
    pool = ctx.pool
    if pool is not None:
        installed = pool.nobody_has(checkpoint)
        if installed is not None:
            raise PreflightFailed(
                f"no ComfyUI backend has checkpoint {checkpoint!r}; installed: {', '.join(installed) or 'none'}"
            )

    def eligible(backend: str) -> bool:
        # A submitted prompt lives on one backend: attach there while it is alive; when it is
        # gone or drained, the job moves (the pipeline submits it there once more).
        if pinned is not None and pinned in ctx.scheduler.backends and pinned not in ctx.scheduler.unhealthy:
            return backend == pinned
        return pool is None or pool.has_checkpoint(backend, checkpoint)

    if not ctx.scheduler.has_room(eligible) and writer.target_phase == Phase.PENDING:
        # Staged: a job that gets its slot within a second never writes this.
        await writer.soon({"phase": Phase.QUEUED, "message": "waiting for a free ComfyUI slot"})

    remaining = max(0.0, deadline_at - ctx.clock.now())
    waiting = asyncio.create_task(_explain_wait(ctx, writer)) if pool is not None else None
    try:
        async with asyncio.timeout(ctx.clock.real_seconds(remaining)):
            async with ctx.scheduler.slot(key, requester=requester, created=created, eligible=eligible) as backend:
                if waiting is not None:
                    waiting.cancel()
                log.debug("running on %s", backend)

                async def report(event: PipelineEvent) -> None:
                    if event.phase is Phase.UPLOADING:
                        # ComfyUI is done with this prompt: the next job may submit while we store.
                        ctx.scheduler.hand_off(key)
                    await writer.on_event(event)

                try:
                    return await ctx.pipeline(backend).run(
                        spec, job, report=report, resume=resume, deadline_at=deadline_at,
                        resolved_jobs=resolved, on_preview=previews.offer if previews is not None else None,
                    )
                except BackendRefused:
                    # Nothing listens there any more: drain it now, not at the next periodic check,
                    # so the retry moves the job instead of waiting for the same dead backend.
                    if pool is not None:
                        await pool.check(backend)
                    raise
    except TimeoutError:
        raise DeadlineExceeded("the job did not finish before its deadline") from None
    finally:
        if waiting is not None:
            waiting.cancel()


async def _explain_wait(ctx: OperatorContext, writer: StatusWriter) -> None:
    """While a job waits for a slot, say so in its status when no backend is healthy.

    A job that only says "waiting for a free slot" while every ComfyUI is down misleads.
    """
    said: str | None = None
    while ctx.pool is not None:
        outage = ctx.pool.outage()
        if outage is not None and outage != said:
            said = outage
            await writer.set({"phase": Phase.QUEUED, "reason": "ComfyUIUnavailable",
                              "message": f"waiting for a healthy ComfyUI backend: {outage}"})
        await ctx.clock.sleep(ctx.settings.backend_check_interval)


async def _cancel_quietly(
    ctx: OperatorContext,
    job: JobIdentity,
    writer: StatusWriter,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Cancel the prompt in ComfyUI if it was submitted; log, never raise."""
    if not writer.status.submissions:
        return
    recorded = writer.status.backend
    backend = ctx.default_backend() if recorded is None else ctx.pool_backend(recorded)
    if backend is None:
        log.warning("not cancelling prompt %s: status.backend %r is not in the pool", job.prompt_id, recorded)
        return
    try:
        await ctx.client(backend).cancel(job.prompt_id)
    except Exception as exc:  # best effort: the deadline failure is what matters
        log.warning("could not cancel prompt %s on %s: %s", job.prompt_id, backend, exc)
