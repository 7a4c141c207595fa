"""The pool of ComfyUI backends: health with backoff, queue depth, installed checkpoints.

One monitor task per backend checks it every few seconds (slower while it is
down) and tells the scheduler: an unhealthy backend is drained (no new jobs),
and the scheduler prefers the backend with the shortest expected wait. The
backend list can change at run time (EndpointSlice discovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from comfykube import metrics
from comfykube.clock import REAL_CLOCK, Clock
from comfykube.comfyui.client import ComfyClient
from comfykube.controller.scheduler import Scheduler
from comfykube.errors import JobError

log = logging.getLogger(__name__)


@dataclass
class BackendState:
    """What the monitor last learned about one backend."""

    url: str
    healthy: bool = False
    checked: bool = False
    queue_depth: int = 0
    checkpoints: list[str] | None = None
    failures: int = 0
    #: Why the last health check failed (for messages about waiting jobs).
    error: str | None = None


@dataclass
class BackendPool:
    """Monitors backends and feeds the scheduler; `eligible()` filters by checkpoint."""

    scheduler: Scheduler
    client: Callable[[str], ComfyClient]
    interval: float = 5.0
    max_interval: float = 15.0
    clock: Clock = REAL_CLOCK
    states: dict[str, BackendState] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def set_backends(self, urls: list[str]) -> None:
        """Start monitoring new backends, stop the removed ones, tell the scheduler."""
        wanted = list(dict.fromkeys(urls))
        for url in list(self._tasks):
            if url not in wanted:
                self._tasks.pop(url).cancel()
                self.states.pop(url, None)
                metrics.BACKEND_UP.labels(url).set(0)
                log.info("backend %s removed from the pool", url)
        for url in wanted:
            if url not in self._tasks:
                self.states[url] = BackendState(url)
                self._tasks[url] = asyncio.create_task(self._monitor(url), name=f"monitor {url}")
                log.info("backend %s added to the pool", url)
        self.scheduler.set_backends(wanted)

    async def stop(self) -> None:
        """Cancel every monitor."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    def load(self, url: str) -> float:
        """Prompts in the backend's queue that are not ours (ours count as in flight)."""
        state = self.states.get(url)
        if state is None:
            return 0.0
        return max(0, state.queue_depth - self.scheduler.inflight.get(url, 0))

    def has_checkpoint(self, url: str, checkpoint: str | None) -> bool:
        """Whether a job naming `checkpoint` may go to this backend.

        A monitored backend whose list is not known yet (its first check is still under
        way) is not eligible for a named checkpoint: sending the job there would fail its
        preflight for good when another backend has the model.
        """
        state = self.states.get(url)
        if checkpoint is None or state is None:
            return True
        if state.checkpoints is None:
            return False
        return checkpoint in state.checkpoints

    def outage(self) -> str | None:
        """Why no job can start anywhere: every known backend failed its health check (else None)."""
        states = [self.states.get(url) for url in self.scheduler.backends]
        if not states or not all(s is not None and s.checked and not s.healthy for s in states):
            return None
        return "; ".join(s.error or f"{s.url} is unhealthy" for s in states if s is not None)

    def nobody_has(self, checkpoint: str | None) -> list[str] | None:
        """All installed checkpoints when every checked backend lacks `checkpoint`, else None."""
        if checkpoint is None:
            return None
        known = [s for s in self.states.values() if s.checkpoints is not None]
        if not known or len(known) < len(self.states):
            return None
        if any(checkpoint in (s.checkpoints or []) for s in known):
            return None
        return sorted({name for s in known for name in s.checkpoints or []})

    async def check(self, url: str) -> bool:
        """One health check of one backend; updates its state, the scheduler and metrics."""
        state = self.states.setdefault(url, BackendState(url))
        client = self.client(url)
        try:
            report = await client.health(retries=0)
            state.checkpoints = await client.checkpoints(fresh=False)
            if not state.healthy:
                # Warm the client's node-info cache now, so the first job's preflight needs no request
                # (best effort: preflight asks again and explains a failure).
                with contextlib.suppress(JobError):
                    await client.sampler_options()
        except JobError as exc:
            state.failures += 1
            state.error = exc.message
            if state.healthy or not state.checked:
                log.warning("backend %s is unhealthy, draining it: %s", url, exc.message)
            state.healthy = False
        else:
            if not state.healthy and state.checked:
                log.info("backend %s is healthy again", url)
            state.healthy = True
            state.failures = 0
            state.error = None
            state.queue_depth = report.queue_length
        state.checked = True
        self.scheduler.mark(url, state.healthy)
        metrics.BACKEND_UP.labels(url).set(1 if state.healthy else 0)
        metrics.BACKEND_QUEUE.labels(url).set(state.queue_depth)
        return state.healthy

    async def _monitor(self, url: str) -> None:
        while True:
            healthy = await self.check(url)
            failures = self.states[url].failures if url in self.states else 0
            delay = self.interval if healthy else min(self.max_interval, self.interval * 2 ** min(failures, 5))
            await self.clock.sleep(delay)
