"""Benchmark of input images (prints figures): what taking in a picture costs per job.

    .venv/bin/python -m bench.bench_inputs [--jobs 30] [--exec 0.2]

1. overhead per job = wall time − ComfyUI execution time, p50/p95, for img2img with a
   1 MB input image fetched over loopback (fetch, hash, magic bytes, full decode, upload)
   against t2i of the same output size; the difference of the p50s is what the input
   adds (target ≤ 10 ms);
2. peak RSS growth of a fresh process taking in a 100 MB input image (a valid PNG, most
   of it a private chunk): fetch, checks, upload (target ≤ 32 MB).

The ComfyUI stand-in and the picture server run in their own processes, as in a
deployment (as threads here they would share the GIL with the pipeline and their
work would count as its overhead); the RSS figure comes from a child process that
runs only the pipeline. Per-phase p50s (fetch, check, upload) say where the input's
cost goes. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench.bench_pipeline import busy_seconds, pct
from comfykube.comfyui.client import ComfyClient
from comfykube.inputs import InputLimits
from comfykube.inputs import prepare as prepare_module
from comfykube.pipeline import JobIdentity, Pipeline
from comfykube.settings import DEFAULT_WORKFLOWS_DIR, Settings
from comfykube.storage import MinioStore
from comfykube.types import ImageJobSpec, parse_spec
from comfykube.workflows import WorkflowLibrary
from tests.standins.s3 import NanioServer

WORKFLOWS = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR])
SIZE = 592  # a noise PNG this size is about 1 MB; t2i renders the same output size


def noise_png(path: Path, size: int) -> int:
    """A PNG of random pixels (incompressible: its size is about width × height × 3)."""
    rng = random.Random(7)
    Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(path, compress_level=1)
    return path.stat().st_size


def padded_png(path: Path, total: int) -> int:
    """A small valid PNG with a private chunk that brings it to `total` bytes (written in blocks)."""
    import io
    import struct

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 120, 200)).save(buf, format="PNG")
    data = buf.getvalue()
    pad = total - len(data) - 12
    block = b"\x00" * (1 << 20)
    crc = zlib.crc32(b"cpAd")
    with open(path, "wb") as out:
        out.write(data[:-12] + struct.pack(">I", pad) + b"cpAd")
        left = pad
        while left:
            n = min(left, len(block))
            out.write(block[:n])
            crc = zlib.crc32(block[:n], crc)
            left -= n
        out.write(struct.pack(">I", crc & 0xFFFFFFFF) + data[-12:])
    return path.stat().st_size


@contextmanager
def _process(argv: list[str], ready: re.Pattern[str]) -> Iterator[tuple[subprocess.Popen[str], re.Match[str]]]:
    """A child process, once a line of its stdout matches `ready`; terminated at the end."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ))
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            found = ready.search(line)
            if found:
                break
        else:
            raise RuntimeError(f"{argv} exited before it was ready")
        yield proc, found
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """A static file server on loopback in its own process (the picture's web server)."""
    argv = ["-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory), "0"]
    with _process(argv, re.compile(r"port (\d+)")) as (_, found):
        yield f"http://127.0.0.1:{found.group(1)}"


class ComfyProcess:
    """The ComfyUI stand-in in its own process; `stats()` over its control endpoint."""

    def __init__(self, url: str) -> None:
        self.url = url

    def stats(self) -> dict[str, Any]:
        """The stand-in's counters and prompt records."""
        result: dict[str, Any] = httpx.get(f"{self.url}/_standin/stats", timeout=30).json()
        return result


@contextmanager
def comfy_process(exec_seconds: float) -> Iterator[ComfyProcess]:
    """`python -m tests.standins.comfyui --port 0` until the block ends."""
    argv = ["-m", "tests.standins.comfyui", "--port", "0", "--exec-seconds", str(exec_seconds)]
    with _process(argv, re.compile(r"READY (\S+)")) as (_, found):
        yield ComfyProcess(found.group(1))


class PhaseTimer:
    """Per-job seconds in fetch, check and upload (wraps the input module's calls; bench only)."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, float]] = []

    @contextmanager
    def installed(self, comfy: ComfyClient) -> Iterator[None]:
        """Wrap fetch_url, check_image (as prepare.py calls them) and this client's upload_image."""
        originals = {name: getattr(prepare_module, name) for name in ("fetch_url", "check_image")}
        upload = comfy.upload_image

        def timed(phase: str, fn: Any) -> Any:
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    if self.jobs:
                        self.jobs[-1][phase] = self.jobs[-1].get(phase, 0.0) + time.perf_counter() - started
            return wrapper

        prepare_module.fetch_url = timed("fetch", originals["fetch_url"])
        prepare_module.check_image = timed("check", originals["check_image"])
        comfy.upload_image = timed("upload", upload)
        try:
            yield
        finally:
            for name, fn in originals.items():
                setattr(prepare_module, name, fn)
            comfy.upload_image = upload

    def p50(self, phase: str) -> float:
        """Median seconds of one phase over the timed jobs (0 when it never ran)."""
        return statistics.median(j.get(phase, 0.0) for j in self.jobs) if self.jobs else 0.0


def make_pipeline(comfy: ComfyClient, settings: Settings) -> Pipeline:
    return Pipeline(
        comfy=comfy, store=MinioStore(settings), workflows=WORKFLOWS, poll_interval=2.0,
        input_limits=InputLimits(max_bytes=128 * 1024 * 1024, allow_private=True),
    )


def job() -> JobIdentity:
    return JobIdentity("bench", "job", str(uuid.uuid4()))


async def overhead(
    comfy_server: ComfyProcess, settings: Settings, runs: int, spec: ImageJobSpec, phases: PhaseTimer
) -> list[float]:
    """Per-job wall time minus the time ComfyUI spent executing it, sequential jobs."""
    walls: dict[str, float] = {}
    async with ComfyClient(comfy_server.url) as comfy:
        pipeline = make_pipeline(comfy, settings)
        await pipeline.run(spec, job())  # warm-up
        with phases.installed(comfy):
            for _ in range(runs):
                identity = job()
                phases.jobs.append({})
                started = time.perf_counter()
                await pipeline.run(spec, identity)
                walls[identity.uid] = time.perf_counter() - started
    busy = busy_seconds(comfy_server.stats()["prompts"], set(walls))
    return [walls[pid] - busy[pid] for pid in walls]


def rss_child(comfy_url: str, settings_json: str, picture_base: str) -> None:
    """In a fresh process: take in one 100 MB input image; print peak RSS before and after (KiB)."""
    settings = Settings.model_validate_json(settings_json)

    async def run() -> dict[str, Any]:
        async with ComfyClient(comfy_url) as comfy:
            pipeline = make_pipeline(comfy, settings)
            warm = parse_spec({"prompt": "warm", "workflow": "upscale",
                               "images": [{"name": "init", "url": f"{picture_base}/small.png"}]})
            await pipeline.run(warm, job())  # imports, connections, caches before the baseline
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            big = parse_spec({"prompt": "big", "workflow": "upscale",
                              "images": [{"name": "init", "url": f"{picture_base}/big.png"}]})
            status = await pipeline.run(big, job())
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return {"before_kib": before, "after_kib": after, "outputs": len(status.images)}

    print(json.dumps(asyncio.run(run())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="sequential jobs per kind")
    parser.add_argument("--exec", type=float, default=0.2, help="stand-in execution seconds per prompt")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return

    with tempfile.TemporaryDirectory() as tmp:
        pictures = Path(tmp) / "pictures"
        pictures.mkdir()
        one_mb = noise_png(pictures / "init.png", SIZE)
        noise_png(pictures / "small.png", 64)
        hundred_mb = padded_png(pictures / "big.png", 100_000_000)
        nanio = NanioServer(Path(tmp) / "data")
        nanio.start()
        try:
            settings = Settings(
                minio_endpoint=nanio.endpoint, minio_access_key=nanio.access_key,
                minio_secret_key=nanio.secret_key, minio_bucket="bench",
            )
            with serve_directory(pictures) as base, comfy_process(args.exec) as comfy:
                t2i = ImageJobSpec(prompt="bench", width=SIZE, height=SIZE, steps=10)
                img2img = parse_spec({"prompt": "bench", "workflow": "img2img", "steps": 10,
                                      "images": [{"name": "init", "url": f"{base}/init.png"}]})
                plain = asyncio.run(overhead(comfy, settings, args.jobs, t2i, PhaseTimer()))
                phases = PhaseTimer()
                with_input = asyncio.run(overhead(comfy, settings, args.jobs, img2img, phases))
                argv = ["-m", "bench.bench_inputs", "--rss-child", comfy.url, settings.model_dump_json(), base]
                child = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=True,
                                       env=dict(os.environ))
                rss = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            nanio.stop()

    ms = 1000.0
    p50_plain, p50_input = statistics.median(plain), statistics.median(with_input)
    print(f"t2i {SIZE}x{SIZE}           : overhead p50 {p50_plain * ms:6.1f} ms  p95 {pct(plain, 95) * ms:6.1f} ms"
          f"  (n={len(plain)})")
    print(f"img2img, {one_mb / 1e6:.2f} MB input : overhead p50 {p50_input * ms:6.1f} ms  "
          f"p95 {pct(with_input, 95) * ms:6.1f} ms  (n={len(with_input)})")
    print(f"the input adds          : p50 {(p50_input - p50_plain) * ms:6.1f} ms  (target <= 10 ms)")
    print(f"  of it, p50 per phase  : fetch {phases.p50('fetch') * ms:.1f} ms, check {phases.p50('check') * ms:.1f} ms"
          f", upload {phases.p50('upload') * ms:.1f} ms")
    growth = (rss["after_kib"] - rss["before_kib"]) / 1024
    print(f"{hundred_mb / 1e6:.0f} MB input image     : peak RSS growth {growth:.1f} MB  (target <= 32 MB; "
          f"peak {rss['after_kib'] / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
