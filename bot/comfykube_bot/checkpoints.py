"""The checkpoints ComfyUI offers, cached in memory for autocomplete and re-checked on submit.

Autocomplete has the same 3 s deadline as any interaction, so it is served
from memory only; a background task refreshes the list every
`BOT_CHECKPOINT_REFRESH_SECONDS` and keeps the old list when ComfyUI does not
answer. With several backends (`COMFYUI_URL` is a comma list) the offer is the
union of their lists.

On submit, a model missing from the cache triggers one fresh fetch before
the request is refused (it may have been installed a minute ago). When
ComfyUI cannot be asked at all, the request goes through: the operator's
preflight checks the checkpoint again and says which ones exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from comfykube.comfyui.client import ComfyClient
from comfykube.errors import JobError

log = logging.getLogger(__name__)


class CheckpointCache:
    """In-memory checkpoint list with background refresh."""

    def __init__(self, urls: list[str], *, refresh_seconds: float = 60.0, timeout: float = 5.0) -> None:
        self.urls = urls
        self.refresh_seconds = refresh_seconds
        self.timeout = timeout
        self.names: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> bool:
        """Fetch the lists now; True when at least one backend answered (the cache was replaced)."""
        async with self._lock:
            found: set[str] = set()
            answered = False
            for url in self.urls:
                client = ComfyClient(url, timeout=self.timeout)
                try:
                    found.update(await client.checkpoints())
                    answered = True
                except (JobError, OSError) as exc:
                    log.info("could not list checkpoints at %s: %s", url, exc)
                finally:
                    await client.aclose()
            if answered:
                self.names = sorted(found, key=str.lower)
            return answered

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # one bad refresh must not end the loop
                await self.refresh()
            await asyncio.sleep(self.refresh_seconds)

    def start(self) -> None:
        """Start the background refresh (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="checkpoint-refresh")

    async def stop(self) -> None:
        """Stop the background refresh."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def suggest(self, typed: str, limit: int = 25) -> list[str]:
        """Up to `limit` names containing `typed` (case-insensitive), prefix matches first."""
        needle = typed.lower().strip()
        matches = [n for n in self.names if needle in n.lower()]
        matches.sort(key=lambda n: (not n.lower().startswith(needle), n.lower()))
        return matches[:limit]

    async def check(self, model: str) -> list[str] | None:
        """None when `model` is offered (or ComfyUI cannot be asked); else the names that are offered."""
        if model in self.names:
            return None
        if not await self.refresh():
            return None
        return None if model in self.names else list(self.names)


__all__ = ["CheckpointCache"]
