"""The pipeline end to end: ComfyUI stand-in → checks → nanio → presigned URL.

Each failure of the system comfykube replaces has a named test here: a
0-byte image, `euler_a`, a missing checkpoint, a 534 s CPU job under a
300 s-era timeout, a lost prompt, a killed process.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from typing import Any

import httpx
import pytest

from comfykube.clock import ScaledClock
from comfykube.comfyui.client import ComfyClient
from comfykube.errors import (
    DeadlineExceeded,
    DownloadFailed,
    ExecutionFailed,
    PreflightFailed,
    PromptLost,
    PromptRejected,
)
from comfykube.pipeline import JobIdentity, Pipeline, PipelineEvent, ResumeState
from comfykube.settings import DEFAULT_WORKFLOWS_DIR
from comfykube.storage import MinioStore
from comfykube.types import ImageJobSpec, Phase
from comfykube.workflows import WorkflowLibrary

WORKFLOWS = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR])


def new_job(name: str = "fox") -> JobIdentity:
    return JobIdentity(namespace="tests", name=name, uid=str(uuid.uuid4()))


@pytest.fixture
async def store(s3_settings: Any) -> MinioStore:
    return MinioStore(s3_settings)


@pytest.fixture
async def pipeline(comfyui: Any, store: MinioStore) -> Any:
    async with ComfyClient(comfyui.url, timeout=10) as comfy:
        yield Pipeline(comfy=comfy, store=store, workflows=WORKFLOWS, poll_interval=0.2, lost_polls=3)


async def stored_keys(store: MinioStore, job: JobIdentity) -> list[str]:
    keys = []
    for index in range(8):
        for ext in ("png", "jpg", "webp"):
            key = f"{job.namespace}/{job.name}/{job.uid}/{index}.{ext}"
            if await store.stat(key) is not None:
                keys.append(key)
    return keys


async def test_image_is_stored_verified_and_presigned_url_returns_the_same_bytes(
    pipeline: Pipeline, store: MinioStore, comfyui: Any
) -> None:
    events: list[PipelineEvent] = []

    async def report(event: PipelineEvent) -> None:
        events.append(event)

    job = new_job()
    spec = ImageJobSpec(prompt="a red fox in the snow", width=128, height=96, steps=4, seed=7)
    status = await pipeline.run(spec, job, report=report)

    assert status.phase is Phase.SUCCEEDED
    assert status.seed == 7 and status.prompt_id == job.uid and status.submissions == 1
    [image] = status.images
    assert image.key == f"tests/fox/{job.uid}/0.png"
    assert (image.width, image.height, image.content_type) == (128, 96, "image/png")
    assert status.url == image.url and image.url_expires_at
    async with httpx.AsyncClient() as http:
        response = await http.get(image.url)
    assert response.status_code == 200
    assert len(response.content) == image.bytes > 0
    assert hashlib.sha256(response.content).hexdigest() == image.sha256
    phases = [e.phase for e in events]
    assert Phase.QUEUED in phases and Phase.RUNNING in phases and Phase.UPLOADING in phases
    assert any(e.progress and e.progress.max == 4 for e in events)


async def test_random_seed_is_chosen_and_recorded(pipeline: Pipeline) -> None:
    status = await pipeline.run(ImageJobSpec(prompt="p", width=64, height=64, steps=1), new_job())
    assert status.seed is not None and 0 <= status.seed < 2**63


async def test_batch_of_two_stores_two_images(pipeline: Pipeline, store: MinioStore) -> None:
    job = new_job("batch")
    status = await pipeline.run(ImageJobSpec(prompt="p", width=64, height=64, steps=1, batch_size=2), job)
    assert [i.key.rsplit("/", 1)[1] for i in status.images] == ["0.png", "1.png"]
    # Two pictures of one batch (the stand-in draws each in its own seed colour), not one stored twice.
    assert len({i.sha256 for i in status.images}) == 2
    assert len(await stored_keys(store, job)) == 2


async def test_zero_byte_image_fails_and_stores_nothing(
    pipeline: Pipeline, store: MinioStore, comfyui: Any
) -> None:
    comfyui.configure(image_mode="empty")
    job = new_job("empty")
    with pytest.raises(DownloadFailed, match="empty|0 bytes"):
        await pipeline.run(ImageJobSpec(prompt="p", width=64, height=64, steps=1), job)
    assert await stored_keys(store, job) == []


async def test_a_batch_whose_second_image_fails_leaves_no_file_behind(
    comfyui: Any, store: MinioStore, tmp_path: Any
) -> None:
    async with ComfyClient(comfyui.url, timeout=10) as comfy:
        pipeline = Pipeline(comfy=comfy, store=store, workflows=WORKFLOWS, poll_interval=0.2, tmp_dir=tmp_path)
        job = new_job("half-batch")
        comfyui.configure(image_mode="truncated")
        with pytest.raises(DownloadFailed):
            await pipeline.run(ImageJobSpec(prompt="p", width=64, height=64, steps=1, batch_size=2), job)
    assert list(tmp_path.iterdir()) == []  # every download directory and file is gone
    assert await stored_keys(store, job) == []


@pytest.mark.parametrize("mode", ["truncated", "html200", "wrong_magic", "not_found", "wrong_size"])
async def test_bad_image_bytes_fail_and_store_nothing(
    pipeline: Pipeline, store: MinioStore, comfyui: Any, mode: str
) -> None:
    comfyui.configure(image_mode=mode)
    job = new_job(mode.replace("_", "-"))
    with pytest.raises(DownloadFailed):
        await pipeline.run(ImageJobSpec(prompt="p", width=64, height=64, steps=1), job)
    assert await stored_keys(store, job) == []


async def test_euler_a_fails_fast_naming_euler_ancestral(pipeline: Pipeline, comfyui: Any) -> None:
    job = new_job()
    with pytest.raises(PreflightFailed) as info:
        await pipeline.run(ImageJobSpec(prompt="p", sampler="euler_a"), job)
    assert "euler_a" in info.value.message and "euler_ancestral" in info.value.message
    assert sum(comfyui.stats()["submissions"].values()) == 0  # refused before anything was sent


async def test_missing_checkpoint_names_the_installed_ones(pipeline: Pipeline, comfyui: Any) -> None:
    with pytest.raises(PreflightFailed) as info:
        await pipeline.run(ImageJobSpec(prompt="p", model="not-installed.safetensors"), new_job())
    assert "not-installed.safetensors" in info.value.message
    assert "sd15-base.safetensors" in info.value.message
    assert sum(comfyui.stats()["submissions"].values()) == 0


async def test_execution_error_fails_with_the_node_message(pipeline: Pipeline, comfyui: Any) -> None:
    comfyui.configure(fail_next_prompt=True, fail_message="CUDA out of memory on device 0")
    with pytest.raises(ExecutionFailed) as info:
        await pipeline.run(ImageJobSpec(prompt="p", width=64, height=64, steps=1), new_job())
    # Which node failed, with what: the node's own words, without a traceback.
    assert re.search(r"node \d+ \(KSampler\) failed: torch.OutOfMemoryError: CUDA out of memory on device 0",
                     info.value.message), info.value.message
    assert "Traceback" not in info.value.message


async def test_resume_attaches_to_the_running_prompt_instead_of_submitting_again(
    pipeline: Pipeline, comfyui: Any
) -> None:
    comfyui.configure(exec_seconds=1.5)
    job = new_job("resume")
    spec = ImageJobSpec(prompt="p", width=64, height=64, steps=5, seed=3)
    first = asyncio.create_task(pipeline.run(spec, job))
    while comfyui.stats()["submissions"].get(job.uid, 0) == 0:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    first.cancel()  # the process dies mid-run
    with pytest.raises(asyncio.CancelledError):
        await first
    status = await pipeline.run(spec, job, resume=ResumeState(seed=3, submissions=1))
    assert status.phase is Phase.SUCCEEDED
    assert comfyui.stats()["submissions"][job.uid] == 1


async def test_finished_prompt_is_collected_not_rendered_again(pipeline: Pipeline, comfyui: Any) -> None:
    job = new_job("collect")
    spec = ImageJobSpec(prompt="p", width=64, height=64, steps=1, seed=5)
    first = await pipeline.run(spec, job)
    # Killed after ComfyUI finished but before the status was written: run again.
    second = await pipeline.run(spec, job, resume=ResumeState(seed=5, submissions=1))
    assert comfyui.stats()["submissions"][job.uid] == 1
    assert second.images[0].sha256 == first.images[0].sha256


def before_submit(requests: list[str]) -> list[str]:
    """The requests sent before the (first) POST /prompt."""
    return requests[: requests.index("POST /prompt")]


async def test_a_new_job_makes_two_requests_post_prompt_and_view(pipeline: Pipeline, comfyui: Any) -> None:
    events: list[PipelineEvent] = []

    async def report(event: PipelineEvent) -> None:
        events.append(event)

    spec = ImageJobSpec(prompt="p", width=64, height=64, steps=1)
    await pipeline.run(spec, new_job())  # the health check (it reads /queue) and preflight are fresh now
    comfyui.clear_requests()
    status = await pipeline.run(spec, new_job(), report=report)
    assert status.submissions == 1
    early = before_submit(comfyui.requests)
    assert "GET /queue" not in early and not any(r.startswith("GET /history/") for r in early), early
    # Nor after it: the WebSocket's `executed` frames named the output, /history was not needed.
    assert comfyui.requests[len(early):] == ["POST /prompt", "GET /view"], comfyui.requests
    # The submission was on record (reported) before the POST went out.
    submitting = next(e for e in events if e.message == "submitting")
    assert submitting.submissions == 1 and events.index(submitting) < next(
        i for i, e in enumerate(events) if e.message == "queued"
    )


class Crash(Exception):
    """The operator process dies (the reporter is where it last wrote status)."""


@pytest.mark.parametrize("when", ["submitting", "queued"])
async def test_a_job_resumed_after_a_crash_around_the_post_looks_it_up_and_renders_once(
    pipeline: Pipeline, comfyui: Any, when: str
) -> None:
    """Crash after "submitting" was on record: before the POST went out, or before its answer was."""
    job = new_job("crash")
    spec = ImageJobSpec(prompt="p", width=64, height=64, steps=1, seed=4)
    recorded: list[int] = []

    async def report(event: PipelineEvent) -> None:
        if event.submissions is not None:
            recorded.append(event.submissions)
        if event.message == when:
            raise Crash()

    with pytest.raises(Crash):
        await pipeline.run(spec, job, report=report)
    assert comfyui.stats()["submissions"].get(job.uid, 0) == (1 if when == "queued" else 0)
    comfyui.clear_requests()
    status = await pipeline.run(spec, job, resume=ResumeState(seed=4, submissions=recorded[-1]))
    assert status.phase is Phase.SUCCEEDED
    assert comfyui.stats()["submissions"][job.uid] == 1  # never rendered twice
    if when == "queued":
        assert "POST /prompt" not in comfyui.requests  # attached to the prompt ComfyUI has
    else:
        assert before_submit(comfyui.requests)[-2:] == ["GET /queue", f"GET /history/{job.uid}"]


async def test_a_refused_submission_is_not_counted(pipeline: Pipeline, comfyui: Any) -> None:
    events: list[PipelineEvent] = []

    async def report(event: PipelineEvent) -> None:
        events.append(event)

    spec = ImageJobSpec(prompt="p", width=64, height=64, steps=1, model="missing.ckpt")
    # Passes the preflight (a fresh list would refuse it), then ComfyUI answers 400 to the POST.
    pipeline.comfy._checkpoints = (pipeline.comfy.clock.now(), ["missing.ckpt"])
    with pytest.raises(PromptRejected):
        await pipeline.run(spec, new_job(), report=report)
    assert [e.submissions for e in events if e.submissions is not None][-2:] == [1, 0]


async def test_lost_prompt_is_submitted_again_once(pipeline: Pipeline, comfyui: Any) -> None:
    comfyui.configure(lose_next_prompt=True)
    job = new_job("lost")
    status = await pipeline.run(ImageJobSpec(prompt="p", width=64, height=64, steps=1), job)
    assert status.phase is Phase.SUCCEEDED and status.submissions == 2
    assert comfyui.stats()["submissions"][job.uid] == 2


async def test_prompt_lost_twice_fails_as_lost(pipeline: Pipeline, comfyui: Any) -> None:
    comfyui.configure(lose_next_prompt=True)
    job = new_job("lost2")
    with pytest.raises(PromptLost):
        await pipeline.run(
            ImageJobSpec(prompt="p", width=64, height=64, steps=1), job, resume=ResumeState(submissions=1)
        )
    assert comfyui.stats()["submissions"][job.uid] == 1


async def test_deadline_exceeded_cancels_the_prompt(pipeline: Pipeline, comfyui: Any) -> None:
    comfyui.configure(exec_seconds=5.0)
    job = new_job("late")
    with pytest.raises(DeadlineExceeded):
        await pipeline.run(ImageJobSpec(prompt="p", width=64, height=64, steps=5), job, deadline_at=time.time() + 0.6)
    await asyncio.sleep(0.3)
    queue = await pipeline.comfy.queue()
    assert not queue.is_running(job.uid) and queue.position(job.uid) is None


async def test_cpu_job_of_534_simulated_seconds_succeeds_under_a_longer_deadline(
    comfyui_factory: Any, store: MinioStore
) -> None:
    """The old system's fixed 300 s timeout killed CPU-mode jobs that took 534 s."""
    scale = 200.0  # 534 simulated seconds take 2.7 real seconds
    comfy_server = await comfyui_factory(exec_seconds=534.0, time_scale=scale)
    clock = ScaledClock(scale)
    async with ComfyClient(comfy_server.url, clock=clock, timeout=10) as comfy:
        pipeline = Pipeline(comfy=comfy, store=store, workflows=WORKFLOWS, clock=clock, poll_interval=5.0)
        job = new_job("cpu")
        spec = ImageJobSpec(prompt="p", width=64, height=64, steps=10, timeout_seconds=900)
        status = await pipeline.run(spec, job, deadline_at=clock.now() + 900)
        assert status.phase is Phase.SUCCEEDED

        job = new_job("cpu-old-timeout")
        with pytest.raises(DeadlineExceeded):
            await pipeline.run(spec, job, deadline_at=clock.now() + 300)


