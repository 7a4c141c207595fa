"""Admission of jobs to ComfyUI backends: bounded, FIFO, fair per requester.

Each backend takes at most `cap` jobs in flight (submitted and not yet
stored). The cap is a queue-feeder, not a throttle: with cap ≥ 2 ComfyUI
always has the next prompt queued while we download and upload the last
one, so it never sits idle. Jobs over the cap wait here, in order of
creation, but a requester with fewer jobs in flight goes first, so one
person's burst of 50 cannot starve everyone else.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from comfykube import metrics


@dataclass(order=True)
class _Waiter:
    created: float
    seq: int
    key: str = field(compare=False)
    requester: str = field(compare=False)
    future: asyncio.Future[str] = field(compare=False)
    eligible: Callable[[str], bool] = field(compare=False)


class Scheduler:
    """Hands out backend slots; `slot()` waits for one."""

    def __init__(self, backends: list[str], cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap = cap
        self.backends: list[str] = list(backends)
        self.inflight: dict[str, int] = {backend: 0 for backend in backends}
        self.by_requester: dict[str, int] = {}
        #: When each requester was last admitted (a counter): round-robin between requesters.
        self.last_served: dict[str, int] = {}
        self._admissions = itertools.count()
        self.waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self.unhealthy: set[str] = set()
        #: Work ahead on a backend that is not ours (its queue depth); set by the backend pool.
        self.load: Callable[[str], float] = lambda _backend: 0.0

    def set_backends(self, backends: list[str]) -> None:
        """Replace the backend list (discovery); jobs in flight keep their slots."""
        self.backends = list(backends)
        for backend in backends:
            self.inflight.setdefault(backend, 0)
        self._dispatch()

    def mark(self, backend: str, healthy: bool) -> None:
        """Drain (or restore) a backend: no new jobs go to an unhealthy one."""
        if healthy:
            self.unhealthy.discard(backend)
            self._dispatch()
        else:
            self.unhealthy.add(backend)

    def has_room(self, eligible: Callable[[str], bool] | None = None) -> bool:
        """True when a new job would get a slot at once (nobody waiting, a backend under its cap)."""
        if self.waiters:
            return False
        check = eligible or _any
        return any(
            b not in self.unhealthy and self.inflight.get(b, 0) < self.cap and check(b) for b in self.backends
        )

    def position(self, key: str) -> int | None:
        """How many waiting jobs go before `key` (None when it is not waiting)."""
        order = self._order()
        for index, waiter in enumerate(order):
            if waiter.key == key:
                return index
        return None

    @asynccontextmanager
    async def slot(
        self,
        key: str,
        *,
        requester: str = "",
        created: float = 0.0,
        eligible: Callable[[str], bool] | None = None,
    ) -> AsyncIterator[str]:
        """Wait for a slot on an eligible backend; yields the backend's URL."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(created, next(self._seq), key, requester, loop.create_future(), eligible or _any)
        self.waiters.append(waiter)
        self._dispatch()
        try:
            backend = await waiter.future
        except BaseException:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            elif waiter.future.done() and not waiter.future.cancelled():
                self._release(waiter.future.result(), requester)
            raise
        try:
            yield backend
        finally:
            self._release(backend, requester)

    def _release(self, backend: str, requester: str) -> None:
        self.inflight[backend] = max(0, self.inflight.get(backend, 0) - 1)
        metrics.BACKEND_INFLIGHT.labels(backend).set(self.inflight[backend])
        count = self.by_requester.get(requester, 0) - 1
        if count > 0:
            self.by_requester[requester] = count
        else:
            self.by_requester.pop(requester, None)
        self._dispatch()

    def _order(self) -> list[_Waiter]:
        # Fair share: fewest jobs in flight first, then the requester served longest ago
        # (round-robin), then oldest first (FIFO within one requester).
        return sorted(
            self.waiters,
            key=lambda w: (self.by_requester.get(w.requester, 0), self.last_served.get(w.requester, -1), w.created,
                           w.seq),
        )

    def _free_backend(self, waiter: _Waiter) -> str | None:
        candidates = [
            b
            for b in self.backends
            if b not in self.unhealthy and self.inflight.get(b, 0) < self.cap and waiter.eligible(b)
        ]
        if not candidates:
            return None
        # Shortest expected wait: our jobs in flight there plus other people's queued prompts.
        return min(candidates, key=lambda b: (self.inflight.get(b, 0) + self.load(b), self.backends.index(b)))

    def _dispatch(self) -> None:
        progressed = True
        while progressed and self.waiters:
            progressed = False
            for waiter in self._order():
                if waiter.future.done():
                    self.waiters.remove(waiter)
                    progressed = True
                    break
                backend = self._free_backend(waiter)
                if backend is None:
                    continue
                self.waiters.remove(waiter)
                self.inflight[backend] = self.inflight.get(backend, 0) + 1
                metrics.BACKEND_INFLIGHT.labels(backend).set(self.inflight[backend])
                self.by_requester[waiter.requester] = self.by_requester.get(waiter.requester, 0) + 1
                self.last_served[waiter.requester] = next(self._admissions)
                waiter.future.set_result(backend)
                progressed = True
                break


def _any(_: str) -> bool:
    return True
