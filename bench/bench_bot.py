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
   and how many progress states were coalesced away.
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
            await deferral_latency(world.fake, args.interactions)
            await edits_under_load(world, bot, args)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
