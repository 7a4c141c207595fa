"""`/healthz`, `/readyz` on the health port and `/metrics` on the metrics port (aiohttp).

- `/healthz` (liveness): the event loop answers and the client has not been
  closed. A stuck loop fails the probe by not answering at all.
- `/readyz` (readiness): logged in to the gateway and the ImageJob watch is
  established (so clicks and results are handled). The body says which part
  is missing.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web

from comfykube_bot.metrics import CONTENT_TYPE_LATEST, BotMetrics

log = logging.getLogger(__name__)


class Probed(Protocol):
    """What the probes look at (implemented by `main.ComfyBot`)."""

    #: True while the ImageJob watch runs (after the catch-up).
    watch_ready: bool

    def is_closed(self) -> bool:
        """The client has been closed."""
        ...

    def is_ready(self) -> bool:
        """Logged in to the gateway."""
        ...


class HealthServer:
    """The two small HTTP servers; port 0 disables one."""

    def __init__(self, probed: Probed, metrics: BotMetrics, *, host: str = "0.0.0.0") -> None:
        self.probed = probed
        self._metrics = metrics
        self.host = host
        self._runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = {}

    async def healthz(self, _request: web.Request) -> web.Response:
        """Liveness."""
        if self.probed.is_closed():
            return web.Response(status=503, text="closed\n")
        return web.Response(text="ok\n")

    async def readyz(self, _request: web.Request) -> web.Response:
        """Readiness: gateway session and ImageJob watch."""
        missing = []
        if not self.probed.is_ready():
            missing.append("discord gateway not ready")
        if not self.probed.watch_ready:
            missing.append("ImageJob watch not established")
        if missing:
            return web.Response(status=503, text="; ".join(missing) + "\n")
        return web.Response(text="ready\n")

    async def metrics(self, _request: web.Request) -> web.Response:
        """Prometheus text format."""
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _serve(self, name: str, port: int, routes: list[web.RouteDef]) -> None:
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.ports[name] = sockets[0].getsockname()[1] if sockets else port
        self._runners.append(runner)
        log.info("%s listening on %s:%s", name, self.host, self.ports[name])

    async def start(self, health_port: int | None, metrics_port: int | None) -> None:
        """Start the servers (None or 0 disables one; -1 picks a free port, for tests)."""
        if health_port:
            await self._serve(
                "health", max(health_port, 0), [web.get("/healthz", self.healthz), web.get("/readyz", self.readyz)]
            )
        if metrics_port:
            await self._serve("metrics", max(metrics_port, 0), [web.get("/metrics", self.metrics)])

    async def stop(self) -> None:
        """Stop both servers."""
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()


__all__ = ["HealthServer"]
