"""Benchmark of the core pipeline against the ComfyUI stand-in and nanio (prints figures).

    .venv/bin/python -m bench.bench_pipeline [--jobs 30] [--burst 20] [--exec 0.02] [--skip-large]

1. per workload — (a) EmptyImage 512×512 → SaveImage, (b) the same plus two ImageBlur(15),
   (c) txt2img 64×64, 1 step — and per store (local directory, S3 = nanio on loopback):
   overhead per job = wall time − ComfyUI execution time, p50/p95, split into phases
   (p50 of each, ms), and the ComfyUI HTTP requests per job (counted with httpx event
   hooks on the client, by method and path):
     pre     run() start → POST /prompt sent (health, preflight, lookup)
     submit  POST /prompt sent → the stand-in starts executing
     known   the stand-in finished → the pipeline knows the outputs (WS frame + /history)
     dl      /view download with the sha256 computed as bytes arrive (minus checks)
     checks  media checks: format, header decode, dimensions (in a thread)
     store   upload + verification (ETag, or a read-back) + presign; the presign runs beside
             the upload, so both spans are added up and `rest` can come out slightly negative
     rest    what is left: the thumbnail beyond the store, status reports, temp files, the result
2. a burst of 20 (a) jobs, 4 in flight: wall time ÷ the time ComfyUI spent executing them
   (issue #11 target ≤ 1.10). "Execution time" is what the stand-in reports per prompt
   (started → finished), which includes its own PNG writing;
3. overhead for a 20 MB image and peak RSS growth moving a 100 MB image (target ≤ 32 MB)
   (skipped with --skip-large).

The stand-in runs as its own process (`--standin process`, the default), as a real ComfyUI
does: in a thread of this process (`--standin thread`) its request handling and PNG writing
take the same GIL as the pipeline and are counted as the pipeline's overhead. Stamps are
wall-clock (`time.time`) on both sides, one machine. Not a test: it asserts nothing.
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
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

import comfykube.comfyui.download as download_module
from comfykube.comfyui.client import ComfyClient
from comfykube.pipeline import JobIdentity, Pipeline
from comfykube.settings import DEFAULT_WORKFLOWS_DIR, Settings
from comfykube.storage import ObjectStore, make_store
from comfykube.types import ImageJobSpec
from comfykube.workflows import WorkflowLibrary
from tests.standins.comfyui import run_in_thread
from tests.standins.comfyui_plugin import ComfyUIProcess
from tests.standins.s3 import NanioServer

WORKFLOWS = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR, Path(__file__).with_name("workflows")])
#: The issue's workloads: name → spec.
WORKLOADS: dict[str, ImageJobSpec] = {
    "(a) EmptyImage 512": ImageJobSpec(prompt="bench", workflow="empty_image", width=512, height=512),
    "(b) + 2 ImageBlur": ImageJobSpec(prompt="bench", workflow="empty_image_blur", width=512, height=512),
    "(c) t2i 64 1 step": ImageJobSpec(prompt="bench", width=64, height=64, steps=1),
}
PHASES = ("pre", "submit", "known", "dl", "checks", "store", "rest")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def job() -> JobIdentity:
    return JobIdentity("bench", "job", str(uuid.uuid4()))


def busy_seconds(records: list[dict[str, Any]], prompt_ids: set[str] | None = None) -> dict[str, float]:
    """How long the stand-in executed each prompt (its "GPU" time), by prompt id."""
    return {
        r["prompt_id"]: r["finished_at"] - r["started_at"]
        for r in records
        if "finished_at" in r and "started_at" in r and (prompt_ids is None or r["prompt_id"] in prompt_ids)
    }


class Probe:
    """Times the pipeline's steps by wrapping the client's and the store's methods (bench only).

    Wall-clock (`time.time`) stamps, the clock the stand-in's records use; per prompt id.
    """

    def __init__(self, comfy: ComfyClient, store: ObjectStore) -> None:
        self.stamps: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.requests: Counter[str] = Counter()
        self.current: str | None = None  # the job being timed (sequential runs only)
        self._wrap(comfy, "submit", "submit_at", lambda a, kw: a[1] if len(a) > 1 else kw["prompt_id"])
        self._wrap(comfy, "follow", "known_at", lambda a, kw: a[1], at_end=True)
        self._span(comfy, "download", "dl")
        self._span(store, "put_verified", "store")
        self._span(store, "presign", "store")
        original = download_module.check_media

        def dimensions(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                if self.current:
                    self.stamps[self.current]["checks"] += time.time() - started

        download_module.check_media = dimensions  # type: ignore[assignment]
        self.hook(comfy.http)

    def hook(self, http: httpx.AsyncClient) -> None:
        """Count every request the client sends, by method and path (ids folded)."""

        async def on_request(request: httpx.Request) -> None:
            path = request.url.path
            for prefix in ("/history/",):
                if path.startswith(prefix):
                    path = prefix + "{id}"
            self.requests[f"{request.method} {path}"] += 1

        http.event_hooks["request"] = [on_request]

    def _wrap(self, obj: Any, name: str, stamp: str, pid: Callable[..., str], at_end: bool = False) -> None:
        original = getattr(obj, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = pid(args, kwargs)
            if not at_end:
                self.stamps[key][stamp] = time.time()
            result = await original(*args, **kwargs)
            if at_end:
                self.stamps[key][stamp] = time.time()
            return result

        setattr(obj, name, wrapper)

    def _span(self, obj: Any, name: str, phase: str) -> None:
        original = getattr(obj, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            try:
                return await original(*args, **kwargs)
            finally:
                if self.current:
                    self.stamps[self.current][phase] += time.time() - started

        setattr(obj, name, wrapper)


@contextmanager
def comfyui_standin(mode: str, exec_seconds: float) -> Iterator[Any]:
    """The ComfyUI stand-in, as a process (like a real ComfyUI) or a thread of this process."""
    if mode == "thread":
        with run_in_thread(exec_seconds=exec_seconds) as server:
            yield server
        return
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "output"
        output.mkdir()
        server = ComfyUIProcess(output, Path(tmp) / "standin.log", ["--exec-seconds", str(exec_seconds)])
        server.start()
        try:
            yield server
        finally:
            server.kill()


@contextmanager
def nanio_settings() -> Iterator[Settings]:
    """Settings for an S3 store on a fresh nanio (loopback)."""
    with tempfile.TemporaryDirectory() as tmp:
        nanio = NanioServer(Path(tmp) / "data")
        nanio.start()
        try:
            yield Settings(
                minio_endpoint=nanio.endpoint, minio_access_key=nanio.access_key,
                minio_secret_key=nanio.secret_key, minio_bucket="bench",
            )
        finally:
            nanio.stop()


async def phases(comfy_server: Any, settings: Settings, spec: ImageJobSpec, runs: int) -> dict[str, Any]:
    """Sequential jobs: overhead per job, its phases and the requests per job."""
    async with ComfyClient(comfy_server.url) as comfy:
        store = make_store(settings)
        pipeline = Pipeline.from_settings(settings, comfy=comfy, store=store, workflows=WORKFLOWS)
        await pipeline.run(spec, job())  # warm-up: connections, bucket, object_info cache
        probe = Probe(comfy, store)
        walls: dict[str, tuple[float, float]] = {}
        for _ in range(runs):
            identity = job()
            probe.current = identity.uid
            started = time.time()
            await pipeline.run(spec, identity)
            walls[identity.uid] = (started, time.time())
        probe.current = None
    records = {r["prompt_id"]: r for r in comfy_server.stats()["prompts"] if r["prompt_id"] in walls}
    overhead: list[float] = []
    split: dict[str, list[float]] = {p: [] for p in PHASES}
    for pid, (started, ended) in walls.items():
        record, stamp = records[pid], probe.stamps[pid]
        execution = record["finished_at"] - record["started_at"]
        overhead.append(ended - started - execution)
        parts = {
            "pre": stamp["submit_at"] - started,
            "submit": record["started_at"] - stamp["submit_at"],
            "known": stamp["known_at"] - record["finished_at"],
            "dl": stamp["dl"] - stamp["checks"],
            "checks": stamp["checks"],
            "store": stamp["store"],
        }
        parts["rest"] = ended - started - execution - sum(parts.values())
        for name, value in parts.items():
            split[name].append(value)
    return {
        "overhead": overhead,
        "phases": {name: statistics.median(values) for name, values in split.items()},
        "requests": {k: v / runs for k, v in sorted(probe.requests.items())},
    }


async def burst(comfy_server: Any, settings: Settings, spec: ImageJobSpec, jobs: int, inflight: int) -> float:
    """Wall time of `jobs` concurrent jobs ÷ the time ComfyUI spent executing them."""
    gate = asyncio.Semaphore(inflight)  # what the operator's per-backend cap does
    identities = [job() for _ in range(jobs)]
    async with ComfyClient(comfy_server.url) as comfy:
        pipeline = Pipeline.from_settings(settings, comfy=comfy, store=make_store(settings), workflows=WORKFLOWS)
        await pipeline.run(spec, job())

        async def one(identity: JobIdentity) -> None:
            async with gate:
                await pipeline.run(spec, identity)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in identities))
        wall = time.perf_counter() - started
    busy = sum(busy_seconds(comfy_server.stats()["prompts"], {i.uid for i in identities}).values())
    return wall / busy


def rss_child(url: str, settings_json: str) -> None:
    """In a fresh process: move one 100 MB image, print peak RSS before and after (KiB)."""
    settings = Settings.model_validate_json(settings_json)

    async def run() -> dict[str, Any]:
        async with ComfyClient(url) as comfy:
            pipeline = Pipeline.from_settings(settings, comfy=comfy, store=make_store(settings), workflows=WORKFLOWS)
            spec = ImageJobSpec(prompt="warm", width=64, height=64, steps=1)
            await pipeline.run(spec, job())  # imports, connections and caches before the baseline
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            status = await pipeline.run(ImageJobSpec(prompt="big", width=512, height=512, steps=1), job())
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return {"before_kib": before, "after_kib": after, "bytes": status.images[0].bytes}

    print(json.dumps(asyncio.run(run())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="sequential jobs per workload and store")
    parser.add_argument("--burst", type=int, default=20, help="jobs in the burst")
    parser.add_argument("--exec", type=float, default=0.02, help="stand-in execution seconds per prompt")
    parser.add_argument("--inflight", type=int, default=4, help="jobs in flight (the operator's cap)")
    parser.add_argument("--skip-large", action="store_true", help="skip the 20 MB and 100 MB figures")
    parser.add_argument("--standin", choices=("process", "thread"), default="process",
                        help="run the ComfyUI stand-in as its own process (like a real ComfyUI) or a thread here")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return

    ms = 1000.0
    lines: list[str] = []
    standin = comfyui_standin(args.standin, args.exec)
    with tempfile.TemporaryDirectory() as out, nanio_settings() as s3, standin as comfy:
        stores = {"local": Settings(output_dir=Path(out)), "s3": s3}
        p50: dict[tuple[str, str], float] = {}
        for store_name, settings in stores.items():
            for name, spec in WORKLOADS.items():
                result = asyncio.run(phases(comfy, settings, spec, args.jobs))
                over = result["overhead"]
                p50[(store_name, name)] = statistics.median(over)
                split = "  ".join(f"{k} {v * ms:.1f}" for k, v in result["phases"].items())
                requests = sum(result["requests"].values())
                lines.append(
                    f"{store_name:5} {name:18}: overhead p50 {statistics.median(over) * ms:6.1f} ms  "
                    f"p95 {pct(over, 95) * ms:6.1f} ms  (n={len(over)})\n"
                    f"      phases p50 ms: {split}\n"
                    f"      ComfyUI requests/job: {requests:.1f}  "
                    + ", ".join(f"{k} {v:.1f}" for k, v in result["requests"].items())
                )
        for name in WORKLOADS:
            lines.append(f"s3 / local overhead p50, {name}: {p50[('s3', name)] / p50[('local', name)]:.2f}"
                         "  (target <= 1.5)")
        ratio = asyncio.run(burst(comfy, stores["local"], WORKLOADS["(a) EmptyImage 512"], args.burst, args.inflight))
        lines.append(f"burst {args.burst} x (a), local, {args.inflight} in flight: wall / ComfyUI busy time = "
                     f"{ratio:.3f}  (target <= 1.10)")
        if not args.skip_large:
            big = ImageJobSpec(prompt="bench", width=512, height=512, steps=10)
            comfy.configure(pad_bytes=20_000_000)
            large = asyncio.run(phases(comfy, s3, big, max(5, args.jobs // 3)))["overhead"]
            lines.append(f"s3    20 MB image       : overhead p50 {statistics.median(large) * ms:6.1f} ms  "
                         f"p95 {pct(large, 95) * ms:6.1f} ms  (n={len(large)})")
            comfy.configure(pad_bytes=100_000_000)
            argv = ["-m", "bench.bench_pipeline", "--rss-child", comfy.url, s3.model_dump_json()]
            child = subprocess.run(
                [sys.executable, *argv], capture_output=True, text=True, check=True, env=dict(os.environ),
            )
            rss = json.loads(child.stdout.strip().splitlines()[-1])
            growth = (rss["after_kib"] - rss["before_kib"]) / 1024
            lines.append(f"100 MB image ({rss['bytes'] / 1e6:.0f} MB moved): peak RSS growth {growth:.1f} MB  "
                         f"(target <= 32 MB; peak {rss['after_kib'] / 1024:.0f} MB)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
