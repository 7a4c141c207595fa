"""Scale: an operator starting with thousands of finished and hundreds of unfinished ImageJobs.

    .venv/bin/python -m bench.bench_scale [--finished 5000] [--running 200] [--small 1000]

Real processes: the Kubernetes API stand-in, nanio and the operator are subprocesses; one
ComfyUI stand-in (slow prompts, so jobs stay in flight) runs in a thread. The jobs are
created before the operator starts, as after a restart. Figures, for the full size and for
a small one (`--small` finished, the same ratio of unfinished) so that growth is visible:

The finished jobs are as this operator leaves them (released: `controller/release.py`), or with
`--unreleased` as an older one did (finalizer, kopf annotation: every one in kopf's watch).

1. start-up: operator process start → every unfinished job submitted to ComfyUI (kopf's
   list, one daemon per job, the pipeline's lookup and submission), target ≤ 10 s for
   5,000 + 200; and the operator CPU seconds spent until then;
2. operator peak RSS (VmHWM) after start-up and 10 s of steady state, target ≤ 250 MB;
3. growth: full ÷ small for time and CPU, beside the ratio of job counts (linear work
   grows like the count, quadratic work like its square).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import kopf
import psutil
import yaml

from bench.bench_operator import api_requests
from comfykube.controller.run import FINALIZER
from comfykube.kube import KubeApi
from comfykube.names import LABEL_FINISHED
from tests.harness import REPO, OperatorProcess, operator_env
from tests.standins.comfyui import run_in_thread
from tests.standins.kube_plugin import start_kube_subprocess
from tests.standins.s3 import NanioServer


def manifest(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"comfykube.dev/requester": f"user{hash(name) % 13}"}},
            "spec": {"prompt": f"scale {name}", "width": 64, "height": 64, "steps": 4}}


def as_handled(obj: dict[str, Any]) -> dict[str, Any]:
    """The metadata patch an operator leaves on a job it handled: kopf's diff-base annotation.

    (With the finalizer, set at creation.) Without them, the first operator to start would
    add both to every old job, which a restart after normal operation never does.
    """
    storage = kopf.AnnotationsDiffBaseStorage(prefix="comfykube.dev", key="last-handled-configuration")
    body = kopf.Body(obj)
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    return {"metadata": dict(patch["metadata"])}


async def populate(namespace: str, finished: int, running: int, *, unreleased: bool = False) -> None:
    """`finished` Succeeded jobs (with an image each) and `running` Queued ones, as left by an operator.

    Finished jobs are released (labelled finished, no finalizer: `controller/release.py`), or with
    `unreleased` as an operator before that left them (finalizer and kopf's annotation).
    """
    api = await KubeApi.connect()
    sem = asyncio.Semaphore(32)

    async def done(i: int) -> None:
        async with sem:
            name = f"old{i:05d}"
            body = manifest(name)
            if unreleased:
                body["metadata"]["finalizers"] = [FINALIZER]
            else:
                body["metadata"]["labels"][LABEL_FINISHED] = "true"
            created = await api.create(namespace, body)
            if unreleased:
                await api.patch(namespace, name, as_handled(created))
            await api.patch_status(namespace, name, {
                "phase": "Succeeded", "reason": "Succeeded", "message": "1 image(s) stored",
                "completionTime": "2026-11-28T00:00:00Z", "imageCount": 1,
                "images": [{"key": f"{namespace}/{name}/x/0.png", "bytes": 1000, "sha256": "0" * 64,
                            "contentType": "image/png", "url": "http://example.invalid/x",
                            "urlExpiresAt": "2099-01-01T00:00:00Z"}],
            })

    async def waiting(i: int) -> None:
        async with sem:
            name = f"run{i:04d}"
            body = manifest(name)
            body["metadata"]["finalizers"] = [FINALIZER]
            created = await api.create(namespace, body)
            await api.patch(namespace, name, as_handled(created))
            await api.patch_status(namespace, name, {"phase": "Queued", "message": "waiting for a free ComfyUI slot"})

    try:
        await asyncio.gather(*(done(i) for i in range(finished)))
        await asyncio.gather(*(waiting(i) for i in range(running)))
    finally:
        await api.close()


def measure(kube: Any, nanio: NanioServer, comfy: Any, tmp: Path, namespace: str, running: int) -> dict[str, float]:
    """Start an operator on the populated namespace; time until all unfinished jobs are submitted."""
    env = operator_env(kube.env, comfyui_url=comfy.url, s3=nanio, bucket="bench",
                       extra={"COMFYUI_POLL_INTERVAL": "2", "MAX_INFLIGHT_PER_BACKEND": str(running + 10)})
    before = sum(comfy.stats()["submissions"].values())
    api_requests(kube.url, reset=True)
    started = time.monotonic()
    print(f"  operator started at {time.strftime('%H:%M:%S')}", flush=True)
    op = OperatorProcess(env, namespace, tmp / f"op-{namespace}.log").start(wait=False)
    assert op.proc is not None
    proc = psutil.Process(op.proc.pid)
    try:
        while sum(comfy.stats()["submissions"].values()) - before < running:
            if time.monotonic() - started > 600:
                raise RuntimeError(f"not all {running} jobs were submitted within 600 s")
            time.sleep(0.05)
        startup = time.monotonic() - started
        times = proc.cpu_times()
        cpu = times.user + times.system
        requests = api_requests(kube.url)
        time.sleep(10)  # steady state: maintenance sweep, kopf's watch, monitors
        peak = _peak_rss_mb(op.proc.pid)
    finally:
        op.stop()
    log = op.logs()
    ready = next((line[:23] for line in log.splitlines() if "operator ready" in line), "?")
    print(f"  operator ready at {ready}; API requests during start-up: "
          + ", ".join(f"{k} {v}" for k, v in sorted(requests.items(), key=lambda kv: -kv[1])), flush=True)
    return {"startup": startup, "cpu": cpu, "rss": peak}


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, default=5000)
    parser.add_argument("--running", type=int, default=200)
    parser.add_argument("--small", type=int, default=1000, help="finished jobs of the small run (0: skip it)")
    parser.add_argument("--unreleased", action="store_true",
                        help="finished jobs as an operator before release.py left them (the first start after it)")
    args = parser.parse_args()
    crd = yaml.safe_load((REPO / "crds" / "imagejob.yaml").read_text(encoding="utf-8"))
    sizes = [(args.finished, args.running)]
    if args.small:
        sizes.insert(0, (args.small, max(1, args.running * args.small // args.finished)))
    results = []
    with tempfile.TemporaryDirectory() as tmp, start_kube_subprocess(Path(tmp)) as kube, \
            run_in_thread(exec_seconds=30.0) as comfy:
        kube.install_crd(crd)
        os.environ["KUBECONFIG"] = str(kube.kubeconfig)
        nanio = NanioServer(Path(tmp) / "s3")
        nanio.start()
        try:
            for finished, running in sizes:
                namespace = f"scale{finished}"
                kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
                t0 = time.monotonic()
                asyncio.run(populate(namespace, finished, running, unreleased=args.unreleased))
                print(f"  populated {finished} finished + {running} unfinished in {time.monotonic() - t0:.0f} s",
                      flush=True)
                results.append((finished, running, measure(kube, nanio, comfy, Path(tmp), namespace, running)))
        finally:
            nanio.stop()
    for finished, running, r in results:
        print(f"{finished} finished + {running} unfinished: start-up (list + resume + submit all) "
              f"{r['startup']:.1f} s (target <= 10 s), operator CPU {r['cpu']:.1f} s, peak RSS {r['rss']:.0f} MB "
              f"(target <= 250 MB)")
    if len(results) == 2:
        (f1, _, small), (f2, _, full) = results
        print(f"growth x{f2 / f1:.0f} jobs: start-up x{full['startup'] / small['startup']:.1f}, "
              f"CPU x{full['cpu'] / small['cpu']:.1f} (quadratic would be x{(f2 / f1) ** 2:.0f})")


if __name__ == "__main__":
    main()
