"""Benchmark of the Discord bot against the fake Discord and the stand-ins (prints figures, not a test).

    .venv/bin/python -m bench.bench_bot [--interactions 200] [--jobs 20] [--seconds 12] [--interval 2]

A real discord.py bot (in this process) logs in to the fake Discord (REST + gateway on loopback),
creates ImageJobs in the Kubernetes API stand-in (in-process, over HTTP) and reads images from nanio.
Figures:

1. interaction received → deferral accepted, p50/p99 over N `/imagine` interactions, measured by the
   fake Discord on its own clock (gateway dispatch → callback received; target p99 ≤ 150 ms). Each
   interaction also runs its full admission (two Kubernetes lists, a job message, a create), so the
   deferrals are measured under that load;
2. M jobs progressing at once (a status write per job every 100 ms, then the result): edits per job
   message, the smallest gap between two edits of one message (must stay ≥ the throttle interval),
   and how many progress states were coalesced away;
3. a 4-image job (four 512×512 PNGs in nanio) from "Succeeded" written to the 2×2 grid posted in
   Discord (read four originals, check their sha256, compose with Pillow in a thread, upload), p50/p99
   over G jobs (target p50 ≤ 300 ms on loopback). `--only-grid` runs only this one;
4. live previews: M jobs running at once, a progress write per job every 100 ms and each preview object
   in nanio overwritten every 500 ms (four times the operator's default rate): preview edits per job
   message per edit interval (must stay ≤ 1), the smallest gap between two edits of one message (the
   bot's send clock, and as the fake Discord received them), and preview bytes uploaded.
   `--only-previews` runs only this one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from comfykube_bot.main import ComfyBot
from tests.standins.comfyui import FakeComfyUI
from tests.standins.discord import FakeDiscord, make_png
from tests.standins.s3 import NanioServer, unique_bucket
from tests.test_bot_support import bot_world


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-bot-"))
    nanio = NanioServer(workdir / "nanio")
    nanio.start()
    comfy = FakeComfyUI(output_dir=workdir / "comfy")
    await comfy.start()
    core = nanio.settings(unique_bucket("bench"), comfyui_url=comfy.url, output_dir=workdir / "out")
    try:
        async with bot_world(workdir, core, fake=FakeDiscord()) as world, world.running(
            bot_max_active_jobs=100, bot_queue_cap=10_000, bot_edit_interval_seconds=args.interval,
        ) as bot:
            if not (args.only_grid or args.only_previews):
                await deferral_latency(world.fake, args.interactions)
                await edits_under_load(world, bot, args)
            if not args.only_previews:
                await grid_latency(world, bot, args.grids, args.interval)
            if not args.only_grid:
                await previews_under_load(world, bot, args)
    finally:
        await comfy.stop()
        nanio.stop()


async def deferral_latency(fake: FakeDiscord, count: int) -> None:
    latencies: list[float] = []
    handles = []
    for i in range(count):
        user = 1_600_000_000_000_000_000 + i % 50
        handle = await fake.slash_command("imagine", {"prompt": f"bench {i} --seed {i}"}, user_id=user)
        response = await handle.wait_response(timeout=5)
        latencies.append((response.at - handle.created_at) * 1000)
        handles.append(handle)
        await asyncio.sleep(0.02)  # ~40 commands/s: a busy server, not a flood
    # Let the admissions that are still running finish before the next phase.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(not h.followup_ids for h in handles):
        await asyncio.sleep(0.05)
    print(f"1. deferral latency over {count} /imagine interactions (fake Discord clock):")
    print(f"   p50 {percentile(latencies, 50):.1f} ms   p99 {percentile(latencies, 99):.1f} ms   "
          f"max {max(latencies):.1f} ms   (target p99 ≤ 150 ms)")


async def edits_under_load(world: Any, bot: ComfyBot, args: argparse.Namespace) -> None:
    fake = world.fake
    names: list[str] = []
    for i in range(args.jobs):
        user = 1_700_000_000_000_000_000 + i
        handle = await fake.slash_command("imagine", {"prompt": f"load {i}"}, user_id=user)
        await handle.wait_response()
        names.append(f"ij-{handle.id}")
    while any(world.job(n) is None for n in names):
        await asyncio.sleep(0.05)
    messages = {n: int(world.job(n)["metadata"]["annotations"]["comfykube.dev/discord-message"]) for n in names}
    start_requests = len(fake.requests)
    writes = 0
    steps = int(args.seconds / 0.1)
    begin = time.monotonic()
    for step in range(1, steps + 1):
        for name in names:
            world.patch_status(name, phase="Running", progress={"value": step, "max": steps})
            writes += 1
        await asyncio.sleep(max(0.0, begin + step * 0.1 - time.monotonic()))
    png = make_png(64, 64)
    for name in names:
        await world.succeed(name, png)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(bot.deliverer.delivered) < len(names):
        await asyncio.sleep(0.1)
    await asyncio.sleep(args.interval + 0.5)

    times: dict[int, list[float]] = defaultdict(list)
    for rec in fake.requests[start_requests:]:
        if rec.method == "PATCH" and rec.status == 200:
            mid = rec.path.rsplit("/", 1)[-1]
            if mid.isdigit() and int(mid) in messages.values():
                times[int(mid)].append(rec.at)
    per_job = [len(times[m]) for m in messages.values()]
    gaps = [b - a for ts in times.values() for a, b in itertools.pairwise(ts)]
    delivered = len(bot.deliverer.delivered)
    print(f"2. {args.jobs} jobs running at once for {args.seconds:.0f} s, {writes} status writes, "
          f"throttle {args.interval:g} s:")
    print(f"   edits per job message: min {min(per_job)}  median {statistics.median(per_job):g}  max {max(per_job)} "
          f"(ceiling {int(args.seconds / args.interval) + 2})")
    print(f"   smallest gap between two edits of one message: {min(gaps):.2f} s   "
          f"coalesced states: {int(bot.metrics.coalesced._value.get())}   results delivered: {delivered}/{args.jobs}")
    with contextlib.suppress(Exception):
        routes = defaultdict(int)
        for _t, _mid, route in bot.updater.edit_log:
            routes[route] += 1
        print(f"   edits by credential: {dict(routes)}")


def noise_png(size: int, seed: int) -> bytes:
    """A PNG that does not compress away (like a rendered picture, unlike a flat colour)."""
    import io
    import random

    from PIL import Image

    rng = random.Random(seed)
    img = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=1)
    return out.getvalue()


async def grid_latency(world: Any, bot: ComfyBot, count: int, interval: float) -> None:
    fake = world.fake
    pictures = [noise_png(512, i) for i in range(4)]
    latencies: list[float] = []
    for i in range(count):
        handle = await fake.slash_command("imagine", {"prompt": f"grid {i}", "count": 4},
                                          user_id=1_800_000_000_000_000_000 + i)
        await handle.wait_response()
        name = f"ij-{handle.id}"
        while world.job(name) is None or "comfykube.dev/discord-message" not in (
            world.job(name)["metadata"].get("annotations") or {}
        ):
            await asyncio.sleep(0.01)
        job = world.job(name)
        message = fake.message(int(job["metadata"]["annotations"]["comfykube.dev/discord-message"]))
        images = [await world.store_image(job, png, index=k) for k, png in enumerate(pictures)]
        # Past the throttle interval since the job message's last edit: what is measured is the grid's
        # own path, not the wait for the next edit slot.
        await asyncio.sleep(interval + 0.2)
        begin = time.monotonic()
        world.patch_status(name, phase="Succeeded", images=images, imageCount=4, url=images[0]["url"], seed=1,
                           startTime="2026-01-01T00:00:00Z", completionTime="2026-01-01T00:00:09Z")
        while not message.attachments:
            await asyncio.sleep(0.002)
        latencies.append((time.monotonic() - begin) * 1000)
        assert [a.filename for a in message.attachments] == [f"{name}-grid.jpg"], message.attachments
    print(f"3. 4-image job Succeeded → 2×2 grid posted, over {count} jobs (4 × 512² PNG, "
          f"{sum(len(p) for p in pictures) / 1e6:.1f} MB of originals each):")
    print(f"   p50 {percentile(latencies, 50):.0f} ms   p99 {percentile(latencies, 99):.0f} ms   "
          f"max {max(latencies):.0f} ms   (target p50 ≤ 300 ms)")


async def previews_under_load(world: Any, bot: ComfyBot, args: argparse.Namespace) -> None:
    import hashlib

    from comfykube.storage import preview_key
    from comfykube_bot.previews import PREVIEW_FILENAME

    fake = world.fake
    names: list[str] = []
    for i in range(args.jobs):
        handle = await fake.slash_command("imagine", {"prompt": f"preview {i}"}, user_id=1_900_000_000_000_000_000 + i)
        await handle.wait_response()
        names.append(f"ij-{handle.id}")
    while any(world.job(n) is None or "comfykube.dev/discord-message" not in (
        world.job(n)["metadata"].get("annotations") or {}
    ) for n in names):
        await asyncio.sleep(0.05)
    jobs = {n: world.job(n) for n in names}
    messages = {n: int(j["metadata"]["annotations"]["comfykube.dev/discord-message"]) for n, j in jobs.items()}
    keys = {n: preview_key(j["metadata"]["namespace"], n, j["metadata"]["uid"]) for n, j in jobs.items()}
    frames = [noise_png(256, 1000 + k) for k in range(8)]  # what a 256 px preview JPEG weighs, roughly
    await world.store.ensure_ready()
    start_requests = len(fake.requests)
    for n in names:
        world.patch_status(n, phase="Running", progress={"value": 0, "max": 100},
                           preview={"key": keys[n], "intervalSeconds": 0.1})
    steps = int(args.seconds / 0.1)
    begin = time.monotonic()
    path = Path(tempfile.mkdtemp(prefix="bench-preview-")) / "p.png"
    for step in range(1, steps + 1):
        if step % 5 == 1:  # a new preview every 0.5 s: four times the operator's default rate
            data = frames[step % len(frames)]
            path.write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            await asyncio.gather(*(world.store.put_verified(keys[n], path, size=len(data), sha256=digest,
                                                            content_type="image/png") for n in names))
        for n in names:
            world.patch_status(n, progress={"value": step, "max": steps})
        await asyncio.sleep(max(0.0, begin + step * 0.1 - time.monotonic()))
    elapsed = time.monotonic() - begin
    await asyncio.sleep(args.interval + 0.5)
    for n in names:
        world.patch_status(n, phase="Failed", reason="Cancelled", message="bench over")
    times: dict[int, list[float]] = defaultdict(list)
    uploaded = 0
    for rec in fake.requests[start_requests:]:
        previews = [f for f in rec.files if f.filename == PREVIEW_FILENAME]
        if rec.method == "PATCH" and rec.status == 200 and previews:
            times[int(rec.path.rsplit("/", 1)[-1])].append(rec.at)
            uploaded += sum(len(f.data) for f in previews)
    per_message = [len(times[m]) for m in messages.values()]
    per_interval = [count / (elapsed / args.interval) for count in per_message]
    gaps = [b - a for ts in times.values() for a, b in itertools.pairwise(ts)]
    sent: dict[int, list[float]] = defaultdict(list)
    for at, mid, _route in bot.updater.edit_log:
        if mid in times:
            sent[mid].append(at)
    send_gaps = [b - a for ts in sent.values() for a, b in itertools.pairwise(ts)]
    print(f"4. live previews: {args.jobs} jobs for {elapsed:.1f} s, a new preview every 0.5 s and a progress write "
          f"every 0.1 s per job, edit interval {args.interval:g} s:")
    print(f"   preview edits per message: min {min(per_message)}  median {statistics.median(per_message):g}  "
          f"max {max(per_message)};  per edit interval: max {max(per_interval):.2f} (must stay ≤ 1)")
    print(f"   smallest gap between two edits of one message: {min(send_gaps):.2f} s sent, "
          f"{min(gaps) if gaps else float('nan'):.2f} s received (preview edits)   "
          f"preview bytes uploaded to Discord: {uploaded / 1e3:.0f} kB   "
          f"metric comfykube_bot_preview_edits_total: {int(bot.metrics.preview_edits._value.get())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--grids", type=int, default=20)
    parser.add_argument("--only-grid", action="store_true", help="run only the grid figure (3)")
    parser.add_argument("--only-previews", action="store_true", help="run only the live-preview figure (4)")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
