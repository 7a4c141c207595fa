"""One WebSocket per client id, shared by every prompt this process follows.

ComfyUI sends execution frames only to the socket whose `clientId` submitted
the prompt, and a second socket with the same id replaces the first. So a
process that follows many prompts keeps exactly one socket and dispatches
frames by `prompt_id` to subscribers. The socket is (re)connected with
backoff when it drops, and reconnected when it has been quiet for long
(WebSockets can stall while HTTP keeps working).

Live previews: on every connection the hub announces `supports_preview_metadata`
(ComfyUI then sends type-4 preview frames that name their prompt). A type-1 frame
(older servers) names none: it goes to the prompt the hub last saw executing,
which is the one ComfyUI is running, since a server runs one prompt at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect

from comfykube.clock import Clock
from comfykube.comfyui.events import (
    Event,
    Executing,
    ExecutionStart,
    PreviewImage,
    ProgressEvent,
    Reconnected,
    parse_frame,
)

log = logging.getLogger(__name__)

#: The first frame on every socket: ask for previews that name their prompt (type 4).
FEATURE_FLAGS = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})


class Watch:
    """A subscription to one prompt's frames; get it from `ComfyClient.watch()`."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def _put(self, event: Event) -> None:
        self._queue.put_nowait(event)

    async def get(self, wait_seconds: float) -> Event | None:
        """The next event, or None after `wait_seconds` real seconds."""
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._queue.get_nowait()
        if wait_seconds <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout=wait_seconds)
        except TimeoutError:
            return None


class EventHub:
    """Keeps the client's WebSocket up while anyone watches and routes frames to watchers."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        *,
        clock: Clock,
        open_timeout: float = 10.0,
        quiet_seconds: float = 60.0,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        scheme, rest = base_url.split("://", 1)
        ws_scheme = "wss" if scheme == "https" else "ws"
        self.url = f"{ws_scheme}://{rest}/ws?{urlencode({'clientId': client_id})}"
        self.client_id = client_id
        self.clock = clock
        self.open_timeout = open_timeout
        self.quiet_seconds = quiet_seconds
        self.backoff = backoff
        self.max_backoff = max_backoff
        #: How many times a socket was opened (tests and metrics read it).
        self.connections = 0
        self._watches: dict[str, set[Watch]] = {}
        self._connected = asyncio.Event()
        # Set (and replaced) after every connection attempt, so waiters learn of failures at once.
        self._attempted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: The prompt this client's frames last said is executing (type-1 previews go to it).
        self._executing: str | None = None

    @property
    def connected(self) -> bool:
        """True while a socket is open."""
        return self._connected.is_set()

    def subscribe(self, prompt_id: str) -> Watch:
        """Start routing `prompt_id`'s frames to a new Watch (and keep the socket up)."""
        if self._closed:
            raise RuntimeError("the ComfyUI client is closed")
        watch = Watch(prompt_id)
        self._watches.setdefault(prompt_id, set()).add(watch)
        self._start()
        return watch

    def unsubscribe(self, watch: Watch) -> None:
        """Stop routing frames to `watch`."""
        watchers = self._watches.get(watch.prompt_id)
        if watchers is not None:
            watchers.discard(watch)
            if not watchers:
                del self._watches[watch.prompt_id]

    async def ensure_connected(self, wait_seconds: float) -> bool:
        """Wait up to `wait_seconds` real seconds for the socket; False if it did not come up.

        Returns early when a connection attempt fails (ComfyUI down: submit will say
        so itself). A False here is not fatal: followers poll `/history` as well.
        """
        self._start()
        if self.connected:
            return True
        attempted = self._attempted
        connected = asyncio.ensure_future(self._connected.wait())
        failed = asyncio.ensure_future(attempted.wait())
        try:
            await asyncio.wait({connected, failed}, timeout=wait_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            failed.cancel()
        return self.connected

    async def aclose(self) -> None:
        """Close the socket and stop reconnecting."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()

    def _start(self) -> None:
        if self._closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="comfyui-ws")

    def _attempt_finished(self) -> None:
        self._attempted.set()
        self._attempted = asyncio.Event()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, ExecutionStart | ProgressEvent) or (isinstance(event, Executing) and event.node):
            self._executing = event.prompt_id
        elif event.terminal and event.prompt_id == self._executing:
            self._executing = None
        if isinstance(event, PreviewImage) and event.prompt_id is None:
            if self._executing is None:
                return
            event = dataclasses.replace(event, prompt_id=self._executing)
        if event.prompt_id is None:
            return
        for watch in tuple(self._watches.get(event.prompt_id, ())):
            watch._put(event)

    def _broadcast(self, event: Event) -> None:
        for watchers in tuple(self._watches.values()):
            for watch in tuple(watchers):
                watch._put(event)

    async def _run(self) -> None:
        delay = self.backoff
        had_connection = False
        while not self._closed:
            try:
                async with connect(
                    self.url,
                    open_timeout=self.open_timeout,
                    # Library pings catch dead TCP peers; the quiet timeout below catches stalls.
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=2,
                    # Preview frames can be large; text frames never are.
                    max_size=32 * 1024 * 1024,
                    proxy=None,
                    compression=None,
                ) as ws:
                    self.connections += 1
                    delay = self.backoff
                    # Frames of a run we did not see while away must not be attributed to a stale prompt.
                    self._executing = None
                    await ws.send(FEATURE_FLAGS)
                    self._connected.set()
                    self._attempt_finished()
                    if had_connection:
                        # Frames sent while we were away are lost: followers should poll now.
                        self._broadcast(Reconnected(None))
                    had_connection = True
                    keep_going = await self._receive(ws)
                    if not keep_going:
                        return
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                log.info("ComfyUI WebSocket %s unavailable: %s", self.url, exc or type(exc).__name__)
            except Exception:
                log.exception("ComfyUI WebSocket %s failed unexpectedly", self.url)
            finally:
                self._connected.clear()
                self._attempt_finished()
            if not self._watches:
                return
            await self.clock.sleep(delay)
            delay = min(self.max_backoff, delay * 2)

    async def _receive(self, ws: ClientConnection) -> bool:
        """Read frames until the socket closes or stays quiet; False means "nobody watches, stop"."""
        quiet = self.clock.real_seconds(self.quiet_seconds)
        while True:
            try:
                frame = await asyncio.wait_for(ws.recv(), timeout=quiet)
            except TimeoutError:
                if not self._watches:
                    return False
                log.info("ComfyUI WebSocket quiet for %ss; reconnecting", self.quiet_seconds)
                return True
            event = parse_frame(frame)
            if event is not None:
                self._dispatch(event)
