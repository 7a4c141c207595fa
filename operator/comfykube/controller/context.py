"""What every handler of one operator process shares: settings, clients, store, scheduler."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from comfykube.clock import REAL_CLOCK, Clock
from comfykube.comfyui.client import ComfyClient
from comfykube.controller.backends import BackendPool
from comfykube.controller.scheduler import Scheduler
from comfykube.controller.shard import Selector
from comfykube.kube import KubeApi
from comfykube.pipeline import Pipeline
from comfykube.settings import Settings
from comfykube.storage import ObjectStore, make_store
from comfykube.workflows import WorkflowLibrary

log = logging.getLogger(__name__)

#: Clients kept for backends that are no longer in the pool (discovery churn) before the
#: least recently used are closed: the cache holds the pool plus at most this many.
MAX_SPARE_CLIENTS = 4


@dataclass
class OperatorContext:
    """Built once at start-up; handlers reach it through kopf's memo."""

    settings: Settings
    api: KubeApi
    store: ObjectStore
    workflows: WorkflowLibrary
    scheduler: Scheduler
    clock: Clock = REAL_CLOCK
    #: One client per backend: one WebSocket per backend for all jobs of this process.
    clients: dict[str, ComfyClient] = field(default_factory=dict)
    client_id: str = field(default_factory=lambda: f"comfykube-{uuid.uuid4().hex[:12]}")
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    #: Finished jobs by (namespace, name), for TTL deletes and URL refresh (see maintenance).
    finished: dict[tuple[str, str], Any] = field(default_factory=dict)
    ready: bool = False
    pool: BackendPool | None = None
    #: Namespaces watched (None: all), for the maintenance loop's own listing.
    namespaces: list[str] | None = None
    _closing: set[asyncio.Task[None]] = field(default_factory=set)
    #: This operator's shard: only ImageJobs with these labels are its own.
    selector: Selector = field(default_factory=lambda: Selector.parse(None))

    @classmethod
    async def create(cls, settings: Settings, *, clock: Clock = REAL_CLOCK) -> OperatorContext:
        """Connect to the API server and build the shared parts from settings."""
        api = await KubeApi.connect()
        cap = settings.max_inflight_per_backend
        ctx = cls(
            settings=settings,
            api=api,
            store=make_store(settings),
            workflows=WorkflowLibrary.from_settings(settings),
            scheduler=Scheduler([], cap),
            clock=clock,
        )
        ctx.pool = BackendPool(ctx.scheduler, ctx.client, interval=settings.backend_check_interval, clock=clock)
        ctx.scheduler.load = ctx.pool.load
        return ctx

    def default_backend(self) -> str:
        """A backend for calls that are not tied to one (the first known)."""
        return (self.scheduler.backends or self.settings.comfyui_urls)[0]

    def known_backends(self) -> list[str]:
        """The backends of the pool (configured, or discovered from the Service)."""
        if self.scheduler.backends:
            return list(self.scheduler.backends)
        return [] if self.settings.comfyui_discovery_service else self.settings.comfyui_urls

    def pool_backend(self, recorded: object) -> str | None:
        """`recorded` (e.g. status.backend) when it names a backend of the pool, else None.

        Status is data anyone with write access to the object can set: calling whatever
        URL it names would let it point the operator at any host (cloud metadata, an
        internal service). Only backends this deployment configured or discovered are used.
        """
        if not isinstance(recorded, str):
            return None
        url = recorded.strip().rstrip("/")
        return url if url in self.known_backends() else None

    def client(self, backend: str) -> ComfyClient:
        """The (lazily created, cached) client of one backend; the cache is bounded."""
        client = self.clients.pop(backend, None)
        if client is None:
            client = ComfyClient(
                backend,
                client_id=self.client_id,
                timeout=self.settings.comfyui_request_timeout,
                clock=self.clock,
                refused_grace=self.settings.comfyui_refused_grace,
            )
        self.clients[backend] = client  # re-inserted: the dict's order is least recently used first
        self._evict()
        return client

    def _evict(self) -> None:
        """Close the least recently used clients of backends outside the pool beyond the spare allowance."""
        known = set(self.known_backends())
        stale = [url for url in self.clients if url not in known]
        for url in stale[: max(0, len(stale) - MAX_SPARE_CLIENTS)]:
            client = self.clients.pop(url)
            self.pipelines.pop(url, None)
            log.info("closing the client of %s (no longer in the pool)", url)
            try:
                task = asyncio.get_running_loop().create_task(client.aclose())
            except RuntimeError:  # no loop (tests building a context): nothing is open yet
                continue
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def pipeline(self, backend: str) -> Pipeline:
        """The pipeline bound to one backend (clients and store are shared)."""
        if backend in self.pipelines:
            return self.pipelines[backend]
        self.pipelines[backend] = Pipeline.from_settings(
            self.settings, comfy=self.client(backend), store=self.store, workflows=self.workflows, clock=self.clock
        )
        return self.pipelines[backend]

    async def close(self) -> None:
        """Close every client and the API session."""
        if self.pool is not None:
            await self.pool.stop()
        for client in self.clients.values():
            await client.aclose()
        await self.api.close()
