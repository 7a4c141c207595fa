"""ComfyClient against the ComfyUI stand-in over real loopback sockets.

Health, preflight, submit, lookup, follow (WS + polling), cancel and forget.
Downloads are in test_comfyui_download.py. Times in the config and the client
are simulated seconds when a ScaledClock is used on both sides.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from comfykube.clock import ScaledClock
from comfykube.comfyui import ComfyClient, ProgressUpdate, PromptPhase, check_health
from comfykube.errors import (
    ComfyUIUnavailable,
    DeadlineExceeded,
    ExecutionFailed,
    Interrupted,
    PreflightFailed,
    PromptLost,
    PromptRejected,
)
from tests.standins.comfyui import FakeComfyUI


def txt2img(
    *,
    checkpoint: str = "sd15-base.safetensors",
    sampler: str = "euler",
    scheduler: str = "normal",
    steps: int = 4,
    width: int = 64,
    height: int = 64,
    batch_size: int = 1,
    seed: int | None = None,
    prefix: str = "comfykube/test",
) -> dict[str, Any]:
    """The standard txt2img graph in API format (what workflows/t2i_basic renders)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch_size}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed if seed is not None else uuid.uuid4().int % 2**32,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": sampler,
                "scheduler": scheduler,
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def new_id() -> str:
    return str(uuid.uuid4())


def free_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture
async def client(comfyui: FakeComfyUI) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(comfyui.url, client_id="test-client", timeout=5.0, ws_quiet_seconds=5.0) as c:
        yield c


async def run(
    client: ComfyClient, graph: dict[str, Any], prompt_id: str | None = None, **follow: Any
) -> tuple[str, Any]:
    """watch → submit → follow, the way the pipeline does it."""
    pid = prompt_id or new_id()
    follow.setdefault("poll_interval", 0.5)
    async with client.watch(pid) as watch:
        await client.submit(graph, pid)
        entry = await client.follow(watch, pid, **follow)
    return pid, entry


# ------------------------------------------------------------------------ health


async def test_health_check_works_before_any_client_exists(comfyui: FakeComfyUI) -> None:
    report = await check_health(comfyui.url, retries=0)
    assert report.version == "0.3.64"
    assert report.devices and report.devices[0].name
    assert report.queue_length == 0
    assert report.url == comfyui.url


async def test_health_check_retries_through_a_short_outage(comfyui: FakeComfyUI) -> None:
    comfyui.configure(time_scale=100, unhealthy_for_seconds=3)
    report = await check_health(comfyui.url, retries=6, backoff=0.5, clock=ScaledClock(100))
    assert report.version == "0.3.64"


async def test_health_check_names_the_failing_endpoint_and_status(comfyui: FakeComfyUI) -> None:
    comfyui.configure(unhealthy_for_seconds=3600)
    with pytest.raises(ComfyUIUnavailable) as info:
        await check_health(comfyui.url, retries=2, backoff=1, clock=ScaledClock(1000))
    message = info.value.message
    assert "after 3 attempts" in message
    assert f"GET {comfyui.url}/system_stats: answered 503" in message
    assert info.value.retryable


async def test_health_check_says_connection_refused_when_nothing_listens() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ComfyUIUnavailable) as info:
        await check_health(url, retries=1, backoff=1, clock=ScaledClock(1000))
    assert f"GET {url}/system_stats: connection refused" in info.value.message


