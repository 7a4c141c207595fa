"""What happens when an ImageJob is deleted.

A running prompt is cancelled in ComfyUI (queue delete + targeted interrupt)
and its live preview object is deleted; with `spec.output.deleteWithJob` the
stored images go too. Input images uploaded for the job (`<namespace>/inputs/<name>/`,
the bot's `/imagine image:`) go whenever its `spec.images` reads from there: nobody
else uses them. All are bounded:
when ComfyUI or MinIO is gone, a few attempts are made, a Warning Event says
what was left behind, and the finalizer is released anyway. An object stuck
in Terminating because a backend is down helps nobody.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from comfykube.controller.context import OperatorContext
from comfykube.storage import input_prefix, job_prefix, preview_key
from comfykube.types import Phase

ATTEMPTS = 3
FIRST_DELAY = 0.5


async def bounded(action: Callable[[], Awaitable[Any]], attempts: int = ATTEMPTS) -> Exception | None:
    """Try `action` a few times with backoff; the last error, or None on success."""
    error: Exception | None = None
    for attempt in range(attempts):
        try:
            await asyncio.wait_for(action(), timeout=10)
            return None
        except Exception as exc:  # any failure: retry, then report it
            error = exc
            if attempt + 1 < attempts:
                await asyncio.sleep(FIRST_DELAY * 2**attempt)
    return error


async def on_job_deleted(
    ctx: OperatorContext, body: dict[str, Any], log: logging.Logger | logging.LoggerAdapter[logging.Logger]
) -> None:
    """Cancel the prompt if the job was still on its way; delete images if asked. Never raises."""
    meta = body.get("metadata", {})
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    try:
        phase = Phase(status.get("phase") or Phase.PENDING)
    except ValueError:
        phase = Phase.PENDING
    uid = meta.get("uid")
    if not phase.terminal and uid and (status.get("submissions") or status.get("promptId")):
        await _cancel(ctx, body, uid, status.get("backend"), log)
    if (spec.get("output") or {}).get("deleteWithJob"):
        await _delete_prefix(ctx, body, job_prefix(meta.get("namespace", ""), meta.get("name", ""), uid or ""), log)
    elif uid and (status.get("preview") or (not phase.terminal and status.get("submissions"))):
        # The key is made here, never read from status (status is data anyone may have edited).
        key = preview_key(meta.get("namespace", ""), meta.get("name", ""), uid)
        error = await bounded(lambda: ctx.store.delete(key))
        if error is not None:
            log.info("could not delete the live preview %s: %s", key, error)
    inputs = own_inputs(meta, spec)
    if inputs is not None:
        await _delete_prefix(ctx, body, inputs, log)


def own_inputs(meta: dict[str, Any], spec: dict[str, Any]) -> str | None:
    """The job's input prefix when one of its `spec.images` is an `s3Key` under it, else None."""
    try:
        prefix = input_prefix(meta.get("namespace", ""), meta.get("name", ""))
    except ValueError:
        return None
    for image in spec.get("images") or ():
        key = image.get("s3Key") if isinstance(image, dict) else None
        if isinstance(key, str) and key.startswith(prefix):
            return prefix
    return None


async def _delete_prefix(
    ctx: OperatorContext, body: dict[str, Any], prefix: str, log: logging.Logger | logging.LoggerAdapter[logging.Logger]
) -> None:
    """Delete the objects under `prefix`, bounded; a Warning Event says what was left."""
    error = await bounded(lambda: ctx.store.delete_prefix(prefix))
    if error is not None:
        log.warning("could not delete images under %s: %s", prefix, error)
        await ctx.api.post_event(
            body,
            type_="Warning",
            reason="CleanupFailed",
            message=f"images under {prefix} were not deleted ({error}); released anyway",
        )


async def _cancel(
    ctx: OperatorContext,
    body: dict[str, Any],
    uid: str,
    recorded: object,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Cancel the prompt on the backend status names, only if that backend is in the pool."""
    backend = ctx.default_backend() if recorded is None else ctx.pool_backend(recorded)
    if backend is None:
        log.warning("not cancelling prompt %s: status.backend %r is not a backend of the pool", uid, recorded)
        await ctx.api.post_event(
            body,
            type_="Warning",
            reason="CancelSkipped",
            message=f"status.backend {str(recorded)[:200]!r} is not one of this operator's ComfyUI backends; "
            "nothing was cancelled there",
        )
        return
    error = await bounded(lambda: ctx.client(backend).cancel(uid))
    if error is None:
        log.info("cancelled prompt %s on %s", uid, backend)
        await ctx.api.post_event(body, type_="Normal", reason="Cancelled", message="prompt cancelled in ComfyUI")
    else:
        log.warning("could not cancel prompt %s on %s: %s", uid, backend, error)
        await ctx.api.post_event(
            body,
            type_="Warning",
            reason="CancelFailed",
            message=f"could not cancel the prompt in ComfyUI at {backend} ({error}); released anyway",
        )
