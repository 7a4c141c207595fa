"""Benchmark of input images (prints figures): what taking in a picture costs per job.

    .venv/bin/python -m bench.bench_inputs [--jobs 30] [--exec 0.2]

1. overhead per job = wall time − ComfyUI execution time, p50/p95, for img2img with a
   1 MB input image fetched over loopback (fetch, hash, magic bytes, full decode, upload)
   against t2i of the same output size; the difference of the p50s is what the input
   adds (target ≤ 10 ms);
2. peak RSS growth of a fresh process taking in a 100 MB input image (a valid PNG, most
   of it a private chunk): fetch, checks, upload (target ≤ 32 MB).

The ComfyUI stand-in and the picture server run in this process's threads; the RSS
figure comes from a child process that runs only the pipeline. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image

from bench.bench_pipeline import busy_seconds, pct
from comfykube.comfyui.client import ComfyClient
from comfykube.inputs import InputLimits
from comfykube.pipeline import JobIdentity, Pipeline
from comfykube.settings import DEFAULT_WORKFLOWS_DIR, Settings
from comfykube.storage import MinioStore
from comfykube.types import ImageJobSpec, parse_spec
from comfykube.workflows import WorkflowLibrary
from tests.standins.comfyui import run_in_thread
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
def serve_directory(directory: Path) -> Iterator[str]:
    """A static file server on loopback (the picture's web server)."""

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def make_pipeline(comfy: ComfyClient, settings: Settings) -> Pipeline:
    return Pipeline(
        comfy=comfy, store=MinioStore(settings), workflows=WORKFLOWS, poll_interval=2.0,
        input_limits=InputLimits(max_bytes=128 * 1024 * 1024, allow_private=True),
    )


def job() -> JobIdentity:
    return JobIdentity("bench", "job", str(uuid.uuid4()))


async def overhead(comfy_server: Any, settings: Settings, runs: int, spec: ImageJobSpec) -> list[float]:
    """Per-job wall time minus the time ComfyUI spent executing it, sequential jobs."""
    walls: dict[str, float] = {}
    async with ComfyClient(comfy_server.url) as comfy:
        pipeline = make_pipeline(comfy, settings)
        await pipeline.run(spec, job())  # warm-up
        for _ in range(runs):
            identity = job()
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
            with serve_directory(pictures) as base, run_in_thread(exec_seconds=args.exec) as comfy:
                t2i = ImageJobSpec(prompt="bench", width=SIZE, height=SIZE, steps=10)
                img2img = parse_spec({"prompt": "bench", "workflow": "img2img", "steps": 10,
                                      "images": [{"name": "init", "url": f"{base}/init.png"}]})
                plain = asyncio.run(overhead(comfy, settings, args.jobs, t2i))
                with_input = asyncio.run(overhead(comfy, settings, args.jobs, img2img))
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
    growth = (rss["after_kib"] - rss["before_kib"]) / 1024
    print(f"{hundred_mb / 1e6:.0f} MB input image     : peak RSS growth {growth:.1f} MB  (target <= 32 MB; "
          f"peak {rss['after_kib'] / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
