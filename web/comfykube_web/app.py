"""The web process: the aiohttp application, its health server, and `comfykube web`.

`build_app()` wires the parts (index, feed, links, views, live updates, auth, headers)
for tests and the benchmark; `serve()` runs them until cancelled; `run_web()` is the
CLI's entry point (settings from the environment, SIGTERM stops it cleanly).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from comfykube.kube import KubeApi
from comfykube.settings import Settings
from comfykube.storage import MinioStore, ObjectStore, make_store
from comfykube_web.auth import Authenticator
from comfykube_web.cards import CardCache
from comfykube_web.feed import Feed
from comfykube_web.index import JobIndex
from comfykube_web.links import Links, origin_of
from comfykube_web.security import header_setter
from comfykube_web.settings import WebSettings
from comfykube_web.stream import Streams
from comfykube_web.views import Views, make_templates

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
#: Where the app keeps its parts (`app[PARTS]`).
PARTS: web.AppKey[Parts] = web.AppKey("comfykube_web.parts")


@dataclass
class Parts:
    """What one gallery server is made of."""

    settings: WebSettings
    index: JobIndex
    feed: Feed
    links: Links
    streams: Streams
    views: Views


def image_origins(store: ObjectStore) -> list[str]:
    """Origins presigned URLs point at (for img-src)."""
    if isinstance(store, MinioStore):
        origin = origin_of(store.public_endpoint or store.url)
        return [origin] if origin else []
    return []


def build_app(settings: WebSettings, kube: KubeApi, store: ObjectStore, presign_seconds: int) -> web.Application:
    """The gallery application (the feed starts with the app and stops with it)."""
    index = JobIndex()
    links = Links(store, presign_seconds)
    feed = Feed(kube, index, settings.watched)
    cards = CardCache(links, index)
    streams = Streams(index, cards, interval=settings.update_interval, limit=settings.max_streams)
    views = Views(settings=settings, index=index, links=links, kube=kube, templates=make_templates(), cards=cards)
    app = web.Application(middlewares=[Authenticator(settings).middleware])
    app[PARTS] = Parts(settings, index, feed, links, streams, views)
    app.on_response_prepare.append(header_setter(image_origins(store)))
    app.add_routes(
        [
            web.get("/", views.grid),
            web.get("/jobs/{namespace}/{name}", views.job_page),
            web.get("/api/jobs", views.jobs_json),
            web.get("/api/jobs/{namespace}/{name}", views.job_json),
            web.get("/api/stream", streams.handle),
            web.static("/static", STATIC, append_version=True),
        ]
    )

    async def start_feed(_app: web.Application) -> None:
        feed.start()

    async def stop_feed(_app: web.Application) -> None:
        await feed.stop()

    app.on_startup.append(start_feed)
    app.on_cleanup.append(stop_feed)
    return app


def health_app(parts: Parts) -> web.Application:
    """/healthz (the loop answers) and /readyz (the first list is in the index)."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        if not parts.feed.ready:
            return web.Response(status=503, text="ImageJobs not listed yet\n")
        return web.Response(text="ready\n")

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return app


async def serve(settings: WebSettings, storage: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the gallery (and its health server) until `stop` is set or the task is cancelled."""
    kube = await KubeApi.connect()
    store = make_store(storage)
    app = build_app(settings, kube, store, storage.presign_expiry_seconds)
    runners: list[web.AppRunner] = []
    try:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log.info("gallery on http://%s:%d (auth %s, namespaces %s, images in %s)", settings.host,
                 settings.port, settings.auth.value, ", ".join(settings.watched or ["all"]), store.describe())
        if settings.health_port:
            health = web.AppRunner(health_app(app[PARTS]), access_log=None, handle_signals=False)
            await health.setup()
            runners.append(health)
            await web.TCPSite(health, "0.0.0.0", settings.health_port).start()
        await (stop or asyncio.Event()).wait()
    finally:
        for each in reversed(runners):
            await each.cleanup()
        await kube.close()


def run_web(namespaces: list[str] | None = None, all_namespaces: bool = False,
            host: str | None = None, port: int | None = None) -> int:
    """`comfykube web`: flags override the WEB_* environment; 2 on bad configuration."""
    from pydantic import ValidationError

    overrides: dict[str, object] = {}
    if namespaces:
        overrides["namespaces"] = namespaces
    if all_namespaces:
        overrides["all_namespaces"] = True
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = WebSettings(**overrides)  # type: ignore[arg-type]
        storage = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ())) or "settings"
            log.error("bad configuration: %s: %s", where, error.get("msg"))
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(settings, storage, stop=stop)

    asyncio.run(main())
    return 0


__all__ = ["PARTS", "Parts", "build_app", "health_app", "run_web", "serve"]
