"""The ComfyUI stand-in answers like the recorded ComfyUI 0.3.64 (captures in tests/data/comfyui)."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from PIL import Image

from tests.captures import captures_dir
from tests.standins.comfyui import (
    FakeComfyUI,
    execution_order,
    run_in_thread,
    validate_prompt,
)
from tests.standins.comfyui_plugin import ComfyUIProcess

CAPTURES = captures_dir()
JSON_TYPE = "application/json; charset=utf-8"


def cap(number: int) -> dict[str, Any]:
    """One capture file by its number."""
    (path,) = CAPTURES.glob(f"{number:02}_*.json")
    return dict(json.loads(path.read_text()))


def shape(value: Any) -> Any:
    """Keys and value types, recursively (lists: the shape of their first element)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def single_graph(prefix: str = "capture/single image", color: int = 16744448, batch: int = 1) -> dict[str, Any]:
    """The model-free graph of capture 14."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": batch, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def txt2img_graph(
    *,
    seed: int = 42,
    steps: int = 1,
    prefix: str = "capture/txt2img",
    width: int = 64,
    height: int = 64,
    batch: int = 1,
    ckpt: str = "random-sd15.safetensors",
    sampler: str = "euler",
    scheduler: str = "normal",
) -> dict[str, Any]:
    """The standard txt2img graph of capture 72."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in the snow", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": sampler, "scheduler": scheduler,
                "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


