"""The kopf handlers. Thin on purpose: each hands over to one function elsewhere.

- a daemon per ImageJob runs it (`runner.run_job`), which returns at once for a
  finished one; kopf also starts daemons for existing objects when the operator
  restarts, which is how jobs resume;
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
from comfykube.types import API_GROUP, API_VERSION, PLURAL

log = logging.getLogger(__name__)


# No `when=` filters: kopf builds its keyword arguments (views on the body) to call one, several
# times per watch event, and every write of ours is a watch event. The API server already selects
# this shard's unfinished jobs (run.py's label selector); a finished one still watched (its
# deletion has work to do) gets a daemon that returns at once, and is not started again.
@kopf.daemon(API_GROUP, API_VERSION, PLURAL, cancellation_backoff=5.0, cancellation_timeout=15.0)
async def job_daemon(
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Run one ImageJob to completion, or until it is deleted or the operator exits."""
    ctx: OperatorContext = memo["ctx"]
    await run_job(ctx, _plain(body), stopped.wait, logger)


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL)
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
