"""Benchmark of the core pipeline against the ComfyUI stand-in and nanio (prints figures).

    .venv/bin/python -m bench.bench_pipeline [--jobs 30] [--burst 100] [--exec 0.2]

1. overhead per job = wall time − ComfyUI execution time, p50/p95, for a 512×512 PNG
   and a 20 MB image (target: p50 ≤ 30 ms for 512×512);
2. a burst of jobs: wall time ÷ the time ComfyUI spent executing them (target ≤ 1.05:
   ComfyUI is never idle while we download or upload, because jobs are submitted ahead).
   "Execution time" is what the stand-in reports per prompt (started → finished), which
   includes its own PNG writing on top of the configured --exec;
3. peak RSS growth of the process moving a 100 MB image (target ≤ 32 MB).

The stand-in runs in its own thread (its own event loop) or process, so its CPU time
is not charged to the pipeline's loop. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from comfykube.comfyui.client import ComfyClient
from comfykube.pipeline import JobIdentity, Pipeline
from comfykube.settings import DEFAULT_WORKFLOWS_DIR, Settings
from comfykube.storage import MinioStore
from comfykube.types import ImageJobSpec
from comfykube.workflows import WorkflowLibrary
from tests.standins.comfyui import run_in_thread
from tests.standins.s3 import NanioServer

WORKFLOWS = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR])


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def make_pipeline(comfy: ComfyClient, settings: Settings) -> Pipeline:
    return Pipeline(comfy=comfy, store=MinioStore(settings), workflows=WORKFLOWS, poll_interval=2.0)


def job() -> JobIdentity:
    return JobIdentity("bench", "job", str(uuid.uuid4()))


def busy_seconds(records: list[dict[str, Any]], prompt_ids: set[str] | None = None) -> dict[str, float]:
    """How long the stand-in executed each prompt (its "GPU" time), by prompt id."""
    return {
        r["prompt_id"]: r["finished_at"] - r["started_at"]
        for r in records
        if "finished_at" in r and "started_at" in r and (prompt_ids is None or r["prompt_id"] in prompt_ids)
    }


async def overhead(comfy_server: Any, settings: Settings, runs: int, size: int) -> list[float]:
    """Per-job wall time minus the time ComfyUI spent executing it, sequential jobs."""
    spec = ImageJobSpec(prompt="bench", width=size, height=size, steps=10)
    walls: dict[str, float] = {}
    async with ComfyClient(comfy_server.url) as comfy:
        pipeline = make_pipeline(comfy, settings)
        await pipeline.run(spec, job())  # warm-up: connections, bucket, object_info cache
        for _ in range(runs):
            identity = job()
            started = time.perf_counter()
            await pipeline.run(spec, identity)
            walls[identity.uid] = time.perf_counter() - started
    busy = busy_seconds(comfy_server.stats()["prompts"], set(walls))
    return [walls[pid] - busy[pid] for pid in walls]


async def burst(comfy_server: Any, settings: Settings, jobs: int, inflight: int) -> tuple[float, float]:
    """Wall time of `jobs` concurrent jobs ÷ the time ComfyUI spent executing them (and that busy time)."""
    spec = ImageJobSpec(prompt="bench", width=512, height=512, steps=10)
    gate = asyncio.Semaphore(inflight)  # what the operator's per-backend cap does
    identities = [job() for _ in range(jobs)]
    async with ComfyClient(comfy_server.url) as comfy:
        pipeline = make_pipeline(comfy, settings)
        await pipeline.run(spec, job())

        async def one(identity: JobIdentity) -> None:
            async with gate:
                await pipeline.run(spec, identity)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in identities))
        wall = time.perf_counter() - started
    busy = sum(busy_seconds(comfy_server.stats()["prompts"], {i.uid for i in identities}).values())
    return wall / busy, busy


def rss_child(url: str, settings_json: str) -> None:
    """In a fresh process: move one 100 MB image, print peak RSS before and after (KiB)."""
    settings = Settings.model_validate_json(settings_json)

    async def run() -> dict[str, Any]:
        async with ComfyClient(url) as comfy:
            pipeline = make_pipeline(comfy, settings)
            spec = ImageJobSpec(prompt="warm", width=64, height=64, steps=1)
            await pipeline.run(spec, job())  # imports, connections and caches before the baseline
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            status = await pipeline.run(ImageJobSpec(prompt="big", width=512, height=512, steps=1), job())
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return {"before_kib": before, "after_kib": after, "bytes": status.images[0].bytes}

    print(json.dumps(asyncio.run(run())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="sequential jobs for the overhead figures")
    parser.add_argument("--burst", type=int, default=100, help="jobs in the burst")
    parser.add_argument("--exec", type=float, default=0.2, help="stand-in execution seconds per prompt")
    parser.add_argument("--inflight", type=int, default=4, help="jobs in flight (the operator's cap)")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return

    with tempfile.TemporaryDirectory() as tmp:
        nanio = NanioServer(Path(tmp) / "data")
        nanio.start()
        try:
            settings = Settings(
                minio_endpoint=nanio.endpoint, minio_access_key=nanio.access_key,
                minio_secret_key=nanio.secret_key, minio_bucket="bench",
            )
            with run_in_thread(exec_seconds=args.exec) as comfy:
                small = asyncio.run(overhead(comfy, settings, args.jobs, 512))
                comfy.configure(pad_bytes=20_000_000)
                large = asyncio.run(overhead(comfy, settings, max(5, args.jobs // 3), 512))
                comfy.configure(pad_bytes=0)
                ratio, busy = asyncio.run(burst(comfy, settings, args.burst, args.inflight))
                comfy.configure(pad_bytes=100_000_000)
                argv = ["-m", "bench.bench_pipeline", "--rss-child", comfy.url, settings.model_dump_json()]
                child = subprocess.run(
                    [sys.executable, *argv],
                    capture_output=True, text=True, check=True, env=dict(os.environ),
                )
                rss = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            nanio.stop()

    ms = 1000.0
    print(f"overhead 512x512 PNG  : p50 {statistics.median(small) * ms:6.1f} ms  p95 {pct(small, 95) * ms:6.1f} ms"
          f"  (n={len(small)}, target p50 <= 30 ms)")
    print(f"overhead 20 MB image  : p50 {statistics.median(large) * ms:6.1f} ms  p95 {pct(large, 95) * ms:6.1f} ms"
          f"  (n={len(large)})")
    print(f"burst {args.burst} jobs x {args.exec}s : wall / ComfyUI busy time = {ratio:.3f}  (busy {busy:.1f}s; "
          f"target <= 1.05, inflight {args.inflight})")
    growth = (rss["after_kib"] - rss["before_kib"]) / 1024
    print(f"100 MB image ({rss['bytes'] / 1e6:.0f} MB moved): peak RSS growth {growth:.1f} MB  (target <= 32 MB; "
          f"peak {rss['after_kib'] / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