class WS:
    """A WebSocket client that records every frame."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, url: str, client_id: str | None = None) -> WS:
        session = aiohttp.ClientSession()
        query = f"?clientId={client_id}" if client_id else ""
        ws = await session.ws_connect(url.replace("http://", "ws://") + "/ws" + query)
        return cls(session, ws)

    async def next(self, within: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=within)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame = dict(json.loads(msg.data))
        self.frames.append(frame)
        return frame

    async def until_done(self, prompt_id: str, within: float = 10.0) -> list[dict[str, Any]]:
        """Frames up to and including ``executing {node: null}`` for ``prompt_id``."""
        start = len(self.frames)
        deadline = time.monotonic() + within
        while True:
            frame = await self.next(within=max(0.1, deadline - time.monotonic()))
            data = frame["data"]
            if frame["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return self.frames[start:]

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


def kinds(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


async def submit(client: httpx.AsyncClient, graph: dict[str, Any], **extra: Any) -> dict[str, Any]:
    resp = await client.post("/prompt", json={"prompt": graph, **extra})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


@pytest.fixture
async def client(comfyui: FakeComfyUI) -> Any:
    async with httpx.AsyncClient(base_url=comfyui.url, timeout=10) as c:
        yield c


# ---- plain routes ---------------------------------------------------------------------------


async def test_simple_routes_match_captures(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    root = await client.get("/")
    assert root.status_code == 200 and root.headers["content-type"] == "text/html"
    assert root.headers["cache-control"] == "no-cache"
    for path in ("/system_stats", "/api/system_stats"):
        r = await client.get(path)
        assert r.headers["content-type"] == JSON_TYPE
        assert shape(r.json()) == shape(cap(2)["response"]["body"])
        assert r.json()["system"]["comfyui_version"] == "0.3.64"
    for number, path in ((4, "/queue"), (5, "/prompt"), (6, "/features"), (9, "/object_info/NoSuchNode"),
                         (11, "/history/00000000-0000-0000-0000-000000000000")):
        for prefix in ("", "/api"):
            r = await client.get(prefix + path)
            assert r.status_code == 200 and r.headers["content-type"] == JSON_TYPE
            assert r.json() == cap(number)["response"]["body"], path
    r = await client.get("/object_info/EmptyImage")
    assert r.json() == cap(7)["response"]["body"]
    assert (await client.get("/models/checkpoints")).json() == list(comfyui.config.checkpoints)
    assert (await client.get("/models/nope")).status_code == 404


async def test_object_info_lists(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    full = cap(82)["response_body"]
    ks = (await client.get("/object_info/KSampler")).json()["KSampler"]
    assert ks == full["KSampler"]
    assert len(ks["input"]["required"]["sampler_name"][0]) == 42
    assert len(ks["input"]["required"]["scheduler"][0]) == 9
    ckpt = (await client.get("/api/object_info/CheckpointLoaderSimple")).json()
    assert ckpt["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == list(comfyui.config.checkpoints)
    comfyui.config.checkpoints = ["other.safetensors"]
    everything = (await client.get("/object_info")).json()
    assert everything["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == ["other.safetensors"]
    assert {"KSampler", "SaveImage", "PreviewImage", "EmptyImage", "VAEDecode"} <= set(everything)


def test_execution_order_matches_capture_74() -> None:
    graph = txt2img_graph()
    catalogue = cap(82)["response_body"]
    assert execution_order(graph, ["9"], lambda _: False, catalogue) == ["4", "5", "7", "6", "3", "8", "9"]
    ok, error, outputs, node_errors = validate_prompt(graph, catalogue)
    assert ok and error is None and outputs == ["9"] and node_errors == {}


# ---- a successful run ------------------------------------------------------------------------


async def test_single_success_matches_captures(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    ws = await WS.connect(comfyui.url, "capture-client")
    observer = await WS.connect(comfyui.url, "observer")
    try:
        hello = await ws.next()
        assert hello == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                    "sid": "capture-client"}}
        await observer.next()
        body = await submit(client, single_graph(), client_id="capture-client")
        assert shape(body) == shape(cap(14)["response"]["body"])
        assert (await client.get(f"/history/{body['prompt_id']}")).json() == {}
        frames = await ws.until_done(body["prompt_id"])
        expected = cap(17)["messages"]
        assert kinds(frames) == [m["json"]["type"] for m in expected]
        for mine, real in zip(frames, expected, strict=True):
            assert shape(mine) == shape(real["json"]), mine["type"]
        executed = next(f for f in frames if f["type"] == "executed")
        image = executed["data"]["output"]["images"][0]
        assert image["subfolder"] == "capture" and image["filename"].startswith("single image_")

        entry = await comfyui.wait_for_history(body["prompt_id"])
        hist = (await client.get(f"/history/{body['prompt_id']}")).json()
        real_hist = cap(16)["response"]["body"]
        assert shape(hist[body["prompt_id"]]) == shape(next(iter(real_hist.values())))
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True

        # Only status frames for a socket with another clientId (capture 18).
        await asyncio.sleep(0.05)
        while True:
            try:
                await observer.next(within=0.2)
            except TimeoutError:
                break
        assert set(kinds(observer.frames)) == {"status"}

        view = await client.get("/view", params={**image})
        assert view.status_code == 200
        real_view = cap(19)["response"]["headers"]
        for header in ("Content-Disposition", "Content-Type", "Content-Length", "Etag", "Last-Modified",
                       "Accept-Ranges"):
            assert header in view.headers, header
        assert view.headers["content-disposition"] == f'filename="{image["filename"]}"'
        assert view.headers["content-type"] == real_view["Content-Type"]
        assert view.content[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(view.content)) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
            assert img.getpixel((0, 0)) == (255, 128, 0)  # color 16744448
            assert json.loads(img.text["prompt"]) == single_graph()
    finally:
        await ws.close()
        await observer.close()


async def test_txt2img_frames_progress_and_png(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    ws = await WS.connect(comfyui.url, "extra-08b93c")
    try:
        await ws.next()
        body = await submit(client, txt2img_graph(steps=3, prefix="x/steps3", width=96, height=72),
                            client_id="extra-08b93c")
        frames = await ws.until_done(body["prompt_id"])
        real = cap(81)["exchanges"]["ws_steps3"]["frames"][1:]
        assert [(f["type"], f["data"].get("node")) for f in frames] == [
            (f["type"], f["data"].get("node")) for f in real
        ]
        for mine, theirs in zip(frames, real, strict=True):
            assert shape(mine) == shape(theirs)
        progress = [f["data"] for f in frames if f["type"] == "progress"]
        assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "3"), (2, 3, "3"), (3, 3, "3")]
        entry = comfyui.history[body["prompt_id"]]
        real_entry = cap(81)["exchanges"]["hist_steps3"]
        assert shape(entry) == shape(next(iter(real_entry.values())))
        image = entry["outputs"]["9"]["images"][0]
        assert image == {"filename": "steps3_00001_.png", "subfolder": "x", "type": "output"}
        path = comfyui.output_dir / "x" / "steps3_00001_.png"
        with Image.open(path) as img:
            assert img.size == (96, 72)
    finally:
        await ws.close()


async def test_batch_counters_and_prefix_counters(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    (comfyui.output_dir / "capture").mkdir()
    # A file left by an earlier run: the counter continues after it, like ComfyUI's folder scan.
    (comfyui.output_dir / "capture" / "batch_00007_.png").write_bytes(b"x")
    body = await submit(client, single_graph(prefix="capture/batch", batch=2))
    entry = await comfyui.wait_for_history(body["prompt_id"])
    names = [i["filename"] for i in entry["outputs"]["2"]["images"]]
    assert names == ["batch_00008_.png", "batch_00009_.png"]
    body = await submit(client, single_graph(prefix="capture/other", color=1))
    entry = await comfyui.wait_for_history(body["prompt_id"])
    assert entry["outputs"]["2"]["images"][0]["filename"] == "other_00001_.png"
    real = cap(29)["response"]["body"]
    assert len(next(iter(real.values()))["outputs"]["2"]["images"]) == 2


# ---- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [40, 41, 42, 43, 44, 45, 47, 48, 49])
async def test_validation_errors_equal_captures(comfyui_factory: Any, number: int) -> None:
    fake = await comfyui_factory(checkpoints=["random-sd15.safetensors"])
    exchange = cap(number)
    async with httpx.AsyncClient(base_url=fake.url) as c:
        resp = await c.post("/prompt", json=exchange["request"]["json"])
    assert resp.status_code == exchange["response"]["status"] == 400
    assert resp.headers["content-type"] == JSON_TYPE
    assert resp.json() == exchange["response"]["body"]


async def test_validation_link_to_missing_node(client: httpx.AsyncClient) -> None:
    exchange = cap(46)
    resp = await client.post("/prompt", json=exchange["request"]["json"])
    real = exchange["response"]["body"]
    assert resp.status_code == 400
    body = resp.json()
    assert shape(body) == shape(real)
    assert body["error"] == real["error"]
    error = body["node_errors"]["2"]["errors"][0]
    assert error["type"] == "exception_during_validation" and error["details"] == "'77'"


async def test_validation_ksampler_lists_like_capture_81(comfyui_factory: Any) -> None:
    fake = await comfyui_factory(checkpoints=["random-sd15.safetensors"])
    real = cap(81)["exchanges"]
    async with httpx.AsyncClient(base_url=fake.url) as c:
        bad_sampler = await c.post("/prompt", json={"prompt": txt2img_graph(sampler="euler_a")})
        both = await c.post("/prompt", json={"prompt": txt2img_graph(sampler="euler_a", ckpt="nope.safetensors")})
        steps = await c.post("/prompt", json={"prompt": txt2img_graph(steps=20000)})
        scheduler = await c.post("/prompt", json={"prompt": txt2img_graph(scheduler="fancy")})
    assert bad_sampler.json() == real["bad_sampler"]["body"]
    assert both.json() == real["bad_sampler_and_ckpt"]["body"]
    assert list(both.json()["node_errors"]) == ["4", "3"]
    assert steps.json() == real["steps_too_big"]["body"]
    sched_error = scheduler.json()["node_errors"]["3"]["errors"][0]
    assert sched_error["type"] == "value_not_in_list"
    assert sched_error["details"].startswith("scheduler: 'fancy' not in ['simple', 'sgm_uniform'")
    assert sched_error["extra_info"]["input_config"][0][0] == "simple"


async def test_bad_checkpoint_lists_configured_names(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    resp = await client.post("/prompt", json={"prompt": txt2img_graph(ckpt="missing.safetensors")})
    error = resp.json()["node_errors"]["4"]["errors"][0]
    assert error["extra_info"]["input_config"][0] == list(comfyui.config.checkpoints)
    assert error["details"] == f"ckpt_name: 'missing.safetensors' not in {list(comfyui.config.checkpoints)}"


@pytest.mark.parametrize("number", [50, 51])
async def test_malformed_prompt_is_plain_500(client: httpx.AsyncClient, number: int) -> None:
    request = cap(number)["request"]
    real = cap(number)["response"]
    if request["raw_body"] is not None:
        resp = await client.post("/prompt", content=request["raw_body"].encode())
    else:
        resp = await client.post("/prompt", json=request["json"])
    assert resp.status_code == 500
    assert resp.text == real["body_text"]
    assert resp.headers["content-type"] == real["headers"]["Content-Type"]


# ---- queue, history, ids ---------------------------------------------------------------------


async def test_queue_order_front_delete_and_empty_history(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    comfyui.config.exec_seconds = 0.6
    a = await submit(client, txt2img_graph(steps=4, prefix="q/a"), client_id="c")
    b = await submit(client, single_graph(prefix="q/b", color=2), client_id="c")
    c = await submit(client, single_graph(prefix="q/c", color=3), client_id="c", front=True)
    assert c["number"] < 0 < b["number"]
    await asyncio.sleep(0.05)
    queue = (await client.get("/queue")).json()
    assert shape(queue) == shape(cap(64)["response"]["body"])
    assert [q[1] for q in queue["queue_running"]] == [a["prompt_id"]]
    assert sorted(q[1] for q in queue["queue_pending"]) == sorted([b["prompt_id"], c["prompt_id"]])
    assert queue["queue_running"][0][3] == {"client_id": "c"}
    assert (await client.get("/prompt")).json() == {"exec_info": {"queue_remaining": 3}}
    for p in (a, b, c):
        assert (await client.get(f"/history/{p['prompt_id']}")).json() == {}
    # Deleting the running prompt does nothing; deleting a pending one removes it (captures 65-67).
    for pid in (a["prompt_id"], b["prompt_id"]):
        resp = await client.post("/queue", json={"delete": [pid]})
        assert resp.status_code == 200 and resp.content == b""
    queue = (await client.get("/queue")).json()
    assert [q[1] for q in queue["queue_running"]] == [a["prompt_id"]]
    assert [q[1] for q in queue["queue_pending"]] == [c["prompt_id"]]
    comfyui.config.exec_seconds = 0.01
    await comfyui.wait_for_history(c["prompt_id"])
    assert list(comfyui.history) == [a["prompt_id"], c["prompt_id"]]
    assert (await client.get(f"/history/{b['prompt_id']}")).json() == {}
    assert comfyui.stats()["deletes"] == [a["prompt_id"], b["prompt_id"]]


async def test_client_prompt_id_reuse_runs_again(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    first = await submit(client, single_graph(prefix="dup/x", color=5), prompt_id="job-uid-1")
    assert first["prompt_id"] == "job-uid-1"
    await comfyui.wait_for_history("job-uid-1")
    second = await submit(client, single_graph(prefix="dup/y", color=6), prompt_id="job-uid-1")
    assert second["number"] == first["number"] + 1
    await comfyui.wait_idle()
    entry = (await client.get("/history/job-uid-1")).json()["job-uid-1"]
    assert entry["prompt"][0] == second["number"]
    assert entry["outputs"]["2"]["images"][0]["filename"] == "y_00001_.png"
    assert comfyui.stats()["submissions"] == {"job-uid-1": 2}


async def test_history_listing_and_delete(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(3):
        body = await submit(client, single_graph(prefix=f"h/{i}", color=i))
        ids.append(body["prompt_id"])
        await comfyui.wait_for_history(body["prompt_id"])
    assert list((await client.get("/history", params={"max_items": 2})).json()) == ids[1:]
    assert list((await client.get("/history", params={"max_items": 1, "offset": 0})).json()) == ids[:1]
    assert list((await client.get("/history")).json()) == ids
    resp = await client.post("/history", json={"delete": [ids[0]]})
    assert resp.status_code == 200 and resp.content == b""
    assert (await client.get(f"/history/{ids[0]}")).json() == {}
    await client.post("/api/history", json={"clear": True})
    assert (await client.get("/history")).json() == {}


# ---- cache, failure, interrupt ----------------------------------------------------------------


async def test_full_cache_hit_reports_previous_file(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    ws = await WS.connect(comfyui.url, "cache")
    try:
        await ws.next()
        first = await submit(client, single_graph(prefix="cache/same"), client_id="cache")
        await ws.until_done(first["prompt_id"])
        second = await submit(client, single_graph(prefix="cache/same"), client_id="cache")
        frames = await ws.until_done(second["prompt_id"])
        real = [m["json"] for m in cap(36)["messages"]]
        assert kinds(frames) == kinds(real)
        assert frames[3]["data"]["nodes"] == ["1", "2"]
        old = comfyui.history[first["prompt_id"]]["outputs"]["2"]["images"]
        assert next(f for f in frames if f["type"] == "executed")["data"]["output"]["images"] == old
        assert comfyui.history[second["prompt_id"]]["outputs"]["2"]["images"] == old
        assert shape(comfyui.history[second["prompt_id"]]) == shape(next(iter(cap(35)["response"]["body"].values())))
        assert sorted(p.name for p in (comfyui.output_dir / "cache").iterdir()) == ["same_00001_.png"]
        # After another graph ran, the same graph runs again and writes a new file (capture 34).
        other = await submit(client, single_graph(prefix="cache/other"), client_id="cache")
        await ws.until_done(other["prompt_id"])
        third = await submit(client, single_graph(prefix="cache/same"), client_id="cache")
        frames = await ws.until_done(third["prompt_id"])
        cached = next(f for f in frames if f["type"] == "execution_cached")["data"]["nodes"]
        assert cached == ["1"]  # EmptyImage is shared with "other"; SaveImage re-runs
        assert comfyui.history[third["prompt_id"]]["outputs"]["2"]["images"][0]["filename"] == "same_00002_.png"
    finally:
        await ws.close()


async def test_fail_next_prompt_is_execution_error(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    ws = await WS.connect(comfyui.url, "fail")
    try:
        await ws.next()
        comfyui.configure(fail_next_prompt=True)
        body = await submit(client, txt2img_graph(steps=2, prefix="fail/x"), client_id="fail")
        frames = await ws.until_done(body["prompt_id"])
        assert kinds(frames)[-3:] == ["execution_error", "status", "executing"]
        error = frames[-3]["data"]
        real_error = next(m["json"]["data"] for m in cap(54)["messages"] if m["json"]["type"] == "execution_error")
        assert set(error) == set(real_error)
        assert error["node_id"] == "3" and error["node_type"] == "KSampler"
        entry = (await client.get(f"/history/{body['prompt_id']}")).json()[body["prompt_id"]]
        real_entry = next(iter(cap(53)["response"]["body"].values()))
        assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
        assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in real_entry["status"]["messages"]]
        assert entry["outputs"] == {} and set(entry) == set(real_entry)
        # The switch is used up: the next prompt succeeds.
        again = await submit(client, txt2img_graph(steps=2, prefix="fail/y"), client_id="fail")
        frames = await ws.until_done(again["prompt_id"])
        assert "execution_success" in kinds(frames)
    finally:
        await ws.close()


async def test_prefix_outside_output_fails_like_capture_52(client: httpx.AsyncClient, comfyui: FakeComfyUI) -> None:
    body = await submit(client, cap(52)["request"]["json"]["prompt"])
    entry = await comfyui.wait_for_history(body["prompt_id"])
    last = entry["status"]["messages"][-1]
    assert last[0] == "execution_error" and last[1]["exception_type"] == "Exception"
    assert "Saving image outside the output folder is not allowed" in last[1]["exception_message"]
    assert last[1]["executed"] == ["1"]


async def test_targeted_interrupt(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    comfyui.config.exec_seconds = 10.0
    ws = await WS.connect(comfyui.url, "intr")
    try:
        await ws.next()
        body = await submit(client, txt2img_graph(steps=10, prefix="intr/x"), client_id="intr")
        while (await ws.next())["type"] != "executing" or ws.frames[-1]["data"]["node"] != "3":
            pass
        resp = await client.post("/interrupt", json={"prompt_id": "not-running-id"})
        assert resp.status_code == 200 and resp.content == b""
        assert comfyui.stats()["running"] == [body["prompt_id"]]
        started = time.monotonic()
        await client.post("/interrupt", json={"prompt_id": body["prompt_id"]})
        frames = await ws.until_done(body["prompt_id"])
        assert time.monotonic() - started < 3.0  # samplers notice at once, not after the 10 s run
        assert kinds(frames)[-3:] == ["execution_interrupted", "status", "executing"]
        real = next(m["json"]["data"] for m in cap(62)["messages"] if m["json"]["type"] == "execution_interrupted")
        data = frames[-3]["data"]
        assert set(data) == set(real)
        assert data["node_id"] == "3" and data["executed"] == ["4", "5", "7", "6"]
        entry = (await client.get(f"/history/{body['prompt_id']}")).json()[body["prompt_id"]]
        assert shape(entry["status"]) == shape(next(iter(cap(61)["response"]["body"].values()))["status"])
        assert entry["status"]["messages"][-1][0] == "execution_interrupted"
        assert comfyui.stats()["interrupts"] == ["not-running-id", body["prompt_id"]]
    finally:
        await ws.close()


async def test_global_interrupt_lands_at_next_node(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    comfyui.config.exec_seconds = 0.4  # two nodes, 0.2 s each
    body = await submit(client, single_graph(prefix="gi/x"))
    await asyncio.sleep(0.1)
    resp = await client.post("/interrupt")
    assert resp.status_code == 200 and resp.content == b""
    entry = await comfyui.wait_for_history(body["prompt_id"])
    last = entry["status"]["messages"][-1]
    assert last[0] == "execution_interrupted" and last[1]["node_id"] == "2" and last[1]["executed"] == ["1"]


# ---- failure switches ------------------------------------------------------------------------


async def test_lose_next_prompt(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    comfyui.config.lose_next_prompt = 1
    lost = await submit(client, single_graph(prefix="lost/x"), prompt_id="lost-1")
    assert lost["prompt_id"] == "lost-1"
    queue = (await client.get("/queue")).json()
    assert queue == {"queue_running": [], "queue_pending": []}
    kept = await submit(client, single_graph(prefix="lost/y"), prompt_id="kept-1")
    await comfyui.wait_for_history(kept["prompt_id"])
    assert (await client.get("/history/lost-1")).json() == {}
    stats = comfyui.stats()
    assert stats["submissions"] == {"lost-1": 1, "kept-1": 1}
    assert [(p["prompt_id"], p["outcome"]) for p in stats["prompts"]] == [("lost-1", "lost"), ("kept-1", "success")]


async def _one_image(fake: FakeComfyUI, client: httpx.AsyncClient, prefix: str) -> dict[str, Any]:
    body = await submit(client, txt2img_graph(prefix=prefix, width=128, height=64))
    entry = await fake.wait_for_history(body["prompt_id"])
    return dict(entry["outputs"]["9"]["images"][0])


async def test_image_modes(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    image = await _one_image(comfyui, client, "modes/img")
    size = (comfyui.output_dir / "modes" / image["filename"]).stat().st_size

    comfyui.config.image_mode = "empty"
    r = await client.get("/view", params=image)
    assert r.status_code == 200 and r.content == b""

    comfyui.config.image_mode = "html200"
    r = await client.get("/view", params=image)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.content.startswith(b"<!DOCTYPE html>")

    comfyui.config.image_mode = "wrong_magic"
    r = await client.get("/view", params=image)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] != b"\x89PNG\r\n\x1a\n"

    comfyui.config.image_mode = "not_found"
    r = await client.get("/view", params=image)
    assert r.status_code == 404 and r.content == b""

    comfyui.config.image_mode = "wrong_size"
    r = await client.get("/view", params=image)
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.size != (128, 64)

    comfyui.config.image_mode = "truncated"
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/view", params=image)
    async with aiohttp.ClientSession() as session:
        async with session.get(comfyui.url + "/view", params=image) as resp:
            assert resp.status == 200 and resp.content_length == size
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()

    comfyui.configure(image_mode="ok")
    r = await client.get("/view", params=image)
    assert r.status_code == 200 and len(r.content) == size
    with pytest.raises(ValueError):
        comfyui.configure(image_mode="bogus")
    with pytest.raises(ValueError):
        comfyui.configure(no_such_switch=1)


async def test_padded_png_streams_and_decodes(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    comfyui.config.pad_bytes = 20 * 1024 * 1024
    image = await _one_image(comfyui, client, "pad/big")
    total = 0
    chunks = []
    async with client.stream("GET", "/view", params=image) as resp:
        assert resp.status_code == 200
        assert int(resp.headers["content-length"]) > 20 * 1024 * 1024
        async for chunk in resp.aiter_bytes():
            total += len(chunk)
            if len(chunks) < 2:
                chunks.append(chunk)
    assert total == int(resp.headers["content-length"])
    path = comfyui.output_dir / "pad" / image["filename"]
    with Image.open(path) as img:
        img.load()
        assert img.size == (128, 64)
        assert "prompt" in img.text
    # The padding is a well-formed chunk with a valid CRC (strict decoders check it).
    data = path.read_bytes()
    pos = 8
    types = []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(data[pos + 4:pos + 8 + length]) == crc, kind
        types.append(kind)
        pos += 12 + length
    assert types == [b"IHDR", b"tEXt", b"IDAT", b"cpAd", b"IEND"]


async def test_view_parameters(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    weird = "weird dir/ünï cödé & #1"
    body = await submit(client, single_graph(prefix=f"{weird}/a & b #c ✓", color=7))
    entry = await comfyui.wait_for_history(body["prompt_id"])
    image = entry["outputs"]["2"]["images"][0]
    assert image == {"filename": "a & b #c ✓_00001_.png", "subfolder": weird, "type": "output"}
    r = await client.get("/view", params=image)
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    # Hand-built query with '+' for spaces, like capture 19's URL.
    from urllib.parse import urlencode

    r = await client.get("/view?" + urlencode(image))
    assert r.status_code == 200
    r = await client.get("/view", params={"filename": f"{image['filename']} [output]", "subfolder": weird})
    assert r.status_code == 200
    for number in (20, 21, 22, 23, 24, 25):
        real = cap(number)
        r = await client.get("/view", params=real["request"]["params"])
        assert r.status_code == real["response"]["status"], number
        assert r.content == b""
    r = await client.get("/view", params={**image, "channel": "rgb"})
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.size == (64, 64) and "prompt" not in img.info
    r = await client.get("/view", params={**image, "preview": "webp;50"})
    assert r.headers["content-type"] == "image/webp"


async def test_preview_image_is_temp(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    graph = single_graph()
    graph["2"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    body = await submit(client, graph)
    entry = await comfyui.wait_for_history(body["prompt_id"])
    image = entry["outputs"]["2"]["images"][0]
    assert image["type"] == "temp" and image["filename"].startswith("ComfyUI_temp_")
    assert (await client.get("/view", params=image)).status_code == 200
    assert (await client.get("/view", params={**image, "type": "output"})).status_code == 404


# ---- websocket behaviour ----------------------------------------------------------------------


async def test_ws_feature_flags_and_generated_sid(comfyui: FakeComfyUI) -> None:
    anon = await WS.connect(comfyui.url)
    flags = await WS.connect(comfyui.url, "ff-1")
    try:
        hello = await anon.next()
        assert shape(hello) == shape(cap(12)["messages"][0]["json"])
        assert len(hello["data"]["sid"]) == 32
        await flags.ws.send_json(cap(13)["sent"])
        frames = [await flags.next(), await flags.next()]
        assert frames == [m["json"] | ({"data": {**m["json"]["data"], "sid": "ff-1"}} if i == 0 else {})
                          for i, m in enumerate(cap(13)["messages"])]
    finally:
        await anon.close()
        await flags.close()


async def test_ws_reconnect_replaces_old_socket(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    old = await WS.connect(comfyui.url, "same")
    await old.next()
    new = await WS.connect(comfyui.url, "same")
    try:
        await new.next()
        body = await submit(client, single_graph(prefix="re/x"), client_id="same")
        frames = await new.until_done(body["prompt_id"])
        assert "executed" in kinds(frames)
        with pytest.raises(TimeoutError):
            while True:
                frame = await old.next(within=0.2)
                assert frame["type"] == "status"  # the replaced socket gets broadcasts only
    finally:
        await old.close()
        await new.close()


async def test_prompt_without_client_id_broadcasts_node_frames(comfyui: FakeComfyUI,
                                                               client: httpx.AsyncClient) -> None:
    # ComfyUI's send_sync(sid=None) goes to every socket; the add_message events
    # (execution_start, _cached, _success) and executed are only sent when there is a client_id.
    a = await WS.connect(comfyui.url, "a")
    b = await WS.connect(comfyui.url, "b")
    try:
        body = await submit(client, single_graph(prefix="bc/x"))
        await comfyui.wait_for_history(body["prompt_id"])
        for ws in (a, b):
            with pytest.raises(TimeoutError):
                while True:
                    await ws.next(within=0.2)
            assert set(kinds(ws.frames)) == {"status", "progress_state", "executing"}
            assert [f["data"]["node"] for f in ws.frames if f["type"] == "executing"] == ["1", "2"]
    finally:
        await a.close()
        await b.close()


async def test_reconnect_mid_run_gets_current_node(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    comfyui.config.exec_seconds = 1.0
    first = await WS.connect(comfyui.url, "mid")
    try:
        body = await submit(client, txt2img_graph(steps=5, prefix="mid/x"), client_id="mid")
        while (await first.next())["type"] != "executing" or first.frames[-1]["data"]["node"] != "3":
            pass
        second = await WS.connect(comfyui.url, "mid")
        try:
            assert (await second.next())["type"] == "status"
            assert await second.next() == {"type": "executing", "data": {"node": "3"}}
            frames = await second.until_done(body["prompt_id"])
            assert kinds(frames)[-2:] == ["status", "executing"]
        finally:
            await second.close()
    finally:
        await first.close()


async def test_ws_silent_and_drop(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    comfyui.config.ws_mode = "silent"
    quiet = await WS.connect(comfyui.url, "quiet")
    try:
        body = await submit(client, single_graph(prefix="ws/q"), client_id="quiet")
        await comfyui.wait_for_history(body["prompt_id"])
        with pytest.raises(TimeoutError):
            await quiet.next(within=0.3)
        assert not quiet.ws.closed
        assert (await client.get("/queue")).status_code == 200  # HTTP still fine
    finally:
        await quiet.close()
    comfyui.configure(ws_mode="drop", ws_drop_after=3)
    dropped = await WS.connect(comfyui.url, "drop")
    try:
        body = await submit(client, single_graph(prefix="ws/d"), client_id="drop")
        got = []
        while True:
            msg = await dropped.ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            got.append(json.loads(msg.data)["type"])
        assert got == ["status", "status", "status"]
        await comfyui.wait_for_history(body["prompt_id"])
    finally:
        await dropped.close()


# ---- outages and restarts ---------------------------------------------------------------------


async def test_unhealthy_then_recovers(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    comfyui.configure(unhealthy_for_seconds=0.3)
    r = await client.get("/system_stats")
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
    assert (await client.post("/prompt", json={"prompt": single_graph()})).status_code == 503
    assert (await client.get("/_standin/stats")).status_code == 200
    await asyncio.sleep(0.35)
    assert (await client.get("/system_stats")).status_code == 200


async def test_stop_listening_refuses_then_reopens(comfyui: FakeComfyUI) -> None:
    await comfyui.stop_listening(0.3)
    async with httpx.AsyncClient(base_url=comfyui.url) as c:
        with pytest.raises(httpx.ConnectError):
            await c.get("/system_stats")
    await asyncio.sleep(0.4)
    async with httpx.AsyncClient(base_url=comfyui.url) as c:
        assert (await c.get("/system_stats")).status_code == 200


async def test_restart_forgets_everything_but_the_port(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    done = await submit(client, single_graph(prefix="rs/a"), prompt_id="before-restart")
    await comfyui.wait_for_history("before-restart")
    comfyui.config.exec_seconds = 5.0
    running = await submit(client, txt2img_graph(prefix="rs/b", steps=5), prompt_id="running")
    await submit(client, txt2img_graph(prefix="rs/c", steps=5), prompt_id="pending")
    ws = await WS.connect(comfyui.url, "rs")
    await ws.next()
    port = comfyui.port
    await comfyui.restart()
    assert comfyui.port == port
    msg = await ws.ws.receive(timeout=2)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    await ws.close()
    async with httpx.AsyncClient(base_url=comfyui.url) as fresh:
        assert (await fresh.get("/queue")).json() == {"queue_running": [], "queue_pending": []}
        for pid in (done["prompt_id"], running["prompt_id"], "pending"):
            assert (await fresh.get(f"/history/{pid}")).json() == {}
        again = await submit(fresh, single_graph(prefix="rs/a", color=9))
        assert again["number"] == 0
    outcomes = {p["prompt_id"]: p["outcome"] for p in comfyui.stats()["prompts"]}
    assert outcomes["before-restart"] == "success"
    assert outcomes["running"] == outcomes["pending"] == "restarted"
    assert comfyui.stats()["restarts"] == 1


async def test_http_control_routes(comfyui: FakeComfyUI, client: httpx.AsyncClient) -> None:
    r = await client.post("/_standin/config", json={"image_mode": "empty", "fail_next_prompt": 2})
    assert r.status_code == 200 and r.json()["image_mode"] == "empty"
    assert comfyui.config.fail_next_prompt == 2
    assert (await client.post("/_standin/config", json={"image_mode": "nope"})).status_code == 400
    assert (await client.post("/_standin/config", json={"bogus": 1})).status_code == 400
    assert (await client.get("/_standin/config")).json()["fail_next_prompt"] == 2
    stats = (await client.get("/_standin/stats")).json()
    assert {"submissions", "prompts", "interrupts", "deletes"} <= set(stats)
    r = await client.post("/_standin/restart", json={"down_seconds": 0.2})
    assert r.status_code == 200
    async with httpx.AsyncClient(base_url=comfyui.url) as c:
        with pytest.raises(httpx.ConnectError):
            await c.get("/queue")
        await asyncio.sleep(0.3)
        assert (await c.get("/queue")).status_code == 200


# ---- other ways to run it ---------------------------------------------------------------------


def test_thread_mode_for_sync_code(tmp_path: Path) -> None:
    with run_in_thread(exec_seconds=0.02, output_dir=tmp_path) as server:
        resp = httpx.post(server.url + "/prompt", json={"prompt": single_graph(prefix="t/x")})
        pid = resp.json()["prompt_id"]
        deadline = time.monotonic() + 5
        while not (hist := httpx.get(f"{server.url}/history/{pid}").json()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert hist[pid]["status"]["status_str"] == "success"
        server.configure(image_mode="not_found")
        image = hist[pid]["outputs"]["2"]["images"][0]
        assert httpx.get(server.url + "/view", params=image).status_code == 404
        assert server.stats()["submissions"] == {pid: 1}
        server.restart()
        assert httpx.get(f"{server.url}/history/{pid}").json() == {}
    assert (tmp_path / "t" / "x_00001_.png").exists()


def test_subprocess_mode(comfyui_process: ComfyUIProcess) -> None:
    url = comfyui_process.url
    assert url.startswith("http://127.0.0.1:")
    assert httpx.get(url + "/system_stats").json()["system"]["comfyui_version"] == "0.3.64"
    comfyui_process.configure(exec_seconds=0.01, fail_next_prompt=1)
    resp = httpx.post(url + "/prompt", json={"prompt": single_graph(prefix="p/x"), "prompt_id": "proc-1"})
    assert resp.status_code == 200
    deadline = time.monotonic() + 5
    while not (hist := httpx.get(url + "/history/proc-1").json()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert hist["proc-1"]["status"]["status_str"] == "error"
    stats = comfyui_process.stats()
    assert stats["submissions"] == {"proc-1": 1}
    assert stats["prompts"][0]["outcome"] == "error"
    comfyui_process.restart()
    assert httpx.get(url + "/history/proc-1").json() == {}
    port = comfyui_process.port
    comfyui_process.respawn()
    assert comfyui_process.port == port
    assert comfyui_process.stats()["submissions"] == {}
