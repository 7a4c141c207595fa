"""Finished jobs: presigned URLs re-signed before they expire, deletion after the TTL.

The sweep runs in-process against the Kubernetes API stand-in and nanio, with a
clock the test moves forward (waiting out a real URL lifetime would take an hour).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes_asyncio import client

from comfykube.clock import Clock, rfc3339
from comfykube.controller import maintenance
from comfykube.controller.context import OperatorContext
from comfykube.controller.scheduler import Scheduler
from comfykube.kube import KubeApi
from comfykube.names import FINALIZER, LABEL_FINISHED
from comfykube.settings import DEFAULT_WORKFLOWS_DIR
from comfykube.storage import MinioStore
from comfykube.workflows import WorkflowLibrary
from tests.harness import REPO

IMAGEJOBS = "comfykube.dev/v1alpha1/imagejobs"


class ManualClock(Clock):
    """Wall time plus an offset the test controls."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return super().now() + self.offset


async def context(fake: Any, settings: Any, clock: Clock) -> OperatorContext:
    fake.register_crd(yaml.safe_load((REPO / "crds" / "imagejob.yaml").read_text(encoding="utf-8")))
    api = KubeApi(client.ApiClient(configuration=client.Configuration(host=fake.base_url)))
    return OperatorContext(
        settings=settings, api=api, store=MinioStore(settings), workflows=WorkflowLibrary([DEFAULT_WORKFLOWS_DIR]),
        scheduler=Scheduler([], 1), clock=clock,
    )


async def finished_job(fake: Any, ctx: OperatorContext, name: str, *, ttl: int | None = None) -> dict[str, Any]:
    """A Succeeded ImageJob whose image really is in the store, with a URL close to expiry."""
    key = f"default/{name}/uid-1/0.png"
    payload = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "0.png"
        path.write_bytes(payload)
        await ctx.store.ensure_ready()
        await ctx.store.put_verified(key, path, size=len(payload), sha256=hashlib.sha256(payload).hexdigest(),
                                     content_type="image/png", metadata={})
    url, expires = await ctx.store.presign(key, 60)
    spec: dict[str, Any] = {"prompt": "fox"}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    fake.create_object(IMAGEJOBS, {"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob",
                                   "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    status = {
        "phase": "Succeeded", "completionTime": rfc3339_now(ctx.clock), "imageCount": 1, "url": url,
        "images": [{"key": key, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
                    "contentType": "image/png", "url": url, "urlExpiresAt": rfc3339(expires)}],
    }
    return await ctx.api.patch_status("default", name, status)


def rfc3339_now(clock: Clock) -> str:
    from datetime import UTC, datetime

    return rfc3339(datetime.fromtimestamp(clock.now(), UTC))


async def test_urls_close_to_expiry_are_signed_again_and_still_work(
    kube_api_inprocess: Any, s3_settings: Any
) -> None:
    clock = ManualClock()
    ctx = await context(kube_api_inprocess, s3_settings.model_copy(update={"presign_expiry_seconds": 3600}), clock)
    try:
        job = await finished_job(kube_api_inprocess, ctx, "old-link")
        old_url = job["status"]["url"]
        maintenance.track(ctx, job)
        await maintenance.sweep(ctx)  # 60 s left of a 3600 s lifetime: well under a quarter
        fresh = await ctx.api.get("default", "old-link")
        assert fresh is not None
        image = fresh["status"]["images"][0]
        assert fresh["status"]["url"] == image["url"] != old_url
        assert image["urlExpiresAt"] > job["status"]["images"][0]["urlExpiresAt"]
        async with httpx.AsyncClient() as http:
            body = (await http.get(image["url"])).content
        assert hashlib.sha256(body).hexdigest() == image["sha256"]

        # Fresh URLs are left alone on the next sweep.
        await maintenance.sweep(ctx)
        again = await ctx.api.get("default", "old-link")
        assert again is not None and again["status"]["url"] == image["url"]
    finally:
        await ctx.api.close()


async def test_finished_job_is_deleted_after_its_ttl_and_not_before(
    kube_api_inprocess: Any, s3_settings: Any
) -> None:
    clock = ManualClock()
    ctx = await context(kube_api_inprocess, s3_settings, clock)
    try:
        job = await finished_job(kube_api_inprocess, ctx, "short-lived", ttl=300)
        maintenance.track(ctx, job)
        clock.offset = 200
        await maintenance.sweep(ctx)
        assert await ctx.api.get("default", "short-lived") is not None
        clock.offset = 301
        await maintenance.sweep(ctx)
        assert await ctx.api.get("default", "short-lived") is None
        assert ("default", "short-lived") not in ctx.finished
    finally:
        await ctx.api.close()


async def test_unfinished_jobs_are_not_tracked(kube_api_inprocess: Any, s3_settings: Any) -> None:
    ctx = await context(kube_api_inprocess, s3_settings, ManualClock())
    try:
        maintenance.track(ctx, {"metadata": {"namespace": "default", "name": "busy"}, "status": {"phase": "Running"}})
        assert ctx.finished == {}
    finally:
        await ctx.api.close()


async def test_resync_releases_finished_jobs_and_unlabels_unfinished_ones(
    kube_api_inprocess: Any, s3_settings: Any
) -> None:
    """Finished jobs an older operator left (with the finalizer) are released; deleteWithJob ones keep it;
    a job labelled finished that is not finished loses the label (else kopf would never run it)."""
    fake = kube_api_inprocess
    ctx = await context(fake, s3_settings, ManualClock())
    try:
        for name, spec, labels in (
            ("old", {"prompt": "fox"}, {}),
            ("keeps", {"prompt": "fox", "output": {"deleteWithJob": True}}, {}),
            ("claims", {"prompt": "fox"}, {LABEL_FINISHED: "true"}),
        ):
            fake.create_object(IMAGEJOBS, {"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob",
                                           "metadata": {"name": name, "namespace": "default", "labels": labels,
                                                        "finalizers": [FINALIZER, "other.dev/keep"]},
                                           "spec": spec})
        for name in ("old", "keeps"):
            await ctx.api.patch_status("default", name,
                                       {"phase": "Succeeded", "completionTime": rfc3339_now(ctx.clock)})
        ctx.namespaces = ["default"]
        await maintenance.resync(ctx)
        old, keeps, claims = [await ctx.api.get("default", name) for name in ("old", "keeps", "claims")]
        assert old is not None and keeps is not None and claims is not None
        assert old["metadata"]["labels"] == {LABEL_FINISHED: "true"}
        assert old["metadata"]["finalizers"] == ["other.dev/keep"]  # only ours is dropped
        assert LABEL_FINISHED not in (keeps["metadata"].get("labels") or {})
        assert FINALIZER in keeps["metadata"]["finalizers"]  # its deletion still deletes the images
        assert LABEL_FINISHED not in (claims["metadata"].get("labels") or {})
        assert set(ctx.finished) == {("default", "old"), ("default", "keeps")}
    finally:
        await ctx.api.close()
