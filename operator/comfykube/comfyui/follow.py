"""Follow one prompt to its end: WebSocket events AND a slow `/history` poll.

The WebSocket gives progress and a quick "done"; the poll is the backstop
because sockets stall while HTTP works, frames are lost across reconnects, and
only `/history` + `/queue` can tell "finished", "waiting" and "lost" apart.
A success the WebSocket saw whole (subscribed before our own submission, no
reconnect since) is taken from its `executed` frames, which name every output
file exactly as `/history` would: no round trip. Anything else (an error, an
interrupt, attaching to a prompt, a reconnect, a success without files) is
read from `/history`.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Any, Protocol

from comfykube.clock import Clock
from comfykube.comfyui.events import (
    Event,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionStart,
    ExecutionSuccess,
    PreviewImage,
    ProgressEvent,
    Reconnected,
)
from comfykube.comfyui.history import outcome, output_files
from comfykube.comfyui.hub import Watch
from comfykube.comfyui.models import (
    HistoryEntry,
    OutputImage,
    PreviewCallback,
    ProgressCallback,
    ProgressUpdate,
    QueueSnapshot,
)
from comfykube.comfyui.transport import BackendRefused
from comfykube.errors import ComfyUIUnavailable, DeadlineExceeded, PromptLost

log = logging.getLogger(__name__)

#: After the WS says "finished", poll this often (clock seconds) until history has the entry.
FAST_POLL = 0.25
#: …but at most this many times before falling back to the normal interval.
FAST_POLLS = 20


class PromptSource(Protocol):
    """What `follow_prompt` needs from the client (lets the logic be tested on its own)."""

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        """The finished entry or None."""
        ...

    async def queue(self) -> QueueSnapshot:
        """The current queue."""
        ...


class _Reporter:
    """Calls the progress callback when something visible changed; never lets it kill the follow."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.current = ProgressUpdate()
        self._sent: ProgressUpdate | None = None

    def update(self, **changes: Any) -> None:
        self.current = dataclasses.replace(self.current, **changes)

    async def flush(self) -> None:
        if self.callback is None or self.current == self._sent:
            return
        self._sent = self.current
        try:
            result = self.callback(self.current)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # A failed status patch must not fail the render; the next change retries.
            log.warning("progress callback failed", exc_info=True)
            self._sent = None


