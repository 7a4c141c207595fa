"""Finished jobs: fresh presigned URLs and deletion after `ttlSecondsAfterFinished`.

One loop for all finished jobs (not a timer task per object, which would cost
memory with thousands of ImageJobs, nor a handler on every watch event, which
would cost CPU on every status write). The index is filled by listing the
ImageJobs at start and every `RESYNC_SECONDS`, and by the runner as it
finishes each job, so it survives restarts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from comfykube.clock import parse_time, rfc3339
from comfykube.controller import release
from comfykube.controller.context import OperatorContext
from comfykube.types import TERMINAL_PHASES, ImageJobStatus

log = logging.getLogger(__name__)

#: Refresh a URL when less than this share of its lifetime is left.
REFRESH_FRACTION = 0.25
#: How often the index is rebuilt from the API server (catches jobs finished elsewhere).
RESYNC_SECONDS = 300.0


@dataclass
class Finished:
    """What the loop needs to know about one finished job."""

    namespace: str
    name: str
    completed_at: float | None
    ttl: int | None
    keys: list[str]
    url_expires_at: float | None


def track(ctx: OperatorContext, obj: dict[str, Any]) -> None:
    """Add or update a job in the index when it is finished (drop it otherwise)."""
    meta = obj.get("metadata") or {}
    key = (meta.get("namespace", ""), meta.get("name", ""))
    status = ImageJobStatus.from_wire(obj.get("status"))
    if status.phase not in TERMINAL_PHASES or meta.get("deletionTimestamp"):
        ctx.finished.pop(key, None)
        return
    expiries = [parse_time(image.url_expires_at) for image in status.images]
    ttl = (obj.get("spec") or {}).get("ttlSecondsAfterFinished")
    ctx.finished[key] = Finished(
        namespace=key[0],
        name=key[1],
        completed_at=parse_time(status.completion_time),
        ttl=ttl if isinstance(ttl, int) else None,
        keys=[image.key for image in status.images if image.key],
        url_expires_at=min((e for e in expiries if e is not None), default=None),
    )


def forget(ctx: OperatorContext, obj: Any) -> None:
    """Drop a job from the index (deleted)."""
    meta = obj.get("metadata") or {}
    ctx.finished.pop((meta.get("namespace", ""), meta.get("name", "")), None)


async def resync(ctx: OperatorContext) -> None:
    """Rebuild the index from the API server (the watched namespaces only)."""
    objects: list[dict[str, Any]] = []
    for namespace in ctx.namespaces if ctx.namespaces is not None else [None]:
        # Only this shard's jobs: another operator owns (and deletes, and refreshes) the rest.
        objects.extend(await ctx.api.list(namespace, label_selector=ctx.selector.text or None))
    ctx.finished.clear()
    for obj in objects:
        if ctx.selector.matches((obj.get("metadata") or {}).get("labels")):
            track(ctx, obj)
            # The label that keeps finished jobs out of kopf's watch is a claim: take it off a
            # job that is not finished (kopf then runs it), and release the finished jobs an
            # older operator left in the watch with the finalizer (once, after an upgrade).
            if release.wrongly_labelled(obj):
                await release.unlabel(ctx.api, obj)
            elif release.releasable(obj):
                await release.release(ctx.api, obj)


async def run(ctx: OperatorContext, interval: float = 10.0) -> None:
    """Forever: delete jobs past their TTL, refresh URLs close to expiry."""
    last_resync = float("-inf")
    while True:
        try:
            if ctx.clock.now() - last_resync >= RESYNC_SECONDS:
                await resync(ctx)
                last_resync = ctx.clock.now()
            await sweep(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the loop alive; the next sweep tries again
            log.exception("maintenance sweep failed")
        await ctx.clock.sleep(interval)


async def sweep(ctx: OperatorContext) -> None:
    """One pass over the finished jobs."""
    now = ctx.clock.now()
    expiry = ctx.settings.presign_expiry_seconds
    for item in list(ctx.finished.values()):
        if item.ttl is not None and item.completed_at is not None and now >= item.completed_at + item.ttl:
            log.info("[%s/%s] deleting: finished more than %s s ago", item.namespace, item.name, item.ttl)
            await ctx.api.delete(item.namespace, item.name)
            ctx.finished.pop((item.namespace, item.name), None)
            continue
        if item.keys and item.url_expires_at is not None and item.url_expires_at - now < expiry * REFRESH_FRACTION:
            await refresh_urls(ctx, item)


async def refresh_urls(ctx: OperatorContext, item: Finished) -> None:
    """Presign every image of a job again and write the new URLs to its status."""
    obj = await ctx.api.get(item.namespace, item.name)
    if obj is None:
        ctx.finished.pop((item.namespace, item.name), None)
        return
    status = ImageJobStatus.from_wire(obj.get("status"))
    images = []
    for image in status.images:
        url, expires_at = await ctx.store.presign(image.key, ctx.settings.presign_expiry_seconds)
        expires = rfc3339(expires_at) if expires_at else None
        images.append(image.model_copy(update={"url": url, "url_expires_at": expires}))
    if not images:
        return
    fresh = status.model_copy(update={"images": images, "url": images[0].url})
    updated = await ctx.api.patch_status(item.namespace, item.name, fresh.wire_fields({"images", "url"}))
    log.info("[%s/%s] refreshed %d presigned URL(s)", item.namespace, item.name, len(images))
    track(ctx, updated)
