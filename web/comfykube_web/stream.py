"""Live updates: Server-Sent Events fanned out from the index, coalesced per browser.

Each connection loops: wait until the index changed after the last sequence number it
sent → send one `jobs` event with the latest card of every job changed since (filtered
as the page is; a job that left the filter or was deleted is sent as `{"key", "gone"}`, once)
→ sleep `update_interval`. However many watch events arrive, a browser gets at most
one message per interval (2/s by default) carrying each job once.

The page passes the sequence number it was rendered at (`since`), and a reconnecting
EventSource sends `Last-Event-ID`, so no change falls between page and stream. A
browser so far behind that the index forgot its changes gets a `reset` event and reloads.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from comfykube_web.cards import CardCache
from comfykube_web.index import Filters, JobIndex

log = logging.getLogger(__name__)

#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0


def _since(request: web.Request, index: JobIndex) -> int:
    for value in (request.headers.get("Last-Event-ID"), request.query.get("since")):
        if value and value.isdigit():
            return min(int(value), index.seq)
    return index.seq


class Streams:
    """The SSE endpoint and the count of open streams (bounded)."""

    def __init__(self, index: JobIndex, cards: CardCache, *, interval: float, limit: int) -> None:
        self.index = index
        self.cards = cards
        self.interval = interval
        self.limit = limit
        self.open = 0
        #: Messages sent, for the benchmark and tests.
        self.sent = 0

    async def batch(
        self, since: int, filters: Filters, only: str | None, hidden: set[str] | None = None
    ) -> tuple[int, list[str] | None]:
        """(new seq, JSON of cards or gone-markers) for changes after `since`; None means reset.

        `hidden` (one set per stream) holds the keys this browser was already told are gone:
        a job outside the filter that keeps changing costs one marker, not one per message.
        """
        seq, changes, reset = self.index.changes_since(since)
        if reset:
            return seq, None
        hidden = hidden if hidden is not None else set()
        out: list[str] = []
        for key, job in changes:
            if only is not None and key != only:
                continue
            if job is None or not filters.matches(job):
                if job is None:
                    self.cards.forget(key)
                if key not in hidden:
                    hidden.add(key)
                    out.append(json.dumps({"key": key, "gone": True}))
            else:
                hidden.discard(key)
                out.append((await self.cards.get(job))[1])
        return seq, out

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /api/stream?phase=…&q=…&since=N[&job=ns/name]."""
        if self.open >= self.limit:
            raise web.HTTPServiceUnavailable(text="too many live-update connections; try again later\n")
        filters = Filters.from_query(request.query)
        only = request.query.get("job") or None
        since = _since(request, self.index)
        hidden: set[str] = set()
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        self.open += 1
        try:
            await response.prepare(request)
            await response.write(b"retry: 3000\n\n")
            while True:
                if not await self.index.wait(since, KEEPALIVE_SECONDS):
                    await response.write(b": keepalive\n\n")
                    continue
                since, cards = await self.batch(since, filters, only, hidden)
                if cards is None:
                    await response.write(f"id: {since}\nevent: reset\ndata: {{}}\n\n".encode())
                elif cards:
                    # The cards are JSON already (built once, shared by every stream).
                    data = f'{{"seq":{since},"total":{len(self.index)},"jobs":[{",".join(cards)}]}}'
                    await response.write(f"id: {since}\nevent: jobs\ndata: {data}\n\n".encode())
                    self.sent += 1
                await asyncio.sleep(self.interval)
        except ConnectionResetError:
            pass  # the browser went away
        finally:
            self.open -= 1
        return response


__all__ = ["Streams"]
