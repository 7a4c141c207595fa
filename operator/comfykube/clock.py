"""Time, injectable.

Deadlines, poll intervals and backoffs all go through a `Clock`, so a test can
run a "534 s" CPU-mode job in a few real seconds: `ScaledClock(100)` makes
every simulated second last 10 ms, on both sides of the socket when the
ComfyUI stand-in is given the same factor.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


class Clock:
    """Real time: wall clock for deadlines that survive restarts, monotonic for intervals."""

    def now(self) -> float:
        """Seconds since the epoch (comparable across processes, stored in status)."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of this clock's time."""
        await asyncio.sleep(max(0.0, seconds))

    def real_seconds(self, seconds: float) -> float:
        """How long `seconds` of this clock's time take in real time."""
        return seconds


class ScaledClock(Clock):
    """Time that runs `factor` times faster than real time, starting now."""

    def __init__(self, factor: float) -> None:
        if factor <= 0:
            raise ValueError("factor must be positive")
        self.factor = factor
        self._origin_real = time.time()

    def now(self) -> float:
        """Scaled wall-clock seconds since the epoch."""
        real = time.time()
        return self._origin_real + (real - self._origin_real) * self.factor

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of scaled time (seconds / factor of real time)."""
        await asyncio.sleep(max(0.0, seconds) / self.factor)

    def real_seconds(self, seconds: float) -> float:
        """Real seconds that `seconds` of scaled time take."""
        return seconds / self.factor


#: The clock used when none is given.
REAL_CLOCK = Clock()


def rfc3339(moment: datetime) -> str:
    """`2026-11-29T10:00:00Z`: the timestamp format Kubernetes uses."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> float | None:
    """RFC 3339 → epoch seconds (None, empty or unreadable → None: status fields are data)."""
    if not value or not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def now_rfc3339(clock: Clock) -> str:
    """The clock's now, as RFC 3339 (always through a clock, so tests can move time)."""
    return rfc3339(datetime.fromtimestamp(clock.now(), UTC))
