"""`StatusWriter` on its own, against a patcher that fails on purpose.

What it sends is what the API server would get (camelCase, from `ImageJobStatus`);
what it announces is only what was confirmed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from comfykube.clock import Clock, ScaledClock
from comfykube.controller.status import FINISH_ATTEMPTS, ObjectGone, StatusNotWritten, StatusWriter
from comfykube.types import ImageJobStatus, Phase, Progress, StoredImage

SHA = "a" * 64
FIXED = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC).timestamp()


class FixedClock(Clock):
    """Always 2026-11-29T10:00:00Z; sleeps take no time."""

    def now(self) -> float:
        return FIXED

    async def sleep(self, seconds: float) -> None:
        self.slept = getattr(self, "slept", 0.0) + seconds


class Patcher:
    """Records patches; fails the next `failures` calls (with `status` as the HTTP code)."""

    def __init__(self, failures: int = 0, status: int = 500) -> None:
        self.failures = failures
        self.status = status
        self.calls = 0
        self.landed: list[dict[str, Any]] = []

    async def __call__(self, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise ApiException(status=self.status, reason="failing on purpose")
        self.landed.append(patch)
        return {"status": patch}


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    async def __call__(self, type_: str, reason: str, message: str) -> None:
        self.posted.append((type_, reason, message))


def succeeded() -> ImageJobStatus:
    image = StoredImage(key="ns/fox/uid/0.png", bytes=10, sha256=SHA, content_type="image/png", url="http://s3/x")
    return ImageJobStatus(phase=Phase.SUCCEEDED, reason="Succeeded", message="1 image(s) stored", images=[image],
                          url=image.url, progress=Progress(value=4, max=4), seed=7, submissions=1)


def uploading() -> ImageJobStatus:
    return ImageJobStatus(phase=Phase.UPLOADING, queue_position=0, submissions=1, prompt_id="uid")


async def test_a_terminal_write_that_never_lands_raises_and_announces_nothing() -> None:
    patch, events, clock = Patcher(failures=100), Events(), FixedClock()
    writer = StatusWriter(patch, events, generation=3, status=uploading(), clock=clock)
    with pytest.raises(StatusNotWritten, match="Succeeded status was not written after 5 attempts"):
        await writer.finish(succeeded())
    assert patch.calls == FINISH_ATTEMPTS and patch.landed == []
    assert events.posted == []  # no "Succeeded" Event for a status nobody can read
    assert writer.phase is Phase.UPLOADING  # the writer's view stays what the API server has
    assert clock.slept == pytest.approx(0.5 + 1 + 2 + 4)  # backoff through the injected clock


async def test_a_terminal_write_that_lands_after_retries_is_announced_once_in_wire_names() -> None:
    patch, events = Patcher(failures=2), Events()
    writer = StatusWriter(patch, events, generation=3, status=uploading(), clock=FixedClock())
    await writer.finish(succeeded())
    assert patch.calls == 3
    [sent] = patch.landed
    assert sent["phase"] == "Succeeded" and sent["imageCount"] == 1 and sent["progressText"] == "4/4"
    assert sent["images"][0]["contentType"] == "image/png" and sent["observedGeneration"] == 3
    assert "queuePosition" in sent and sent["queuePosition"] is None  # cleared by the merge patch
    assert not any("_" in key for key in sent)  # camelCase only, from the model
    [condition] = sent["conditions"]
    assert condition == {"type": "Succeeded", "status": "True", "reason": "Succeeded",
                         "message": "1 image(s) stored", "lastTransitionTime": "2026-11-29T10:00:00Z",
                         "observedGeneration": 3}
    assert events.posted == [("Normal", "Succeeded", "1 image(s) stored")]
    assert writer.phase is Phase.SUCCEEDED


async def test_a_deleted_object_stops_at_once_without_retries() -> None:
    patch, events = Patcher(failures=100, status=404), Events()
    writer = StatusWriter(patch, events, generation=None, status=uploading(), clock=FixedClock())
    with pytest.raises(ObjectGone):
        await writer.finish(succeeded())
    assert patch.calls == 1 and events.posted == []


async def test_a_transition_whose_write_fails_is_not_announced() -> None:
    patch, events = Patcher(failures=1), Events()
    writer = StatusWriter(patch, events, generation=None, clock=FixedClock())
    with pytest.raises(ApiException):
        await writer.set({"phase": Phase.RUNNING, "message": "rendering"})
    assert events.posted == [] and writer.phase is Phase.PENDING
    await writer.set({"phase": Phase.RUNNING, "message": "rendering"})
    assert events.posted == [("Normal", "Running", "rendering")]
    assert patch.landed[-1]["conditions"][0]["status"] == "Unknown"


async def test_a_bad_value_is_refused_by_the_model_before_anything_is_sent() -> None:
    patch, events = Patcher(), Events()
    writer = StatusWriter(patch, events, generation=None, clock=ScaledClock(10))
    with pytest.raises(ValueError):
        await writer.set({"seed": -1})
    with pytest.raises(ValueError):
        await writer.set({"no_such_field": 1})
    assert patch.calls == 0


async def test_the_transition_time_moves_only_when_the_condition_changes() -> None:
    patch, events = Patcher(), Events()
    writer = StatusWriter(patch, events, generation=None, clock=FixedClock())
    await writer.set({"phase": Phase.QUEUED})
    writer.clock = ScaledClock(1)  # later, real time
    await writer.set({"phase": Phase.RUNNING})  # still Unknown: the time stays
    assert patch.landed[-1]["conditions"][0]["lastTransitionTime"] == "2026-11-29T10:00:00Z"
    await writer.finish(succeeded())  # Unknown -> True: the time moves
    assert patch.landed[-1]["conditions"][0]["lastTransitionTime"] != "2026-11-29T10:00:00Z"


async def test_a_staged_change_waits_for_the_next_write_even_when_the_throttle_is_open() -> None:
    patch, events = Patcher(), Events()
    writer = StatusWriter(patch, events, generation=None, clock=ScaledClock(1), min_interval=0.05)
    await asyncio.sleep(0.06)  # the throttle is open
    await writer.soon({"message": "checking ComfyUI", "seed": 7})
    assert patch.calls == 0  # not at once: a write may follow
    await writer.set({"phase": Phase.QUEUED, "submissions": 1, "message": "submitting"})
    await asyncio.sleep(0.15)  # past the grace: nothing left to write on its own
    assert patch.calls == 1
    assert patch.landed[0]["seed"] == 7 and patch.landed[0]["submissions"] == 1


async def test_a_staged_change_alone_is_written_after_the_grace() -> None:
    patch, events = Patcher(), Events()
    writer = StatusWriter(patch, events, generation=None, clock=ScaledClock(1), min_interval=0.05)
    await asyncio.sleep(0.06)
    await writer.soon({"phase": Phase.QUEUED, "message": "waiting for a free ComfyUI slot"})
    await asyncio.sleep(0.2)
    assert patch.calls == 1 and patch.landed[0]["phase"] == "Queued"
    assert events.posted == [("Normal", "Queued", "waiting for a free ComfyUI slot")]
