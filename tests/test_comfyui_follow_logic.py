"""The follow loop's decisions on scripted /history + /queue answers (no sockets).

The integration tests cover the same loop against the stand-in server; these
pin down races a server cannot be made to hit on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from comfykube.clock import Clock, ScaledClock
from comfykube.comfyui.events import Executed, ExecutionSuccess, ProgressEvent, Reconnected
from comfykube.comfyui.follow import follow_prompt
from comfykube.comfyui.hub import Watch
from comfykube.comfyui.models import HistoryEntry, ProgressUpdate, QueueItem, QueueSnapshot
from comfykube.comfyui.transport import BackendRefused, unavailable
from comfykube.errors import ComfyUIUnavailable, DeadlineExceeded, PromptLost

DONE = HistoryEntry(prompt_id="p", status_str="success", completed=True)
PENDING = QueueSnapshot(running=(QueueItem(1, "other"),), pending=(QueueItem(2, "x"), QueueItem(3, "p")))
EMPTY = QueueSnapshot()


class Script:
    """A PromptSource answering from lists (the last answer repeats)."""

    def __init__(self, history: list[object], queue: list[object]) -> None:
        self._history: Iterator[object] = self._repeat_last(history)
        self._queue: Iterator[object] = self._repeat_last(queue)
        self.history_calls = 0

    @staticmethod
    def _repeat_last(items: list[object]) -> Iterator[object]:
        yield from items
        while True:
            yield items[-1]

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        self.history_calls += 1
        answer = next(self._history)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    async def queue(self) -> QueueSnapshot:
        answer = next(self._queue)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]


CLOCK = ScaledClock(1000)


async def test_prompt_finishing_between_history_and_queue_calls_is_not_lost() -> None:
    # history empty → queue empty (it just finished) → history present on the re-check.
    source = Script(history=[None, DONE], queue=[EMPTY])
    entry = await follow_prompt(source, Watch("p"), "p", clock=CLOCK, lost_polls=1, poll_interval=1)
    assert entry is DONE


async def test_unreachable_comfyui_during_polls_does_not_count_as_lost() -> None:
    down = ComfyUIUnavailable("GET /history/p: connection refused")
    source = Script(history=[down, down, down, down, None, DONE], queue=[PENDING])
    entry = await follow_prompt(source, Watch("p"), "p", clock=CLOCK, lost_polls=2, poll_interval=1)
    assert entry is DONE


async def test_absent_for_lost_polls_checks_is_lost() -> None:
    source = Script(history=[None], queue=[EMPTY])
    with pytest.raises(PromptLost):
        await follow_prompt(source, Watch("p"), "p", clock=CLOCK, lost_polls=3, poll_interval=1)


async def test_queue_position_counts_running_and_earlier_pending() -> None:
    seen: list[ProgressUpdate] = []
    source = Script(history=[None, None, DONE], queue=[PENDING])
    await follow_prompt(source, Watch("p"), "p", clock=CLOCK, on_progress=seen.append, poll_interval=1, lost_polls=3)
    assert seen[0] == ProgressUpdate(queue_position=2, running=False)


async def test_failing_progress_callback_does_not_stop_following() -> None:
    def explode(update: ProgressUpdate) -> None:
        raise RuntimeError("status patch failed")

    watch = Watch("p")
    watch._put(ProgressEvent("p", value=1, max=3))
    source = Script(history=[None, None, DONE], queue=[PENDING])
    entry = await follow_prompt(source, watch, "p", clock=CLOCK, on_progress=explode, poll_interval=1)
    assert entry is DONE


async def test_ws_done_frame_triggers_an_immediate_poll() -> None:
    watch = Watch("p")
    source = Script(history=[None, DONE], queue=[PENDING])
    watch._put(ExecutionSuccess("p"))
    # poll_interval is a simulated hour: only the WS frame can make this finish quickly.
    entry = await follow_prompt(source, watch, "p", clock=ScaledClock(1), poll_interval=3600)
    assert entry is DONE


SAVED = {"images": [{"filename": "a_00001_.png", "subfolder": "comfykube/u", "type": "output"}]}


async def test_a_success_seen_whole_on_the_websocket_needs_no_history() -> None:
    watch = Watch("p")
    source = Script(history=[None], queue=[PENDING])
    watch._put(Executed("p", node="9", output=SAVED))
    watch._put(ExecutionSuccess("p"))
    entry = await follow_prompt(source, watch, "p", clock=ScaledClock(1), poll_interval=3600, poll_first=False,
                                frames_complete=True)
    assert source.history_calls == 0
    assert [(i.filename, i.subfolder, i.node_id, i.is_output) for i in entry.images] == [
        ("a_00001_.png", "comfykube/u", "9", True)
    ]


@pytest.mark.parametrize("frames", ["reconnected", "attached", "no files"])
async def test_a_success_the_websocket_may_not_have_seen_whole_is_read_from_history(frames: str) -> None:
    watch = Watch("p")
    source = Script(history=[None, DONE], queue=[PENDING])
    if frames != "no files":
        watch._put(Executed("p", node="9", output=SAVED))
    if frames == "reconnected":
        watch._put(Reconnected("p"))  # frames sent while the socket was down are gone
    watch._put(ExecutionSuccess("p"))
    entry = await follow_prompt(source, watch, "p", clock=ScaledClock(1), poll_interval=3600, poll_first=False,
                                frames_complete=frames != "attached")
    assert entry is DONE and source.history_calls >= 1


async def test_deadline_in_the_past_raises_at_once() -> None:
    source = Script(history=[None], queue=[PENDING])
    with pytest.raises(DeadlineExceeded):
        await follow_prompt(source, Watch("p"), "p", clock=CLOCK, deadline_at=CLOCK.now() - 1)
    assert source.history_calls == 0


class SteppingClock(Clock):
    """Virtual time that moves only when the follower waits (by exactly the wait): no load effects."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)

    def real_seconds(self, seconds: float) -> float:
        self.t += max(0.0, seconds)
        return 0.0


async def test_refused_connections_give_up_after_the_refused_grace_not_the_long_one() -> None:
    refused = BackendRefused("GET /history/p: connection refused")
    source = Script(history=[refused], queue=[PENDING])
    clock = SteppingClock()
    with pytest.raises(BackendRefused) as caught:
        await follow_prompt(source, Watch("p"), "p", clock=clock, poll_interval=2,
                            unreachable_grace=60, refused_grace=5)
    assert 5 <= clock.now() <= 7  # polled every second while refused
    assert "refused every connection" in caught.value.message


async def test_a_timeout_among_refusals_keeps_the_long_grace() -> None:
    # It answered slowly once (a busy server may still be rendering): not a dead process.
    refused = BackendRefused("GET /history/p: connection refused")
    slow = ComfyUIUnavailable("GET /history/p: timed out")
    source = Script(history=[refused, refused, slow, refused, refused, slow], queue=[PENDING])
    clock = SteppingClock()
    with pytest.raises(ComfyUIUnavailable) as caught:
        await follow_prompt(source, Watch("p"), "p", clock=clock, poll_interval=2,
                            unreachable_grace=20, refused_grace=5)
    assert not isinstance(caught.value, BackendRefused)
    assert clock.now() >= 20


def test_a_refused_connection_is_its_own_kind_of_unavailable() -> None:
    assert isinstance(unavailable("GET", "http://x/queue", "connection refused"), BackendRefused)
    assert not isinstance(unavailable("GET", "http://x/queue", "timed out"), BackendRefused)
