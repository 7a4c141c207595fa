"""Live previews, operator side: ComfyUI's binary preview frames → one small JPEG in the bucket.

The frames come from the ComfyUI stand-in started with a preview method (as the real
server needs `--preview-method`), over its real WebSocket; the preview lands in nanio;
status goes to the Kubernetes API stand-in. Time runs faster (`ScaledClock`).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import struct
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfykube.clock import Clock
from comfykube.comfyui import ComfyClient
from comfykube.comfyui.events import PreviewImage, parse_frame
from comfykube.controller.context import OperatorContext
from comfykube.controller.previews import MAX_SIDE, PreviewPublisher
from comfykube.controller.runner import run_job
from comfykube.controller.teardown import on_job_deleted
from comfykube.settings import Settings
from comfykube.storage import MinioStore, preview_key
from tests.standins.comfyui import FakeComfyUI
from tests.test_comfyui_client import new_id, txt2img
from tests.test_runner import SCALE, FlakyKubeApi, make_ctx, never, new_job

__all__ = ["make_ctx"]  # the fixture, shared with test_runner

LOG = logging.getLogger("test")
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg body"


def type4(meta: Any, image: bytes) -> bytes:
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return struct.pack(">II", 4, len(raw)) + raw + image


# ------------------------------------------------------------------ frames


def test_type_4_frames_name_their_prompt_node_and_type() -> None:
    event = parse_frame(type4({"prompt_id": "p1", "node_id": "3", "display_node_id": "3",
                               "image_type": "image/jpeg"}, JPEG))
    assert isinstance(event, PreviewImage)
    assert (event.prompt_id, event.node, event.content_type, event.data) == ("p1", "3", "image/jpeg", JPEG)
    # No image_type: the magic bytes say what it is.
    sniffed = parse_frame(type4({"prompt_id": "p1"}, b"\x89PNG\r\n\x1a\n.."))
    assert isinstance(sniffed, PreviewImage) and sniffed.content_type == "image/png"
    assert "jpeg body" not in repr(event), "the picture's bytes must not end up in logs"


def test_broken_type_4_frames_are_ignored() -> None:
    good_meta = {"prompt_id": "p1", "image_type": "image/jpeg"}
    assert parse_frame(type4(b"{not json", JPEG)) is None
    assert parse_frame(type4(b"[1, 2]", JPEG)) is None
    assert parse_frame(struct.pack(">II", 4, 10_000) + b"{}" + JPEG) is None  # length beyond the frame
    assert parse_frame(type4(good_meta, b"GIF89a")) is None  # not the picture it claims to be
    assert parse_frame(type4(good_meta, b"")) is None


@pytest.mark.parametrize("metadata", [True, False], ids=["type4", "type1"])
async def test_the_running_prompt_gets_its_preview_frames(comfyui_factory: Any, metadata: bool) -> None:
    """Type 4 names the prompt; type 1 (older servers) goes to the prompt that is executing."""
    fake: FakeComfyUI = await comfyui_factory(exec_seconds=0.2, preview_method="latent2rgb",
                                               preview_metadata=metadata)
    frames: list[PreviewImage] = []
    async with ComfyClient(fake.url, client_id="previews", timeout=5.0) as comfy:
        pid = new_id()
        async with comfy.watch(pid) as watch:
            await comfy.submit(txt2img(steps=4, width=128, height=64), pid)
            entry = await comfy.follow(watch, pid, poll_interval=0.5, on_preview=frames.append)
    assert entry.succeeded
    assert fake.stats()["previews_sent"] == {"4" if metadata else "1": 4}
    assert len(frames) == 4 and {f.prompt_id for f in frames} == {pid}
    with Image.open(io.BytesIO(frames[-1].data)) as img:
        assert (img.format, img.size) == ("JPEG", (16, 8))  # latent2rgb: 1/8 of the picture


async def test_no_preview_frames_without_a_preview_method(comfyui: FakeComfyUI) -> None:
    frames: list[PreviewImage] = []
    async with ComfyClient(comfyui.url, client_id="previews", timeout=5.0) as comfy:
        pid = new_id()
        async with comfy.watch(pid) as watch:
            await comfy.submit(txt2img(steps=3), pid)
            await comfy.follow(watch, pid, poll_interval=0.5, on_preview=frames.append)
    assert frames == [] and comfyui.stats()["previews_sent"] == {}


# ------------------------------------------------------------------ the operator


class TimedStore(MinioStore):
    """nanio through the real store; notes when each object was written (clock seconds)."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        super().__init__(settings)
        self.clock = clock
        self.puts: list[tuple[float, str]] = []

    async def put_verified(self, key: str, path: Path, **kwargs: Any) -> None:
        self.puts.append((self.clock.now(), key))
        await super().put_verified(key, path, **kwargs)


