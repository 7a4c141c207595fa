"""`comfykube operator`: kopf settings, start-up, probes, and the run itself."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterable
from typing import Any, cast

import kopf
from aiohttp import web
from pydantic import ValidationError

from comfykube import tempfiles
from comfykube.controller import handlers, maintenance
from comfykube.controller.context import OperatorContext
from comfykube.controller.discovery import follow_service
from comfykube.controller.shard import Selector
from comfykube.names import FINALIZER, KOPF_ANNOTATION_PREFIX, LABEL_FINISHED
from comfykube.settings import Settings, describe_settings_error
from comfykube.types import API_GROUP, PLURAL

log = logging.getLogger(__name__)

_state: dict[str, Any] = {}


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff base that is always "nothing changed": for handlers that never look at diffs.

    With it, kopf sees every event as a no-op change (or a resume) except deletions, which
    it detects from `deletionTimestamp` before any diff; that is all `on.delete` needs.
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        """Nothing of the object is tracked."""
        return cast(kopf.BodyEssence, {})  # a fresh one: kopf may edit what it gets

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        """As if the object had been handled as it is now."""
        return cast(kopf.BodyEssence, {})  # a fresh one: kopf may edit what it gets

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Nothing to store."""


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings for a job-like resource (see docs/operator.md for why)."""
    settings.persistence.finalizer = FINALIZER
    # Keep kopf's bookkeeping out of .status: the status is ours and shown to users.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_ANNOTATION_PREFIX)
    # No create/update/resume handlers, so no diff is ever needed: kopf's default would write a
    # last-handled-configuration annotation on every job (one patch, and one more watch event)
    # and deep-copy every object on every watch event to compare with it.
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING  # our own Events are posted explicitly
    settings.watching.server_timeout = 300  # silently dead streams reconnect
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.scanning.disabled = True  # no cluster-wide discovery of CRDs needed: we know ours
    selector: Selector = _state.get("selector") or Selector.parse(None)
    # Server-side: kopf lists and watches only this shard's jobs, so it never touches another's,
    # and only those not released as finished (release.py), so a restart does not walk them all.
    settings.watching.label_selectors[API_GROUP, PLURAL] = ",".join(
        part for part in (selector.text, f"!{LABEL_FINISHED}") if part
    )


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure(settings)
    await asyncio.to_thread(tempfiles.sweep)  # downloads a killed operator left behind
    ctx = await OperatorContext.create(Settings())
    ctx.namespaces = _state.get("namespaces")
    ctx.selector = _state.get("selector") or Selector.parse(None)
    memo["ctx"] = ctx
    _state["ctx"] = ctx
    _state["maintenance"] = asyncio.create_task(maintenance.run(ctx, ctx.settings.maintenance_interval_seconds))
    assert ctx.pool is not None
    service = ctx.settings.comfyui_discovery_service
    if service:
        namespace = ctx.settings.comfyui_discovery_namespace or "default"
        _state["discovery"] = asyncio.create_task(
            follow_service(
                ctx.api.api_client, namespace, service, ctx.pool.set_backends,
                default_port=ctx.settings.comfyui_discovery_port,
            )
        )
    else:
        ctx.pool.set_backends(ctx.settings.comfyui_urls)
    _state["warm"] = asyncio.create_task(_warm_store(ctx))
    ctx.ready = True
    log.info(
        "comfykube operator ready: backends %s, store %s, workflows %s, jobs %s",
        f"from Service {service}" if service else ", ".join(ctx.settings.comfyui_urls),
        ctx.store.describe(),
        ", ".join(ctx.workflows.names()),
        f"labelled {ctx.selector.text}" if ctx.selector else "all",
    )


async def _warm_store(ctx: OperatorContext) -> None:
    """Open the store's connections (bucket check, region) before the first job needs them.

    Best effort and in the background: the pipeline still checks the store before
    submitting, and says why if it is not ready.
    """
    try:
        await ctx.store.ensure_ready()
    except Exception as exc:  # the first job reports it properly
        log.warning("object store not ready yet: %s", exc)


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    for key in ("maintenance", "discovery", "warm"):
        task = _state.pop(key, None)
        if task is not None:
            task.cancel()
    ctx: OperatorContext | None = memo.get("ctx")
    if ctx is not None:
        ctx.ready = False
        await ctx.close()


async def start_probes(port: int) -> web.AppRunner:
    """/healthz (the loop answers) and /readyz (start-up finished, API reachable)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        ctx = _state.get("ctx")
        if ctx is None or not ctx.ready:
            return web.Response(status=503, text="starting")
        return web.Response(text="ready")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


def run_operator(
    *,
    namespaces: list[str],
    all_namespaces: bool,
    health_port: int,
    metrics_port: int,
    selector: str | None = None,
) -> int:
    """Run until SIGINT/SIGTERM. Returns the process exit code.

    `selector` (else OPERATOR_SELECTOR) limits the operator to one shard's ImageJobs.
    """
    try:
        settings = Settings()
        parsed = Selector.parse(selector if selector is not None else settings.operator_selector)
    except ValidationError as exc:  # fail at start, naming the variable, not at the first job
        print(f"comfykube operator: bad configuration: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"comfykube operator: bad --selector: {exc}", file=sys.stderr)
        return 2
    _state["selector"] = parsed
    if not namespaces and not all_namespaces:
        namespaces = ["default"]
    assert handlers  # imported for its kopf registrations
    _state["namespaces"] = None if all_namespaces else list(namespaces)

    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)

    async def main() -> None:
        probes = await start_probes(health_port) if health_port else None
        try:
            await kopf.operator(
                standalone=True,
                clusterwide=all_namespaces,
                namespaces=[] if all_namespaces else namespaces,
            )
        finally:
            if probes is not None:
                await probes.cleanup()

    asyncio.run(main())
    return 0