def test_a_job_without_a_seed_gets_the_same_random_seed_every_time_it_is_rendered() -> None:
    """A restarted operator re-attaching to a prompt must report the seed ComfyUI used."""
    job = new_job()
    pipeline = Pipeline(comfy=None, store=None, workflows=WORKFLOWS)  # type: ignore[arg-type]
    first = pipeline.prepare(ImageJobSpec(prompt="p"), job, ResumeState())
    again = pipeline.prepare(ImageJobSpec(prompt="p"), job, ResumeState())
    other = pipeline.prepare(ImageJobSpec(prompt="p"), new_job(), ResumeState())
    assert first.values["seed"] == again.values["seed"] != other.values["seed"]
    assert 0 <= first.values["seed"] < 2**53


async def test_without_a_model_an_installed_checkpoint_is_used(comfyui_factory: Any, store: MinioStore) -> None:
    server = await comfyui_factory(checkpoints=["only-this-one.safetensors"])
    async with ComfyClient(server.url, timeout=10) as comfy:
        pipeline = Pipeline(comfy=comfy, store=store, workflows=WORKFLOWS, poll_interval=0.2)
        job = new_job()
        status = await pipeline.run(ImageJobSpec(prompt="p", width=64, height=64, steps=1), job)
        assert status.phase is Phase.SUCCEEDED
        graph = server.history[job.uid]["prompt"][2]  # [number, id, graph, extra_data, outputs]
        assert graph["4"]["inputs"]["ckpt_name"] == "only-this-one.safetensors"
        # A model the spec names is never swapped.
        with pytest.raises(PreflightFailed, match="sd15-base.safetensors"):
            await pipeline.run(ImageJobSpec(prompt="p", model="sd15-base.safetensors"), new_job())