async def follow_prompt(
    source: PromptSource,
    watch: Watch,
    prompt_id: str,
    *,
    clock: Clock,
    on_progress: ProgressCallback | None = None,
    on_preview: PreviewCallback | None = None,
    deadline_at: float | None = None,
    lost_polls: int = 3,
    poll_interval: float = 2.0,
    unreachable_grace: float | None = None,
    refused_grace: float | None = None,
    poll_first: bool = True,
    frames_complete: bool = False,
) -> HistoryEntry:
    """Wait for `prompt_id` to finish and return its successful history entry.

    `frames_complete` says every frame of the prompt reaches `watch` (it was subscribed
    with the socket up before the prompt was submitted): a success is then built from the
    `executed` frames unless the socket reconnects in between.

    Raises ExecutionFailed / Interrupted (from history), PromptLost (absent from
    `/queue` and `/history` for `lost_polls` consecutive polls), DeadlineExceeded
    (`clock.now() >= deadline_at`; the caller cancels the prompt). Times are
    clock seconds; ComfyUI being unreachable during a poll is logged and retried, and
    after `unreachable_grace` seconds of nothing but failures ComfyUIUnavailable is
    raised, so the caller can move the job to a backend that is alive. When every failed
    poll since then was a refused connection (nothing listens: the process and its queue
    are gone), `refused_grace` applies instead and `BackendRefused` is raised; one timeout
    in between (a busy server may still be rendering) puts the job back on the long grace.
    `on_preview` gets every live preview frame of the prompt; it must be quick (keep the
    frame, do the work elsewhere): it runs between frames, and a failure in it is logged.
    """
    reporter = _Reporter(on_progress)
    files: dict[str, list[OutputImage]] = {}  # node id -> the files its `executed` frame named
    lost = 0
    fast_left = 0
    # Poll at once when attaching (the prompt may be finished already); right after our own
    # submission the WebSocket tells first, and the poll is only the safety net.
    next_poll = clock.now() if poll_first else clock.now() + poll_interval
    unreachable_since: float | None = None
    refused_since: float | None = None
    while True:
        now = clock.now()
        if deadline_at is not None and now >= deadline_at:
            raise DeadlineExceeded(f"prompt {prompt_id} did not finish before its deadline")
        if now >= next_poll:
            try:
                entry, absent = await _poll(source, prompt_id, reporter)
            except ComfyUIUnavailable as exc:
                log.warning("polling prompt %s: %s", prompt_id, exc.message)
                entry, absent = None, False
                unreachable_since = now if unreachable_since is None else unreachable_since
                if isinstance(exc, BackendRefused):
                    refused_since = now if refused_since is None else refused_since
                    if refused_grace is not None and now - refused_since >= refused_grace:
                        raise BackendRefused(
                            f"ComfyUI refused every connection for {now - refused_since:.0f} s while following "
                            f"prompt {prompt_id} (its process and queue are gone): {exc.message}"
                        ) from None
                else:
                    refused_since = None
                if unreachable_grace is not None and now - unreachable_since >= unreachable_grace:
                    raise ComfyUIUnavailable(
                        f"ComfyUI has not answered for {now - unreachable_since:.0f} s while following prompt "
                        f"{prompt_id}: {exc.message}"
                    ) from None
            else:
                unreachable_since = None
                refused_since = None
            if entry is not None:
                await reporter.flush()
                return outcome(entry)
            lost = lost + 1 if absent else 0
            if lost >= lost_polls:
                raise PromptLost(
                    f"prompt {prompt_id} is in neither the queue nor the history of ComfyUI "
                    f"({lost} checks in a row): it was deleted or ComfyUI restarted"
                )
            await reporter.flush()
            interval = poll_interval
            if refused_since is not None and refused_grace is not None:
                # A refused connection costs nothing: look more often, so the move comes on time.
                interval = min(poll_interval, max(FAST_POLL, refused_grace / 5))
            if fast_left > 0:
                fast_left -= 1
                interval = min(poll_interval, FAST_POLL)
            next_poll = clock.now() + interval
            continue
        wait = next_poll - now
        if deadline_at is not None:
            wait = min(wait, deadline_at - now)
        event = await watch.get(clock.real_seconds(max(0.0, wait)))
        if event is None:
            continue
        if isinstance(event, PreviewImage):
            if on_preview is not None:
                try:
                    on_preview(event)
                except Exception:  # a preview must never cost the render
                    log.warning("preview callback failed", exc_info=True)
            continue
        if isinstance(event, Reconnected):
            frames_complete = False  # frames sent while it was down are gone
        elif isinstance(event, Executed) and event.node is not None:
            files[event.node] = output_files(event.node, event.output)
        elif isinstance(event, ExecutionSuccess) and frames_complete:
            named = tuple(image for listed in files.values() for image in listed)
            if named:
                await reporter.flush()
                return HistoryEntry(prompt_id=prompt_id, status_str="success", completed=True, images=named)
        if _apply(event, reporter):
            next_poll = clock.now()
            fast_left = FAST_POLLS
        await reporter.flush()


def _apply(event: Event, reporter: _Reporter) -> bool:
    """Update progress from a frame; True when history should be polled now."""
    if isinstance(event, ProgressEvent):
        reporter.update(value=event.value, max=event.max, running=True, queue_position=0)
    elif isinstance(event, ExecutionStart | ExecutionCached) or (
        isinstance(event, Executing) and event.node is not None
    ):
        reporter.update(running=True, queue_position=0)
    if isinstance(event, Reconnected):
        return True
    return event.terminal


async def _poll(source: PromptSource, prompt_id: str, reporter: _Reporter) -> tuple[HistoryEntry | None, bool]:
    """One history + queue check: (finished entry, absent from both)."""
    entry = await source.history(prompt_id)
    if entry is not None:
        return entry, False
    queue = await source.queue()
    position = queue.position(prompt_id)
    if position is None:
        # It may have finished between the two calls: look once more before counting it lost.
        entry = await source.history(prompt_id)
        return entry, entry is None
    running = queue.is_running(prompt_id)
    if running:
        reporter.update(running=True, queue_position=0)
    else:
        reporter.update(running=False, queue_position=position)
    return None, False
