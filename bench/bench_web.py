"""Benchmark of the web gallery against the Kubernetes API stand-in and nanio (prints figures, not a test).

    .venv/bin/python -m bench.bench_web [--jobs 2000] [--requests 200] [--clients 100] [--running 50]
        [--rate 2] [--seconds 20]

`comfykube web` runs as its own process (so its CPU and memory are its own), reading a
FakeKube subprocess seeded with N ImageJobs (most Succeeded, each with a thumbnail key,
so every card on a page needs a presigned URL). Figures:

1. the first page (`GET /`) with N jobs present: the server's own time (its `Server-Timing`
   header, handler start to rendered body), p50/p99 over R requests, and the client's
   wall time on loopback; the first (cold: every URL signed) request separately; a search
   page as well. Target: p50 ≤ 150 ms.
2. C browsers connected to the live stream while J jobs run (each job's status written
   `rate` times a second, as a busy operator would): messages per browser per second (mean
   and max over browsers: must be ≤ 2) and the gaps between them as the browser sees them,
   the server's CPU (percent of one core) and its resident memory before and at peak.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from kubernetes_asyncio import client, config

from comfykube.storage import MinioStore
from tests.harness import REPO, operator_env
from tests.standins.kube_plugin import start_kube_subprocess
from tests.standins.s3 import NanioServer, unique_bucket
from tests.web_support import WebProcess

GROUP, VERSION, PLURAL = "comfykube.dev", "v1alpha1", "imagejobs"
PHASES = ["Succeeded"] * 8 + ["Failed", "Queued"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def status_for(n: int, name: str, uid: str) -> dict[str, Any]:
    phase = PHASES[n % len(PHASES)]
    if phase != "Succeeded":
        return {"phase": phase, "reason": "PreflightFailed" if phase == "Failed" else None,
                "message": "sampler 'euler_a' is not offered" if phase == "Failed" else "queued"}
    key = f"bench/{name}/{uid}/0.png"
    image = {"key": key, "bytes": 1234, "sha256": "a" * 64, "contentType": "image/png", "width": 512,
             "height": 512, "thumbnailKey": key.replace("0.png", "0.thumb.jpg")}
    return {"phase": "Succeeded", "reason": "Succeeded", "seed": n, "images": [image], "imageCount": 1,
            "progress": {"value": 20, "max": 20}, "progressText": "20/20"}


async def seed_jobs(api: Any, count: int, prefix: str, concurrency: int = 8) -> list[str]:
    names = [f"{prefix}-{n:05d}" for n in range(count)]
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for item in enumerate(names):
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            n, name = queue.get_nowait()
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageJob", "metadata": {"name": name},
                    "spec": {"prompt": f"picture number {n}: a lighthouse, a fox, a harbour at dusk",
                             "steps": 20, "seed": n}}
            obj = await api.create_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, body)
            status = {k: v for k, v in status_for(n, name, obj["metadata"]["uid"]).items() if v is not None}
            await api.patch_namespaced_custom_object_status(
                GROUP, VERSION, "bench", PLURAL, name, {"status": status},
                _content_type="application/merge-patch+json")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return names


async def first_page(web: WebProcess, requests: int) -> None:
    server: list[float] = []
    wall: list[float] = []
    cold: tuple[float, float] | None = None
    async with aiohttp.ClientSession() as http:
        for i in range(requests):
            started = time.perf_counter()
            async with http.get(web.url + "/") as response:
                body = await response.text()
                timing = response.headers.get("Server-Timing", "")
            elapsed = (time.perf_counter() - started) * 1000
            total = float(re.search(r"total;dur=([0-9.]+)", timing).group(1))  # type: ignore[union-attr]
            assert response.status == 200 and body.count('data-key="bench/') == 48, response.status
            if i == 0:
                cold = (total, elapsed)
                continue
            server.append(total)
            wall.append(elapsed)
        search: list[float] = []
        for _ in range(max(10, requests // 10)):
            async with http.get(web.url + "/", params={"q": "number 1999", "phase": "Succeeded"}) as response:
                await response.read()
                search.append(float(re.search(r"total;dur=([0-9.]+)",  # type: ignore[union-attr]
                                              response.headers["Server-Timing"]).group(1)))
    assert cold is not None
    print(f"first page, {requests} requests: server p50 {statistics.median(server):.1f} ms, "
          f"p99 {percentile(server, 99):.1f} ms; client wall p50 {statistics.median(wall):.1f} ms "
          f"(target p50 ≤ 150 ms)")
    print(f"  cold first request (48 URLs signed): server {cold[0]:.1f} ms, wall {cold[1]:.1f} ms")
    print(f"  search + phase filter over every job: server p50 {statistics.median(search):.1f} ms")


async def live_updates(web: WebProcess, api: Any, names: list[str], args: argparse.Namespace) -> None:
    proc = psutil.Process(web.proc.pid)  # type: ignore[union-attr]
    rss_before = proc.memory_info().rss
    arrivals: dict[int, list[float]] = defaultdict(list)
    jobs_seen: dict[int, int] = defaultdict(int)
    stop = asyncio.Event()

    async def browser(n: int, http: aiohttp.ClientSession) -> None:
        async with http.get(web.url + "/api/stream", timeout=aiohttp.ClientTimeout(total=None)) as response:
            assert response.status == 200, response.status
            async for line in response.content:
                if stop.is_set():
                    return
                if line.startswith(b"data: {\"seq\""):
                    arrivals[n].append(time.monotonic())
                    jobs_seen[n] += len(json.loads(line[6:])["jobs"])

    running = names[: args.running]
    writes = 0

    async def operator(name: str, offset: float) -> None:
        nonlocal writes
        await asyncio.sleep(offset)
        step = 0
        while not stop.is_set():
            step = step % 20 + 1
            await api.patch_namespaced_custom_object_status(
                GROUP, VERSION, "bench", PLURAL, name,
                {"status": {"phase": "Running", "progress": {"value": step, "max": 20}, "progressText": f"{step}/20"}},
                _content_type="application/merge-patch+json")
            writes += 1
            await asyncio.sleep(1 / args.rate)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        browsers = [asyncio.create_task(browser(n, http)) for n in range(args.clients)]
        await asyncio.sleep(2)
        cpu_before = sum(proc.cpu_times()[:2])
        started = time.monotonic()
        writers = [asyncio.create_task(operator(name, i / len(running) / args.rate)) for i, name in enumerate(running)]
        peak_rss = rss_before
        while time.monotonic() - started < args.seconds:
            await asyncio.sleep(1)
            peak_rss = max(peak_rss, proc.memory_info().rss)
        elapsed = time.monotonic() - started
        cpu = (sum(proc.cpu_times()[:2]) - cpu_before) / elapsed * 100
        stop.set()
        for task in writers + browsers:
            task.cancel()
        await asyncio.gather(*writers, *browsers, return_exceptions=True)
    window_start = started + 1  # first second: connections settle
    rates = []
    gaps: list[float] = []
    for times in arrivals.values():
        inside = [t for t in times if window_start <= t <= started + elapsed]
        rates.append(len(inside) / (elapsed - 1))
        gaps += [b - a for a, b in itertools.pairwise(inside)]
    print(f"{args.clients} live browsers, {len(running)} jobs running ({writes / elapsed:.0f} status writes/s) "
          f"for {elapsed:.0f} s:")
    print(f"  messages per browser per second: mean {statistics.mean(rates):.2f}, max {max(rates):.2f} (limit 2); "
          f"gap between two messages p50 {statistics.median(gaps) * 1000:.0f} ms, "
          f"p1 {percentile(gaps, 1) * 1000:.0f} ms (arrival jitter on loopback)")
    print(f"  job updates per message: {sum(jobs_seen.values()) / max(1, sum(map(len, arrivals.values()))):.1f}")
    print(f"  server CPU {cpu:.0f}% of one core; RSS {rss_before / 2**20:.0f} MiB before, "
          f"peak {peak_rss / 2**20:.0f} MiB")


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    nanio = NanioServer(workdir / "nanio")
    nanio.start()
    try:
        with start_kube_subprocess(workdir, crds=[REPO / "crds" / "imagejob.yaml"]) as kube:
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
            cfg = client.Configuration()
            await config.load_kube_config(config_file=str(kube.kubeconfig), client_configuration=cfg)
            async with client.ApiClient(configuration=cfg) as api_client:
                api = client.CustomObjectsApi(api_client)
                started = time.monotonic()
                names = await seed_jobs(api, args.jobs, "job")
                print(f"seeded {len(names)} ImageJobs in {time.monotonic() - started:.1f} s")
                bucket = unique_bucket("bench")
                await MinioStore(nanio.settings(bucket)).ensure_ready()  # the operator made it long ago
                env = operator_env(kube.env, comfyui_url="http://127.0.0.1:9", s3=nanio, bucket=bucket)
                env.update(WEB_NAMESPACES="bench", WEB_PAGE_SIZE="48")
                web = WebProcess(env, workdir / "web.log")
                started = time.monotonic()
                web.start()
                print(f"comfykube web ready (index rebuilt from a list) in {time.monotonic() - started:.1f} s, "
                      f"RSS {psutil.Process(web.proc.pid).memory_info().rss / 2**20:.0f} MiB")  # type: ignore[union-attr]
                try:
                    await first_page(web, args.requests)
                    await live_updates(web, api, names, args)
                finally:
                    web.stop()
    finally:
        nanio.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--running", type=int, default=50)
    parser.add_argument("--rate", type=float, default=2.0, help="status writes per running job per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
