"""Live previews, bot side: the job message shows the operator's preview, blurred and throttled.

A real discord.py bot against the fake Discord; the test plays the operator: it writes
`status` to the Kubernetes API stand-in and overwrites the preview object in nanio as
fast as a sampler would, much faster than the edit interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import random
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from comfykube.settings import Settings
from comfykube.storage import preview_key
from comfykube_bot.previews import MAX_SIDE, PREVIEW_FILENAME
from tests.test_bot_support import BotWorld, bot_world, ephemeral_text, wait_for

INTERVAL = 0.5


@pytest.fixture
def core(tmp_path: Path, s3_server: Any, s3_bucket: str, comfyui: Any) -> Settings:
    return s3_server.settings(s3_bucket, comfyui_url=comfyui.url, output_dir=tmp_path / "out")


def noise_jpeg(seed: int, size: int = 256) -> bytes:
    rng = random.Random(seed)
    img = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


async def put_preview(world: BotWorld, key: str, data: bytes, n: int) -> None:
    assert world.store is not None
    path = world.workdir / f"preview-{n}.jpg"
    path.write_bytes(data)
    await world.store.put_verified(key, path, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                   content_type="image/jpeg")


async def start_job(world: BotWorld) -> tuple[str, dict[str, Any], int]:
    handle = await world.fake.slash_command("imagine", {"prompt": "a lighthouse"})
    await handle.wait_response()
    await wait_for(lambda: ephemeral_text(handle) and "Submitting" not in ephemeral_text(handle), what="reply")
    name = f"ij-{handle.id}"
    job = await wait_for(lambda: (world.job(name) or {}).get("metadata", {}).get("annotations", {}).get(
        "comfykube.dev/discord-message") and world.job(name), what="job message")
    assert world.store is not None
    await world.store.ensure_ready()
    return name, job, int(job["metadata"]["annotations"]["comfykube.dev/discord-message"])


def preview_edits(world: BotWorld, message_id: int, since: int) -> list[tuple[float, bytes]]:
    """(when, bytes) of every accepted edit of the message that uploaded a preview."""
    return [
        (rec.at, f.data)
        for rec in world.fake.requests[since:]
        if rec.method == "PATCH" and rec.status == 200 and rec.path.endswith(str(message_id))
        for f in rec.files if f.filename == PREVIEW_FILENAME
    ]


async def test_previews_throttled_blurred_small_and_replaced_by_the_result(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running(bot_edit_interval_seconds=INTERVAL) as bot:
        name, job, message_id = await start_job(world)
        key = preview_key(job["metadata"]["namespace"], name, job["metadata"]["uid"])
        since = len(world.fake.requests)
        world.patch_status(name, phase="Running", progress={"value": 0, "max": 60},
                           preview={"key": key, "intervalSeconds": 0.1})
        # A "sampler" for 4 s: a new preview and a progress write every 50 ms (80 of each).
        begin = time.monotonic()
        for step in range(1, 81):
            await put_preview(world, key, noise_jpeg(step), step)
            world.patch_status(name, progress={"value": step, "max": 80})
            await asyncio.sleep(max(0.0, begin + step * 0.05 - time.monotonic()))
        edits = preview_edits(world, message_id, since)
        assert len(edits) >= 3, "the job message never showed a live preview"
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(edits)]
        assert min(gaps) >= INTERVAL * 0.95, f"preview edits closer than the edit interval: {gaps}"
        every_edit = [rec.at for rec in world.fake.requests[since:]
                      if rec.method == "PATCH" and rec.status == 200 and rec.path.endswith(str(message_id))]
        assert min(b - a for a, b in itertools.pairwise(every_edit)) >= INTERVAL * 0.95
        assert len(edits) <= 4 / INTERVAL + 1
        # The metric counts an edit once Discord answered; one may still be on its way back.
        await wait_for(lambda: bot.metrics.preview_edits._value.get() == len(preview_edits(world, message_id, since)),
                       within=5, what="every preview edit counted once")

        shown = world.fake.message(message_id)
        assert [a.filename for a in shown.attachments] == [PREVIEW_FILENAME]
        with Image.open(io.BytesIO(edits[-1][1])) as img, Image.open(io.BytesIO(noise_jpeg(80))) as source:
            assert img.format == "JPEG" and max(img.size) <= MAX_SIDE
            # Blurred: the noise is smoothed away (a sharp copy would keep its spread).
            assert ImageStat.Stat(img.convert("L")).stddev[0] < ImageStat.Stat(source.convert("L")).stddev[0] / 3

        await world.succeed(name)
        await wait_for(lambda: bot.deliverer.delivered, within=10, what="the result delivered")
        await asyncio.sleep(INTERVAL * 2)  # a preview edit still on its way would land by now
        final = world.fake.message(message_id)
        assert PREVIEW_FILENAME not in [a.filename for a in final.attachments], "the result must replace it"
        assert final.attachments, "the result image is missing"
        assert len(bot.previews) == 0


async def test_a_preview_key_in_status_naming_another_object_is_not_followed(
    tmp_path: Path, core: Settings
) -> None:
    async with bot_world(tmp_path, core) as world, world.running(bot_edit_interval_seconds=INTERVAL) as bot:
        name, _job, message_id = await start_job(world)
        # Someone's picture elsewhere in the bucket, and a status that points at it.
        elsewhere = preview_key("other", "secret", "uid-x")
        await put_preview(world, elsewhere, noise_jpeg(1), 1)
        since = len(world.fake.requests)
        world.patch_status(name, phase="Running", progress={"value": 1, "max": 10},
                           preview={"key": elsewhere, "intervalSeconds": 0.1})
        await asyncio.sleep(INTERVAL * 4)
        assert preview_edits(world, message_id, since) == []
        assert bot.metrics.preview_edits._value.get() == 0


async def test_no_preview_without_status_preview(tmp_path: Path, core: Settings) -> None:
    """A job whose operator sends none (ComfyUI without --preview-method) edits progress only."""
    async with bot_world(tmp_path, core) as world, world.running(bot_edit_interval_seconds=INTERVAL) as bot:
        name, job, message_id = await start_job(world)
        key = preview_key(job["metadata"]["namespace"], name, job["metadata"]["uid"])
        await put_preview(world, key, noise_jpeg(2), 2)  # present, but status does not name it
        since = len(world.fake.requests)
        for step in range(1, 6):
            world.patch_status(name, phase="Running", progress={"value": step, "max": 5})
            await asyncio.sleep(0.3)
        assert preview_edits(world, message_id, since) == []
        assert len(bot.previews) == 0
