"""The operator's runner in-process: how a job ends when the API server or a backend misbehaves.

Real peers over real sockets (the Kubernetes API stand-in, the ComfyUI stand-in, nanio);
the only fault injected on our side is a status patch that fails on purpose. Time runs
faster (`ScaledClock`) so retries and deadlines take moments.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from comfykube.clock import ScaledClock
from comfykube.controller.context import OperatorContext
from comfykube.controller.runner import run_job
from comfykube.controller.scheduler import Scheduler
from comfykube.kube import KubeApi
from comfykube.settings import DEFAULT_WORKFLOWS_DIR, Settings
from comfykube.storage import MinioStore
from comfykube.workflows import WorkflowLibrary
from tests.harness import REPO

LOG = logging.getLogger("test")
IMAGEJOBS = "comfykube.dev/v1alpha1/imagejobs"
SCALE = 50.0


class FlakyKubeApi(KubeApi):
    """The real client, except that terminal status patches fail while `refuse_terminal` is set."""

    def __init__(self, api_client: client.ApiClient) -> None:
        super().__init__(api_client)
        self.refuse_terminal = False
        self.refused = 0
        self.events: list[tuple[str, str, str]] = []
        #: Every status patch sent, as sent.
        self.patches: list[dict[str, Any]] = []

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(dict(status))
        if self.refuse_terminal and status.get("phase") in ("Succeeded", "Failed", "Cancelled"):
            self.refused += 1
            raise ApiException(status=500, reason="etcdserver: request timed out")
        return await super().patch_status(namespace, name, status)

    async def post_event(self, obj: dict[str, Any], *, type_: str, reason: str, message: str,
                         component: str = "comfykube") -> None:
        self.events.append((type_, reason, message))
        await super().post_event(obj, type_=type_, reason=reason, message=message, component=component)


@pytest.fixture
async def make_ctx(kube_api_inprocess: Any, s3_settings: Settings) -> AsyncIterator[Any]:
    kube_api_inprocess.register_crd(yaml.safe_load((REPO / "crds" / "imagejob.yaml").read_text(encoding="utf-8")))
    made: list[OperatorContext] = []

    def make(comfy_url: str, **settings: Any) -> OperatorContext:
        tuned = s3_settings.model_copy(update={"comfyui_url": comfy_url, "comfyui_poll_interval": 0.5, **settings})
        api = FlakyKubeApi(client.ApiClient(configuration=client.Configuration(host=kube_api_inprocess.base_url)))
        ctx = OperatorContext(
            settings=tuned, api=api, store=MinioStore(tuned), workflows=WorkflowLibrary([DEFAULT_WORKFLOWS_DIR]),
            scheduler=Scheduler([comfy_url], 4), clock=ScaledClock(SCALE),
        )
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        await ctx.close()


async def new_job(fake_kube: Any, ctx: OperatorContext, name: str, **spec: Any) -> dict[str, Any]:
    body = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 2, **spec}
    fake_kube.create_object(IMAGEJOBS, {"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob",
                                        "metadata": {"name": name, "namespace": "default"}, "spec": body})
    job = await ctx.api.get("default", name)
    assert job is not None
    return job


async def never() -> None:
    await asyncio.Event().wait()


def reasons(api: Any) -> list[str]:
    return [reason for _, reason, _ in api.events]


async def test_succeeded_status_that_never_lands_claims_nothing_and_the_retry_stores_without_rendering_again(
    make_ctx: Any, kube_api_inprocess: Any, comfyui: Any
) -> None:
    ctx = make_ctx(comfyui.url)
    api: FlakyKubeApi = ctx.api  # type: ignore[assignment]
    job = await new_job(kube_api_inprocess, ctx, "unlucky")
    uid = job["metadata"]["uid"]
    api.refuse_terminal = True
    task = asyncio.create_task(run_job(ctx, job, never, LOG))
    try:
        async with asyncio.timeout(30):
            while "StatusNotWritten" not in reasons(api):
                await asyncio.sleep(0.02)
        # Every retry of the terminal write failed: nothing may claim success.
        assert "Succeeded" not in reasons(api)
        assert api.refused >= 5
        stored = await ctx.api.get("default", "unlucky")
        # As last written: the submission write (Running and Uploading are staged for the next write,
        # which never landed); what resumes the job is the recorded submission, not the phase.
        assert stored is not None and stored["status"]["phase"] in ("Queued", "Running", "Uploading")
        assert stored["status"]["submissions"] == 1
        assert uid in comfyui.history, "the prompt's history was released although nothing recorded the result"

        api.refuse_terminal = False  # the API server recovers: the next attempt stores and records it
        async with asyncio.timeout(30):
            await task
    finally:
        task.cancel()
    done = await ctx.api.get("default", "unlucky")
    assert done is not None and done["status"]["phase"] == "Succeeded"
    assert done["status"]["submissions"] == 1 and comfyui.stats()["submissions"][uid] == 1  # rendered once
    assert reasons(api).count("Succeeded") == 1
    assert uid not in comfyui.history  # released once the result was on record


async def test_prompt_lost_after_the_last_resubmission_fails_at_once_as_prompt_lost(
    make_ctx: Any, kube_api_inprocess: Any, comfyui: Any
) -> None:
    ctx = make_ctx(comfyui.url)
    comfyui.configure(lose_next_prompt=2)
    job = await new_job(kube_api_inprocess, ctx, "lost-twice", timeoutSeconds=3600)
    started = ctx.clock.now()
    async with asyncio.timeout(30):
        await run_job(ctx, job, never, LOG)
    done = await ctx.api.get("default", "lost-twice")
    assert done is not None
    status = done["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "PromptLost"), status
    assert status["submissions"] == 2 and comfyui.stats()["submissions"][job["metadata"]["uid"]] == 2
    assert ctx.clock.now() - started < 600, "it waited for the deadline instead of failing at once"


async def test_a_job_that_gives_up_at_its_deadline_keeps_the_last_cause(
    make_ctx: Any, kube_api_inprocess: Any, comfyui: Any
) -> None:
    ctx = make_ctx(comfyui.url, minio_endpoint="127.0.0.1:9")  # nothing listens there
    job = await new_job(kube_api_inprocess, ctx, "no-s3", timeoutSeconds=45)
    async with asyncio.timeout(60):
        await run_job(ctx, job, never, LOG)
    done = await ctx.api.get("default", "no-s3")
    assert done is not None
    status = done["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded"), status
    expected = "the job did not finish within 45 s; last error: S3 at http://127.0.0.1:9 "
    assert status["message"].startswith(expected), status
    assert "unreachable" in status["message"]
    assert comfyui.stats()["submissions"] == {}  # nothing rendered while the images could not be stored
