"""`status.backend` is data: cancel and delete only talk to backends of the pool; the client cache is bounded.

Anyone who may patch an ImageJob's status can write any URL into `status.backend`.
The delete handler and the runner's cancel must not send requests wherever it points.
Real parts: two ComfyUI stand-ins (one in the pool, one outside it), the Kubernetes
API stand-in for Events.
"""

from __future__ import annotations

import logging
from typing import Any

import yaml
from kubernetes_asyncio import client

from comfykube.controller import context as context_module
from comfykube.controller.context import OperatorContext
from comfykube.controller.scheduler import Scheduler
from comfykube.controller.teardown import on_job_deleted
from comfykube.kube import KubeApi
from comfykube.settings import DEFAULT_WORKFLOWS_DIR, Settings
from comfykube.storage import LocalStore
from comfykube.workflows import WorkflowLibrary
from tests.harness import REPO

LOG = logging.getLogger("test")


def make_context(fake: Any, settings: Settings, backends: list[str]) -> OperatorContext:
    fake.register_crd(yaml.safe_load((REPO / "crds" / "imagejob.yaml").read_text(encoding="utf-8")))
    api = KubeApi(client.ApiClient(configuration=client.Configuration(host=fake.base_url)))
    return OperatorContext(
        settings=settings, api=api, store=LocalStore(settings.output_dir),
        workflows=WorkflowLibrary([DEFAULT_WORKFLOWS_DIR]), scheduler=Scheduler(backends, 1),
    )


def running_body(backend: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "default", "name": "victim", "uid": "uid-trust-1"},
        "spec": {"prompt": "x"},
        "status": {"phase": "Running", "promptId": "uid-trust-1", "submissions": 1, "backend": backend},
    }


async def test_delete_does_not_call_a_backend_outside_the_pool(
    kube_api_inprocess: Any, comfyui_factory: Any, tmp_path: Any
) -> None:
    pool_member = await comfyui_factory()
    outsider = await comfyui_factory()
    settings = Settings(comfyui_url=pool_member.url, output_dir=tmp_path / "out")
    ctx = make_context(kube_api_inprocess, settings, [pool_member.url])
    try:
        await on_job_deleted(ctx, running_body(outsider.url), LOG)
        assert outsider.stats()["interrupts"] == [], "the operator called a URL taken from status"
        assert outsider.url not in ctx.clients
        events = kube_api_inprocess.list_objects("v1/events", "default")
        assert [e["reason"] for e in events] == ["CancelSkipped"]
        assert "not one of this operator's ComfyUI backends" in events[0]["message"]

        await on_job_deleted(ctx, running_body(pool_member.url + "/"), LOG)
        assert pool_member.stats()["interrupts"] == ["uid-trust-1"]
    finally:
        await ctx.close()


async def test_client_cache_is_bounded_to_the_pool_plus_a_few(tmp_path: Any) -> None:
    settings = Settings(comfyui_url="http://127.0.0.1:1", output_dir=tmp_path / "out")
    ctx = OperatorContext(
        settings=settings, api=None, store=LocalStore(settings.output_dir),  # type: ignore[arg-type]
        workflows=WorkflowLibrary([DEFAULT_WORKFLOWS_DIR]), scheduler=Scheduler(["http://pool:8188"], 1),
    )
    ctx.client("http://pool:8188")
    for i in range(50):  # backends that came and went (discovery), or URLs from elsewhere
        ctx.client(f"http://gone-{i}:8188")
    assert "http://pool:8188" in ctx.clients
    assert len(ctx.clients) <= 1 + context_module.MAX_SPARE_CLIENTS
    assert "http://gone-49:8188" in ctx.clients and "http://gone-0:8188" not in ctx.clients
    for c in list(ctx.clients.values()):
        await c.aclose()


def test_signed_urls_are_redacted_from_log_records_whoever_logs_them(caplog: Any) -> None:
    from comfykube import logsafe

    url = ("http://minio:9000/comfykube/default/fox/u/0.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
           "&X-Amz-Credential=key%2F20261202%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=abcdef")
    logsafe.install([caplog.handler])
    lib = logging.getLogger("discord.http")
    lib.warning("POST with %s has returned 200", {"components": [{"url": url}]})
    try:
        raise ValueError(f"could not fetch {url}")
    except ValueError:
        lib.exception("failed")
    text = caplog.text
    assert "X-Amz-Signature" not in text and "X-Amz-Credential" not in text
    assert "http://minio:9000/comfykube/default/fox/u/0.png?<redacted>" in text
    assert logsafe.redact("see https://example.com/page?q=1") == "see https://example.com/page?q=1"
