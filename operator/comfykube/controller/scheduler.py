"""Admission of jobs to ComfyUI backends: bounded, FIFO, fair per requester.

Each backend takes at most `cap` jobs in flight (submitted and not yet finished
in ComfyUI). The cap is a queue-feeder, not a throttle: with cap ≥ 2 ComfyUI
always has the next prompt queued. A job hands its slot on (`hand_off`) as soon
as ComfyUI has finished it, so the next prompt is submitted while this one's
images are downloaded, checked and stored: ComfyUI never waits for our I/O.
Jobs over the cap wait here, in order of creation, but a requester with fewer
jobs in flight goes first, so one person's burst of 50 cannot starve everyone
else.

Costs stay flat with thousands of waiting jobs: waiters are kept per requester
in a heap (oldest first), an admission looks at the requesters (few) and the
heads of their heaps, and nothing is scanned when no backend has room.
"""

from __future__ import annotations

import asyncio
import heapq
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
    #: Left the queue (admitted or cancelled); heaps drop such entries lazily.
    gone: bool = field(default=False, compare=False)


class Scheduler:
    """Hands out backend slots; `slot()` waits for one."""

    def __init__(self, backends: list[str], cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap = cap
        self.backends: list[str] = list(backends)
        self._rank: dict[str, int] = {b: i for i, b in enumerate(self.backends)}
        self.inflight: dict[str, int] = {backend: 0 for backend in backends}
        self.by_requester: dict[str, int] = {}
        #: When each requester was last admitted (a counter): round-robin between requesters.
        self.last_served: dict[str, int] = {}
        self._admissions = itertools.count()
        #: Waiting jobs per requester, oldest first (a heap with lazily dropped `gone` entries).
        self._queues: dict[str, list[_Waiter]] = {}
        self._waiting: dict[str, _Waiter] = {}
        #: Slots held, by job key: (backend, requester); `hand_off` gives one back early.
        self._held: dict[str, tuple[str, str]] = {}
        self._seq = itertools.count()
        self.unhealthy: set[str] = set()
        #: Work ahead on a backend that is not ours (its queue depth); set by the backend pool.
        self.load: Callable[[str], float] = lambda _backend: 0.0

    @property
    def waiters(self) -> list[_Waiter]:
        """The waiting jobs (in no particular order)."""
        return list(self._waiting.values())

    def set_backends(self, backends: list[str]) -> None:
        """Replace the backend list (discovery); jobs in flight keep their slots."""
        self.backends = list(backends)
        self._rank = {b: i for i, b in enumerate(self.backends)}
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
        if self._waiting:
            return False
        check = eligible or _any
        return any(check(b) for b in self._open_backends())

    def position(self, key: str) -> int | None:
        """How many waiting jobs go before `key` (None when it is not waiting). O(n log n): for display."""
        if key not in self._waiting:
            return None
        order = sorted(self._waiting.values(), key=self._order_key)
        return next(index for index, waiter in enumerate(order) if waiter.key == key)

    @asynccontextmanager
    async def slot(
        self,
        key: str,
        *,
        requester: str = "",
        created: float = 0.0,
        eligible: Callable[[str], bool] | None = None,
    ) -> AsyncIterator[str]:
        """Wait for a slot on an eligible backend; yields the backend's URL.

        The slot is given back when the block ends, or earlier by `hand_off(key)`.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(created, next(self._seq), key, requester, loop.create_future(), eligible or _any)
        self._waiting[key] = waiter
        heapq.heappush(self._queues.setdefault(requester, []), waiter)
        self._dispatch()
        try:
            backend = await waiter.future
        except BaseException:
            if not waiter.gone:
                self._leave(waiter)
            elif waiter.future.done() and not waiter.future.cancelled():
                self.hand_off(key)
            raise
        try:
            yield backend
        finally:
            self.hand_off(key)

    def hand_off(self, key: str) -> None:
        """Give the slot of `key` back now (its prompt finished in ComfyUI); idempotent."""
        held = self._held.pop(key, None)
        if held is not None:
            self._release(*held)

    def _leave(self, waiter: _Waiter) -> None:
        waiter.gone = True
        if self._waiting.get(waiter.key) is waiter:
            del self._waiting[waiter.key]

    def _release(self, backend: str, requester: str) -> None:
        self.inflight[backend] = max(0, self.inflight.get(backend, 0) - 1)
        metrics.BACKEND_INFLIGHT.labels(backend).set(self.inflight[backend])
        count = self.by_requester.get(requester, 0) - 1
        if count > 0:
            self.by_requester[requester] = count
        else:
            self.by_requester.pop(requester, None)
        self._dispatch()

    def _order_key(self, w: _Waiter) -> tuple[int, int, float, int]:
        # Fair share: fewest jobs in flight first, then the requester served longest ago
        # (round-robin), then oldest first (FIFO within one requester).
        return (self.by_requester.get(w.requester, 0), self.last_served.get(w.requester, -1), w.created, w.seq)

    def _open_backends(self) -> list[str]:
        return [b for b in self.backends if b not in self.unhealthy and self.inflight.get(b, 0) < self.cap]

    def _free_backend(self, waiter: _Waiter, open_backends: list[str]) -> str | None:
        candidates = [b for b in open_backends if waiter.eligible(b)]
        if not candidates:
            return None
        # Shortest expected wait: our jobs in flight there plus other people's queued prompts.
        return min(candidates, key=lambda b: (self.inflight.get(b, 0) + self.load(b), self._rank.get(b, 0)))

    def _head(self, requester: str) -> _Waiter | None:
        queue = self._queues.get(requester)
        while queue and queue[0].gone:
            heapq.heappop(queue)
        if not queue:
            self._queues.pop(requester, None)
            return None
        return queue[0]

    def _dispatch(self) -> None:
        while self._waiting:
            open_backends = self._open_backends()
            if not open_backends:
                return  # nothing can start: look at no waiter
            heads = [w for w in (self._head(r) for r in list(self._queues)) if w is not None]
            admitted = False
            for head in sorted(heads, key=self._order_key):
                waiter, backend = self._first_fit(head.requester, open_backends)
                if waiter is None or backend is None:
                    continue
                self._admit(waiter, backend)
                admitted = True
                break
            if not admitted:
                return

    def _first_fit(self, requester: str, open_backends: list[str]) -> tuple[_Waiter | None, str | None]:
        """The oldest waiter of `requester` that some open backend takes (usually the head)."""
        queue = self._queues.get(requester) or []
        skipped: list[_Waiter] = []
        found: tuple[_Waiter | None, str | None] = (None, None)
        while queue:
            waiter = heapq.heappop(queue)
            if waiter.gone:
                continue
            if waiter.future.done():  # cancelled while waiting
                self._leave(waiter)
                continue
            backend = self._free_backend(waiter, open_backends)
            if backend is not None:
                found = (waiter, backend)
                break
            skipped.append(waiter)
        for waiter in skipped:
            heapq.heappush(queue, waiter)
        return found

    def _admit(self, waiter: _Waiter, backend: str) -> None:
        self._leave(waiter)
        self.inflight[backend] = self.inflight.get(backend, 0) + 1
        metrics.BACKEND_INFLIGHT.labels(backend).set(self.inflight[backend])
        self.by_requester[waiter.requester] = self.by_requester.get(waiter.requester, 0) + 1
        self.last_served[waiter.requester] = next(self._admissions)
        self._held[waiter.key] = (backend, waiter.requester)
        waiter.future.set_result(backend)


def _any(_: str) -> bool:
    return True
