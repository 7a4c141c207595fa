"""Benchmark of the backend pool: N jobs over 1, 2 and 4 ComfyUI stand-ins (prints figures).

    .venv/bin/python -m bench.bench_pool [--jobs 400] [--exec 0.5] [--backends 1,2,4]

For each K: wall time until all N ImageJobs Succeeded ÷ the ideal N × T ÷ K
(issue #11 target: ≤ 1.15 with 4 backends × 300 ms and 40 jobs:
`--jobs 40 --exec 0.3 --backends 4`). Real processes as in bench_operator; the stand-ins run in
threads of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import yaml

from bench.bench_operator import run_burst
from comfykube.kube import KubeApi
from tests.harness import REPO, OperatorProcess, operator_env
from tests.standins.comfyui import run_in_thread
from tests.standins.kube_plugin import start_kube_subprocess
from tests.standins.s3 import NanioServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--exec", type=float, default=0.5, help="stand-in execution seconds per prompt")
    parser.add_argument("--backends", default="1,2,4")
    args = parser.parse_args()
    crd = yaml.safe_load((REPO / "crds" / "imagejob.yaml").read_text(encoding="utf-8"))
    results = []
    with tempfile.TemporaryDirectory() as tmp, start_kube_subprocess(Path(tmp)) as kube:
        kube.install_crd(crd)
        os.environ["KUBECONFIG"] = str(kube.kubeconfig)
        nanio = NanioServer(Path(tmp) / "s3")
        nanio.start()
        try:
            for k in (int(x) for x in args.backends.split(",")):
                namespace = f"pool{k}"
                kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
                with ExitStack() as stack:
                    servers = [stack.enter_context(run_in_thread(exec_seconds=args.exec)) for _ in range(k)]
                    env = operator_env(kube.env, comfyui_url=",".join(s.url for s in servers), s3=nanio,
                                       bucket="bench", extra={"COMFYUI_POLL_INTERVAL": "2"})
                    op = OperatorProcess(env, namespace, Path(tmp) / f"op-{k}.log").start()

                    async def burst(namespace: str = namespace) -> float:
                        api = await KubeApi.connect()
                        try:
                            wall, _ = await run_burst(api, namespace, args.jobs)
                        finally:
                            await api.close()
                        return wall

                    try:
                        wall = asyncio.run(burst())
                    finally:
                        op.stop()
                    split = Counter({s.url: sum(s.stats()["submissions"].values()) for s in servers})
                    # Ideal: all execution time as the stand-ins measured it (T per prompt plus their own
                    # PNG writing) spread evenly over K backends, i.e. N x T / K.
                    ideal = sum(
                        r["finished_at"] - r["started_at"]
                        for s in servers for r in s.stats()["prompts"] if "finished_at" in r
                    ) / k
                results.append((k, wall, wall / ideal, sorted(split.values(), reverse=True), ideal))
        finally:
            nanio.stop()
    for k, wall, ratio, split, ideal in results:
        print(f"K={k}: {args.jobs} jobs x {args.exec}s  wall {wall:6.1f}s  ideal {ideal:6.1f}s "
              f"(N x T / K = {args.jobs * args.exec / k:.1f}s)  ratio {ratio:.3f}  split {split}"
              + ("  (target <= 1.15)" if k == 4 else ""))


if __name__ == "__main__":
    main()