@pytest.fixture
def timed_ctx(make_ctx: Any) -> Any:
    """test_runner's in-process operator context, its store noting when it writes."""

    def make(comfy_url: str, **settings: Any) -> OperatorContext:
        ctx: OperatorContext = make_ctx(comfy_url, **settings)
        ctx.store = TimedStore(ctx.settings, ctx.clock)
        return ctx

    return make


async def test_previews_throttled_stored_small_named_once_in_status_and_deleted_at_the_end(
    timed_ctx: Any, kube_api_inprocess: Any, comfyui_factory: Any, tmp_path: Path
) -> None:
    # 20 steps over 40 simulated seconds: a frame every 2 s, a store allowed every 6 s.
    fake: FakeComfyUI = await comfyui_factory(exec_seconds=40, time_scale=SCALE, preview_method="taesd")
    ctx = timed_ctx(fake.url, preview_interval_seconds=6.0)
    store: TimedStore = ctx.store  # type: ignore[assignment]
    api: FlakyKubeApi = ctx.api  # type: ignore[assignment]
    job = await new_job(kube_api_inprocess, ctx, "fox", width=512, height=512, steps=20)
    key = preview_key("default", "fox", job["metadata"]["uid"])
    task = asyncio.create_task(run_job(ctx, job, never, LOG))
    seen: bytes | None = None
    try:
        async with asyncio.timeout(30):
            while seen is None:
                if await ctx.store.fetch_to(key, tmp_path / "seen.jpg", max_bytes=1 << 20) is not None:
                    seen = (tmp_path / "seen.jpg").read_bytes()
                await asyncio.sleep(0.02)
            running = await ctx.api.get("default", "fox")
            while running is not None and "preview" not in (running.get("status") or {}):
                await asyncio.sleep(0.02)
                running = await ctx.api.get("default", "fox")
            await task
    finally:
        task.cancel()
    assert running is not None and running["status"]["preview"]["key"] == key
    assert running["status"]["preview"]["intervalSeconds"] == 6.0
    assert "url" not in json.dumps(running["status"]["preview"]).lower(), "no presigned URL in status"
    with Image.open(io.BytesIO(seen)) as img:
        assert img.format == "JPEG" and max(img.size) <= MAX_SIDE  # the stand-in sent 512 px frames

    writes = [t for t, k in store.puts if k == key]
    assert 3 <= len(writes) <= 10, writes  # 20 frames came, one store per 3 of them at most
    gaps = [b - a for a, b in itertools.pairwise(writes)]
    assert min(gaps) >= 6.0 * 0.99, f"stored more often than once per interval: {gaps}"
    assert fake.stats()["previews_sent"]["4"] == 20  # every frame arrived; few were stored

    # Status learned of the preview once, riding on a write that happened anyway.
    with_preview = [p for p in api.patches if p.get("preview")]
    assert len(with_preview) == 1 and set(with_preview[0]) - {"preview"}, with_preview
    done = await ctx.api.get("default", "fox")
    assert done is not None and done["status"]["phase"] == "Succeeded"
    assert "preview" not in done["status"]
    assert await ctx.store.stat(key) is None, "the preview outlived the job"


async def test_no_previews_when_the_interval_is_zero(timed_ctx: Any, kube_api_inprocess: Any,
                                                     comfyui_factory: Any) -> None:
    fake: FakeComfyUI = await comfyui_factory(exec_seconds=4, time_scale=SCALE, preview_method="latent2rgb")
    ctx = timed_ctx(fake.url, preview_interval_seconds=0)
    job = await new_job(kube_api_inprocess, ctx, "dark", steps=4)
    async with asyncio.timeout(30):
        await run_job(ctx, job, never, LOG)
    store: TimedStore = ctx.store  # type: ignore[assignment]
    assert not [k for _, k in store.puts if k.endswith("preview.jpg")]
    assert fake.stats()["previews_sent"]  # ComfyUI sent them; the operator was told not to keep them


async def test_deleting_a_running_job_deletes_its_preview(make_ctx: Any, s3_settings: Settings) -> None:
    ctx = make_ctx("http://127.0.0.1:9")
    key = preview_key("default", "gone", "uid-1")
    publisher = PreviewPublisher(ctx.store, key, interval=1.0, clock=ctx.clock)
    await ctx.store.ensure_ready()
    publisher.offer(PreviewImage("uid-1", data=_jpeg(), content_type="image/jpeg"))
    async with asyncio.timeout(10):
        while publisher.stored == 0:
            await asyncio.sleep(0.01)
    await publisher.close(delete=False)  # the operator stopped; the object stays for the next one
    assert await ctx.store.stat(key) is not None
    body = {"metadata": {"namespace": "default", "name": "gone", "uid": "uid-1"}, "spec": {},
            "status": {"phase": "Running", "preview": {"key": "someone/else/0.png", "intervalSeconds": 2}}}
    await on_job_deleted(ctx, body, LOG)
    assert await ctx.store.stat(key) is None


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (600, 300), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()