async def test_client_health_reports_queue_length(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    comfyui.configure(exec_seconds=30)
    await client.submit(txt2img(), new_id())
    await client.submit(txt2img(), new_id())
    report = await client.health(retries=0)
    assert report.queue_length == 2 and report.queue_running == 1


# --------------------------------------------------------------------- preflight


async def test_euler_a_is_refused_naming_euler_ancestral(client: ComfyClient) -> None:
    with pytest.raises(PreflightFailed) as info:
        await client.preflight("sd15-base.safetensors", "euler_a", "normal")
    message = info.value.message
    assert message.startswith("sampler 'euler_a' is not offered by this ComfyUI; did you mean 'euler_ancestral'?")
    assert "allowed: euler, " in message and "euler_ancestral" in message
    assert not info.value.retryable


async def test_unknown_scheduler_is_refused_listing_allowed_ones(client: ComfyClient) -> None:
    with pytest.raises(PreflightFailed) as info:
        await client.preflight(None, "euler", "karas")
    assert "scheduler 'karas' is not offered by this ComfyUI; did you mean 'karras'?" in info.value.message
    assert "normal" in info.value.message


async def test_missing_checkpoint_lists_installed_ones(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    with pytest.raises(PreflightFailed) as info:
        await client.preflight("sdxl-turbo.safetensors", "euler", "normal")
    message = info.value.message
    assert message.startswith("checkpoint 'sdxl-turbo.safetensors' is not offered by this ComfyUI")
    for name in comfyui.config.checkpoints:
        assert name in message


async def test_preflight_accepts_what_this_server_offers(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    assert await client.checkpoints() == list(comfyui.config.checkpoints)
    samplers, schedulers = await client.sampler_options()
    assert "euler_ancestral" in samplers and "karras" in schedulers
    await client.preflight(comfyui.config.checkpoints[0], "euler_ancestral", "karras")


async def test_preflight_checks_against_this_server_not_a_fixed_list(comfyui_factory: Any) -> None:
    other = await comfyui_factory(checkpoints=["only-this-one.safetensors"])
    async with ComfyClient(other.url) as c:
        await c.preflight("only-this-one.safetensors", "euler", "normal")
        with pytest.raises(PreflightFailed, match="allowed: only-this-one.safetensors"):
            await c.preflight("sd15-base.safetensors", "euler", "normal")


async def test_object_info_is_cached_for_a_short_while(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    first = await client.sampler_options()
    await comfyui.stop_listening()
    try:
        # Served from the cache although the server is gone.
        assert await client.sampler_options() == first
    finally:
        await comfyui.start_listening()


# ------------------------------------------------------------------------ submit


async def test_submit_uses_our_prompt_id_and_client_id(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    pid = new_id()
    number = await client.submit(txt2img(), pid)
    assert isinstance(number, int)
    record = comfyui.stats()["prompts"][-1]
    assert record["prompt_id"] == pid and record["client_id"] == "test-client"


async def test_bad_checkpoint_at_submit_is_one_readable_line(client: ComfyClient) -> None:
    with pytest.raises(PromptRejected) as info:
        await client.submit(txt2img(checkpoint="x.safetensors"), new_id())
    message = info.value.message
    assert message.startswith("node 4 (CheckpointLoaderSimple) ckpt_name: 'x.safetensors' not in [")
    assert "sd15-base.safetensors" in message
    assert "\n" not in message and "Traceback" not in message
    assert not info.value.retryable


async def test_bad_sampler_at_submit_lists_samplers_from_object_info(client: ComfyClient) -> None:
    with pytest.raises(PromptRejected) as info:
        await client.submit(txt2img(sampler="euler_a"), new_id())
    message = info.value.message
    assert message.startswith("node 3 (KSampler) sampler_name: 'euler_a' not in [euler, ")
    assert message.endswith("(did you mean 'euler_ancestral'?)")


async def test_link_to_missing_node_drops_the_traceback(client: ComfyClient) -> None:
    graph = {"2": {"class_type": "SaveImage", "inputs": {"images": ["77", 0], "filename_prefix": "x"}}}
    with pytest.raises(PromptRejected) as info:
        await client.submit(graph, new_id())
    assert info.value.message == "node 2 (SaveImage): Exception when validating node: KeyError '77'"


async def test_a_200_with_node_errors_is_refused_naming_the_node_and_taken_back_out_of_the_queue(
    comfyui: FakeComfyUI, client: ComfyClient
) -> None:
    # Two outputs; the second one's latent is below EmptyLatentImage's minimum. ComfyUI
    # queues the prompt for the valid output and answers 200, listing the other in node_errors.
    graph = txt2img()
    graph["11"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 1, "height": 64, "batch_size": 1}}
    graph["12"] = {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["4", 2]}}
    graph["13"] = {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "x"}}
    pid = new_id()
    with pytest.raises(PromptRejected) as info:
        await client.submit(graph, pid)
    message = info.value.message
    assert message.startswith("ComfyUI accepted only part of the workflow"), message
    assert "node 11 (EmptyLatentImage)" in message and "width" in message, message
    assert not info.value.retryable
    stats = comfyui.stats()
    assert stats["submissions"] == {pid: 1}  # it was queued: the stand-in answers as ComfyUI does
    assert pid in stats["deletes"] and pid not in stats["pending"]
    assert stats["running"] in ([], [pid]) and (not stats["running"] or pid in stats["interrupts"])


async def test_ui_format_workflow_is_refused_before_sending(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    with pytest.raises(PromptRejected, match="API format"):
        await client.submit({"nodes": [], "links": []}, new_id())
    assert comfyui.stats()["submissions"] == {}


async def test_comfyui_down_makes_submit_unavailable_and_retryable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with ComfyClient(url) as c:
        with pytest.raises(ComfyUIUnavailable) as info:
            await c.submit(txt2img(), new_id())
    assert info.value.retryable
    assert f"POST {url}/prompt: connection refused" in info.value.message


@pytest_asyncio.fixture
async def odd_server() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A tiny server that answers /prompt with whatever status the test sets (500, 502, 503…)."""
    answer = {"status": 500}

    async def prompt(request: web.Request) -> web.Response:
        if answer["status"] == 500:
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        return web.Response(status=answer["status"], text="<html>bad gateway</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/prompt", prompt)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", answer
    finally:
        await runner.cleanup()


async def test_500_at_submit_is_a_rejection_not_an_outage(odd_server: tuple[str, dict[str, int]]) -> None:
    url, _ = odd_server
    async with ComfyClient(url) as c:
        with pytest.raises(PromptRejected) as info:
            await c.submit(txt2img(), new_id())
    assert not info.value.retryable
    assert "500" in info.value.message and "not an outage" in info.value.message


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_errors_at_submit_are_unavailable(odd_server: tuple[str, dict[str, int]], status: int) -> None:
    url, answer = odd_server
    answer["status"] = status
    async with ComfyClient(url) as c:
        with pytest.raises(ComfyUIUnavailable, match=str(status)):
            await c.submit(txt2img(), new_id())


# ------------------------------------------------------------------------ follow


async def test_prompt_runs_to_success_and_lists_outputs(client: ComfyClient) -> None:
    pid, entry = await run(client, txt2img(batch_size=2, prefix="run/ok"))
    assert entry.prompt_id == pid and entry.succeeded
    assert len(entry.output_images) == 2
    assert all(image.subfolder == "run" for image in entry.output_images)


async def test_progress_callbacks(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    comfyui.configure(exec_seconds=0.5)
    seen: list[ProgressUpdate] = []

    async def on_progress(update: ProgressUpdate) -> None:
        seen.append(update)

    await run(client, txt2img(steps=5), on_progress=on_progress, poll_interval=10)
    steps = [(u.value, u.max) for u in seen if u.max]
    assert steps == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert all(u.running for u in seen if u.max)


async def test_queue_position_is_reported_while_waiting(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    comfyui.configure(exec_seconds=1.0)
    first, second = new_id(), new_id()
    await client.submit(txt2img(steps=2), first)
    seen: list[ProgressUpdate] = []
    _, entry = await run(client, txt2img(steps=2), second, on_progress=seen.append, poll_interval=0.1)
    assert entry.succeeded
    assert seen[0].queue_position == 1 and not seen[0].running
    assert seen[-1].running and seen[-1].queue_position == 0


async def test_one_websocket_serves_many_prompts(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    comfyui.configure(exec_seconds=0.2)
    progress: dict[int, list[ProgressUpdate]] = {0: [], 1: [], 2: []}
    results = await asyncio.gather(
        *(run(client, txt2img(steps=3), on_progress=progress[i].append, poll_interval=5) for i in range(3))
    )
    assert all(entry.succeeded for _, entry in results)
    assert client.hub.connections == 1
    assert comfyui.stats()["sockets"] == ["test-client"]
    for updates in progress.values():  # every follower got its own step frames
        assert [(u.value, u.max) for u in updates if u.max][-1] == (3, 3)


async def test_runtime_failure_is_execution_failed_with_the_message(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    comfyui.configure(fail_next_prompt=1, fail_message="Allocation on device")
    with pytest.raises(ExecutionFailed) as info:
        await run(client, txt2img())
    message = info.value.message
    assert message.startswith("node 3 (KSampler) failed: torch.OutOfMemoryError: Allocation on device")
    assert "Traceback" not in message and "File " not in message


async def test_lost_prompt_is_reported_lost(comfyui: FakeComfyUI) -> None:
    comfyui.configure(lose_next_prompt=1, time_scale=100)
    async with ComfyClient(comfyui.url, clock=ScaledClock(100)) as c:
        with pytest.raises(PromptLost) as info:
            await run(c, txt2img(), lost_polls=3, poll_interval=2)
    assert info.value.retryable
    assert "neither the queue nor the history" in info.value.message


async def test_restarted_comfyui_loses_the_running_prompt(comfyui: FakeComfyUI) -> None:
    comfyui.configure(exec_seconds=600, time_scale=100)
    async with ComfyClient(comfyui.url, clock=ScaledClock(100), ws_quiet_seconds=30) as c:
        pid = new_id()
        async with c.watch(pid) as watch:
            await c.submit(txt2img(), pid)
            task = asyncio.create_task(c.follow(watch, pid, poll_interval=2, lost_polls=3))
            await asyncio.sleep(0.1)
            await comfyui.restart()
            with pytest.raises(PromptLost):
                await task


async def test_silent_websocket_still_completes_by_polling(comfyui: FakeComfyUI) -> None:
    comfyui.configure(ws_mode="silent", exec_seconds=5, time_scale=100)
    async with ComfyClient(comfyui.url, clock=ScaledClock(100), ws_quiet_seconds=2) as c:
        seen: list[ProgressUpdate] = []
        _, entry = await run(c, txt2img(), on_progress=seen.append, poll_interval=1)
        assert entry.succeeded
        assert not [u for u in seen if u.max]  # no frames ever arrived
        # The quiet socket was replaced at least once while the job ran.
        assert c.hub.connections >= 2


async def test_dropped_websocket_reconnects(comfyui: FakeComfyUI) -> None:
    comfyui.configure(ws_mode="drop", ws_drop_after=4, exec_seconds=10, time_scale=100)
    async with ComfyClient(comfyui.url, clock=ScaledClock(100)) as c:
        _, entry = await run(c, txt2img(steps=10), poll_interval=30)
        assert entry.succeeded
        assert c.hub.connections >= 2


async def test_job_longer_than_300_simulated_seconds_succeeds_under_longer_deadline(comfyui: FakeComfyUI) -> None:
    comfyui.configure(exec_seconds=534, time_scale=200)
    clock = ScaledClock(200)
    async with ComfyClient(comfyui.url, clock=clock, timeout=5) as c:
        started = clock.now()
        _, entry = await run(c, txt2img(steps=20), deadline_at=clock.now() + 900, poll_interval=5)
        assert entry.succeeded
        assert clock.now() - started >= 500


async def test_deadline_exceeded(comfyui: FakeComfyUI) -> None:
    comfyui.configure(exec_seconds=534, time_scale=200)
    clock = ScaledClock(200)
    async with ComfyClient(comfyui.url, clock=clock) as c:
        pid = new_id()
        with pytest.raises(DeadlineExceeded):
            await run(c, txt2img(steps=20), pid, deadline_at=clock.now() + 60, poll_interval=5)
        # The caller cancels; the prompt then ends as interrupted.
        await c.cancel(pid)
        entry_body = await comfyui.wait_for_history(pid, within=5)
        assert entry_body["status"]["status_str"] == "error"


async def test_cancel_interrupts_running_prompt(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    comfyui.configure(exec_seconds=60)
    pid = new_id()
    seen: list[ProgressUpdate] = []
    async with client.watch(pid) as watch:
        await client.submit(txt2img(steps=600), pid)
        task = asyncio.create_task(client.follow(watch, pid, on_progress=seen.append, poll_interval=0.5))
        while not any(u.running for u in seen):
            await asyncio.sleep(0.01)
        await client.cancel(pid)
        with pytest.raises(Interrupted) as info:
            await asyncio.wait_for(task, timeout=10)
    assert "node 3 (KSampler)" in info.value.message
    assert pid in comfyui.stats()["interrupts"]


async def test_cancel_removes_pending_prompt_without_touching_the_running_one(
    comfyui: FakeComfyUI, client: ComfyClient
) -> None:
    comfyui.configure(exec_seconds=2)
    running, waiting = new_id(), new_id()
    await client.submit(txt2img(), running)
    await client.submit(txt2img(), waiting)
    assert (await client.lookup(waiting)).phase is PromptPhase.PENDING
    await client.cancel(waiting)
    assert (await client.lookup(waiting)).phase is PromptPhase.UNKNOWN
    assert (await client.lookup(running)).phase is PromptPhase.RUNNING


async def test_lookup_tells_pending_running_done_and_unknown(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    comfyui.configure(exec_seconds=1)
    assert (await client.lookup("never-submitted")).phase is PromptPhase.UNKNOWN
    first, second = new_id(), new_id()
    await client.submit(txt2img(), first)
    await client.submit(txt2img(), second)
    await asyncio.sleep(0.05)
    assert (await client.lookup(first)).phase is PromptPhase.RUNNING
    state = await client.lookup(second)
    assert state.phase is PromptPhase.PENDING and state.position == 1
    await comfyui.wait_for_history(first, within=5)
    done = await client.lookup(first)
    assert done.phase is PromptPhase.DONE and done.entry is not None and done.entry.succeeded


async def test_attach_to_finished_prompt_returns_at_once(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    pid = new_id()
    await client.submit(txt2img(), pid)
    await comfyui.wait_for_history(pid, within=5)
    async with client.watch(pid) as watch:
        entry = await client.follow(watch, pid, poll_interval=3600)
    assert entry.succeeded


async def test_forget_deletes_the_history_entry(comfyui: FakeComfyUI, client: ComfyClient) -> None:
    pid, _ = await run(client, txt2img())
    await client.forget(pid)
    assert await client.history(pid) is None
    assert comfyui.stats()["history_deletes"] == [pid]


async def test_client_works_without_a_context_manager(comfyui: FakeComfyUI) -> None:
    c = ComfyClient(comfyui.url + "/")
    try:
        assert c.base_url == comfyui.url
        pid, entry = await run(c, txt2img())
        assert entry.prompt_id == pid
    finally:
        await c.aclose()


def test_relative_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        ComfyClient("127.0.0.1:8188")
    with pytest.raises(ValueError, match="absolute"):
        ComfyClient("/comfy")


async def test_watch_does_not_hang_when_comfyui_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with ComfyClient(url, ws_open_timeout=30) as c:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with c.watch(new_id()):
            assert not c.hub.connected
        assert loop.time() - started < 5


async def test_websocket_comes_back_after_comfyui_restarts(comfyui: FakeComfyUI) -> None:
    comfyui.configure(time_scale=100)
    async with ComfyClient(comfyui.url, clock=ScaledClock(100)) as c:
        _, first = await run(c, txt2img(prefix="before/x"))
        pid = new_id()
        async with c.watch(pid) as watch:
            await comfyui.restart(down_seconds=5)
            await asyncio.sleep(0.2)  # the port opens again after 5 simulated seconds
            await c.submit(txt2img(prefix="after/x"), pid)
            entry = await c.follow(watch, pid, poll_interval=1)
        assert first.succeeded and entry.succeeded
        assert c.hub.connections >= 2
