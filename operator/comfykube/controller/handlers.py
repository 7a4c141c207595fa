"""The kopf handlers. Thin on purpose: each hands over to one function elsewhere.

- a daemon per unfinished ImageJob runs it (`runner.run_job`); kopf also starts
  daemons for existing objects when the operator restarts, which is how jobs
  resume;
- the delete handler cancels a running prompt and, if asked, deletes images;
- finished jobs need no handler: `maintenance` lists them itself (at start and
  now and then) and the runner adds each job it finishes.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from comfykube.controller import maintenance
from comfykube.controller.context import OperatorContext
from comfykube.controller.runner import run_job
from comfykube.controller.teardown import on_job_deleted
from comfykube.types import API_GROUP, API_VERSION, PLURAL, Phase

log = logging.getLogger(__name__)


def _phase(status: Any) -> str:
    return str((status or {}).get("phase") or Phase.PENDING.value)


def in_shard(labels: Any, memo: kopf.Memo, **_: Any) -> bool:
    """Filter: the job is this operator's (its shard's selector; the API server filters first)."""
    ctx: OperatorContext | None = memo.get("ctx")
    return ctx is None or ctx.selector.matches(dict(labels or {}))


def unfinished(status: Any, labels: Any = None, memo: kopf.Memo | None = None, **_: Any) -> bool:
    """Daemon filter: only this shard's jobs that still have work to do get a daemon."""
    if memo is not None and not in_shard(labels, memo):
        return False
    return _phase(status) not in {p.value for p in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED)}


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, when=unfinished, cancellation_backoff=5.0, cancellation_timeout=15.0)
async def job_daemon(
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Run one ImageJob to completion, or until it is deleted or the operator exits."""
    ctx: OperatorContext = memo["ctx"]

    def finishing_ok() -> bool:
        # Only "the filter no longer matches" (we wrote a terminal phase ourselves).
        reason = stopped.reason
        return reason is not None and not (reason & ~kopf.DaemonStoppingReason.FILTERS_MISMATCH)

    await run_job(ctx, _plain(body), stopped.wait, logger, finishing_ok=finishing_ok)


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, when=in_shard)
async def job_deleted(
    body: kopf.Body, logger: logging.Logger | logging.LoggerAdapter[Any], memo: kopf.Memo, **_: Any
) -> None:
    """Cancel in ComfyUI and clean up storage; never blocks the finalizer for long."""
    ctx: OperatorContext = memo["ctx"]
    maintenance.forget(ctx, body)
    await on_job_deleted(ctx, _plain(body), logger)


def _plain(body: kopf.Body) -> dict[str, Any]:
    """A plain-dict snapshot of kopf's live body view."""
    return {
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }
