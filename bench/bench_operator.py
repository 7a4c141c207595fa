"""Benchmark of `comfykube operator` against the stand-ins (prints figures).

    .venv/bin/python -m bench.bench_operator [--jobs 200] [--exec 0.25] [--instant-jobs 500] [--present 1000]

Real processes: the Kubernetes API stand-in, nanio and the operator are subprocesses; the
ComfyUI stand-in runs in a thread of this process. Figures:

1. 200 ImageJobs created at once, fixed execution time T: time until all Succeeded
   ÷ the time ComfyUI spent executing them (≈ N × T plus the stand-in's own PNG writing)
   (target ≤ 1.05: the operator keeps ComfyUI busy);
2. instant backend, 500 jobs: jobs per second through the operator (target ≥ 20/s on 2 cores),
   the operator's own CPU time per job (psutil: user + system CPU of the operator process ÷
   jobs; issue #11 target ≤ 15 ms; the stand-in API server's cost is not ours), and the
   Kubernetes API requests per job from the stand-in's request counts, by verb and resource
   (the bench's own requests: one "post imagejobs" per job and one watch);
3. ComfyUI finished → status.phase=Succeeded seen by a watcher, p50/p95 (issue #11 target p50 ≤ 30 ms);
4. operator peak RSS with 1,000 ImageJobs present (target ≤ 250 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from comfykube.kube import KubeApi
from tests.harness import REPO, OperatorProcess, operator_env
from tests.standins.comfyui import run_in_thread
from tests.standins.kube_plugin import start_kube_subprocess
from tests.standins.s3 import NanioServer


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (psutil)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def api_requests(kube_url: str, reset: bool = False) -> dict[str, int]:
    """The Kubernetes stand-in's request counts by "verb resource[/subresource]"."""
    answer = httpx.get(f"{kube_url}/_standin/requests", params={"reset": "1"} if reset else None, timeout=10)
    answer.raise_for_status()
    return dict(answer.json())


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def manifest(name: str, steps: int = 4) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"comfykube.dev/requester": f"user{hash(name) % 7}"}},
        "spec": {"prompt": f"bench {name}", "width": 64, "height": 64, "steps": steps},
    }


async def run_burst(api: KubeApi, namespace: str, jobs: int) -> tuple[float, dict[str, float]]:
    """Create `jobs` ImageJobs at once; wall seconds until all Succeeded, and when each was seen so."""
    names = [f"b{uuid.uuid4().hex[:10]}" for _ in range(jobs)]
    seen: dict[str, float] = {}
    done = asyncio.Event()

    async def watch() -> None:
        async for _kind, obj in api.watch(namespace):
            status = obj.get("status") or {}
            name = obj["metadata"]["name"]
            if status.get("phase") in ("Succeeded", "Failed") and name not in seen:
                if status.get("phase") == "Failed":
                    print(f"  job {name} failed: {status.get('reason')}: {status.get('message')}")
                seen[name] = time.time()
                if all(n in seen for n in names):
                    done.set()
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.5)
    started = time.time()
    sem = asyncio.Semaphore(20)

    async def create(name: str) -> None:
        async with sem:
            await api.create(namespace, manifest(name))

    await asyncio.gather(*(create(n) for n in names))
    await asyncio.wait_for(done.wait(), timeout=max(120, jobs * 2))
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher  # let the watch close its connection
    return time.time() - started, {n: seen[n] for n in names}


async def present_jobs(api: KubeApi, namespace: str, count: int) -> None:
    """Create `count` finished ImageJobs (as a busy cluster would have)."""
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> None:
        async with sem:
            name = f"old{i:05d}"
            await api.create(namespace, manifest(name))
            await api.patch_status(namespace, name, {
                "phase": "Succeeded", "reason": "Succeeded", "message": "1 image(s) stored",
                "completionTime": "2026-11-28T00:00:00Z", "imageCount": 1,
                "images": [{"key": f"{namespace}/{name}/x/0.png", "bytes": 1000, "sha256": "0" * 64,
                            "contentType": "image/png", "url": "http://example.invalid/x",
                            "urlExpiresAt": "2099-01-01T00:00:00Z"}],
            })

    await asyncio.gather(*(one(i) for i in range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--exec", type=float, default=0.25, help="stand-in execution seconds per prompt")
    parser.add_argument("--instant-jobs", type=int, default=500)
    parser.add_argument("--present", type=int, default=1000)
    args = parser.parse_args()
    crd = yaml.safe_load((REPO / "crds" / "imagejob.yaml").read_text(encoding="utf-8"))

    with tempfile.TemporaryDirectory() as tmp, start_kube_subprocess(Path(tmp)) as kube, \
            run_in_thread(exec_seconds=args.exec) as comfy:
        kube.install_crd(crd)
        nanio = NanioServer(Path(tmp) / "s3")
        nanio.start()
        env = operator_env(kube.env, comfyui_url=comfy.url, s3=nanio, bucket="bench",
                           extra={"COMFYUI_POLL_INTERVAL": "2"})
        os.environ["KUBECONFIG"] = str(kube.kubeconfig)
        try:
            for ns in ("burst", "instant", "present"):
                kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

            requests: dict[str, int] = {}

            async def scenario(namespace: str, jobs: int) -> tuple[float, dict[str, float], float]:
                op = OperatorProcess(env, namespace, Path(tmp) / f"op-{namespace}.log").start()
                api = await KubeApi.connect()
                try:
                    cpu0 = cpu_seconds(op.proc.pid)  # type: ignore[union-attr]
                    api_requests(kube.url, reset=True)
                    wall, seen = await run_burst(api, namespace, jobs)
                    await asyncio.sleep(1.0)  # the last jobs' trailing writes (Events, history clean-up)
                    requests.clear()
                    requests.update(api_requests(kube.url))
                    cpu = cpu_seconds(op.proc.pid) - cpu0  # type: ignore[union-attr]
                    return wall, seen, cpu
                finally:
                    await api.close()
                    op.stop()

            wall, seen, _ = asyncio.run(scenario("burst", args.jobs))
            records = comfy.stats()["prompts"]
            finished = {r["prompt_id"]: r.get("finished_at") for r in records}
            # ComfyUI's busy time as the stand-in measured it (the configured T plus its own PNG writing).
            busy = sum(r["finished_at"] - r["started_at"] for r in records if "finished_at" in r and "started_at" in r)
            ratio = wall / busy

            async def latencies() -> list[float]:
                api = await KubeApi.connect()
                try:
                    items = await api.list("burst")
                finally:
                    await api.close()
                out = []
                for obj in items:
                    at = finished.get(obj["metadata"]["uid"])
                    name = obj["metadata"]["name"]
                    if at and name in seen:
                        out.append(seen[name] - at)
                return out

            lat = asyncio.run(latencies())

            comfy.configure(exec_seconds=0.0)
            iwall, _, icpu = asyncio.run(scenario("instant", args.instant_jobs))

            async def rss() -> float:
                api = await KubeApi.connect()
                try:
                    await present_jobs(api, "present", args.present)
                finally:
                    await api.close()
                op = OperatorProcess(env, "present", Path(tmp) / "op-present.log").start()
                await asyncio.sleep(10)  # let it list, watch and index all of them
                value = peak_rss_mb(op.proc.pid)  # type: ignore[union-attr]
                op.stop()
                return value

            peak = asyncio.run(rss())
        finally:
            nanio.stop()

    print(f"burst {args.jobs} jobs x {args.exec}s      : wall {wall:.1f}s, wall / ComfyUI busy {busy:.1f}s = "
          f"{ratio:.3f}  (N x T = {args.jobs * args.exec:.1f}s; target <= 1.05)")
    print(f"instant backend, {args.instant_jobs} jobs : {args.instant_jobs / iwall:.1f} jobs/s  "
          f"(target >= 20/s); operator CPU {icpu / args.instant_jobs * 1000:.1f} ms per job (target <= 15 ms)")
    total = sum(requests.values())
    print(f"Kubernetes API requests per job  : {total / args.instant_jobs:.2f} in all (the bench's own: "
          f"1 post imagejobs per job, 1 watch); "
          + ", ".join(f"{k} {v / args.instant_jobs:.2f}" for k, v in sorted(requests.items(), key=lambda kv: -kv[1])))
    if lat:
        lat_ms = sorted(x * 1000 for x in lat)
        p95 = lat_ms[min(len(lat_ms) - 1, round(0.95 * len(lat_ms)) - 1)]
        print(f"ComfyUI done -> Succeeded seen : p50 {statistics.median(lat_ms):.0f} ms  p95 {p95:.0f} ms"
              f"  (n={len(lat_ms)}, target p50 <= 30 ms)")
    print(f"operator peak RSS with {args.present} ImageJobs present: {peak:.0f} MB  (target <= 250 MB)")


if __name__ == "__main__":
    main()
