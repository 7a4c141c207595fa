"""A pool of ComfyUI backends: jobs spread by speed, a dying backend, discovery, metrics.

Real processes: the Kubernetes API stand-in and the operator are subprocesses; the
ComfyUI stand-ins run in threads of the test process (so the test can kill one).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import OperatorProcess, kubectl_json, operator_env, wait_until
from tests.standins.comfyui import ThreadedComfyUI, run_in_thread

NAMESPACE_PREFIX = "pool"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def backends() -> Iterator[list[ThreadedComfyUI]]:
    """Three ComfyUI stand-ins: fast, medium, slow (execution 0.3 s, 0.6 s, 1.2 s)."""
    with ExitStack() as stack:
        yield [stack.enter_context(run_in_thread(exec_seconds=t)) for t in (0.3, 0.6, 1.2)]


def create_jobs(cluster: Any, namespace: str, count: int, prefix: str = "j") -> list[str]:
    names = [f"{prefix}{i:02d}" for i in range(count)]
    docs = [
        {"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob",
         "metadata": {"name": n, "namespace": namespace},
         "spec": {"prompt": f"pool {n}", "width": 64, "height": 64, "steps": 3}}
        for n in names
    ]
    cluster.apply(yaml.safe_dump_all(docs))
    return names


def all_jobs(cluster: Any, namespace: str) -> list[dict[str, Any]]:
    return kubectl_json(cluster, "get", "imagejobs", "-n", namespace)["items"]


def finished(cluster: Any, namespace: str, count: int) -> list[dict[str, Any]] | None:
    items = all_jobs(cluster, namespace)
    done = [j for j in items if (j.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
    return items if len(done) == count else None


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(\{{{re.escape(want)}\}})? ([0-9.e+-]+)$" if want else rf"^{re.escape(name)} (.+)$"
    for line in text.splitlines():
        match = re.match(pattern, line)
        if match:
            return float(match.groups()[-1])
    return 0.0


def test_jobs_spread_by_speed_and_survive_a_backend_dying(
    cluster: Any, namespace: str, backends: list[ThreadedComfyUI], s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    fast, medium, slow = backends
    env = operator_env(
        cluster.env,
        comfyui_url=",".join(b.url for b in backends),
        s3=s3_server,
        bucket=s3_bucket,
        extra={"BACKEND_CHECK_INTERVAL": "0.5", "MAX_INFLIGHT_PER_BACKEND": "2", "COMFYUI_UNREACHABLE_GRACE": "2"},
    )
    op = OperatorProcess(env, namespace, tmp_path / "operator.log", metrics=True).start()
    try:
        count = 24
        create_jobs(cluster, namespace, count)

        # Kill the medium backend once a job there has its submission on record (the operator
        # writes it right after POST /prompt): that job must be recovered elsewhere, once.
        def recorded_on_medium() -> bool:
            statuses = [j.get("status") or {} for j in all_jobs(cluster, namespace)]
            return any(
                s.get("backend") == medium.url and s.get("submissions") and s.get("phase") in ("Queued", "Running")
                for s in statuses
            )

        wait_until(recorded_on_medium, timeout=60, what="a job submitted to the medium backend")
        medium.call(medium.fake.stop_listening())  # type: ignore[union-attr]
        medium_had = set(medium.stats()["submissions"])

        items = wait_until(lambda: finished(cluster, namespace, count), timeout=180, interval=0.5,
                           what="all jobs finished")
        statuses = [j["status"] for j in items]
        assert all(s["phase"] == "Succeeded" for s in statuses), [
            (s.get("phase"), s.get("reason"), s.get("message")) for s in statuses if s["phase"] != "Succeeded"
        ]
        where = Counter(s["backend"] for s in statuses)
        # The fast backend did more than the slow one (4x faster).
        assert where[fast.url] > where[slow.url], where
        # Jobs stranded on the dead backend were recovered: submitted once more, not more.
        moved = [s for s in statuses if s["promptId"] in medium_had and s["backend"] != medium.url]
        assert moved, "no job was moved off the dead backend"
        # A job whose submission the operator had recorded is submitted once more, not more. (One
        # killed between POST and the status write may count its move as its first submission.)
        assert all(s["submissions"] in (1, 2) for s in moved), moved
        assert sum(s["submissions"] == 2 for s in moved) >= 1, moved
        for backend in (fast, slow):
            assert all(n == 1 for n in backend.stats()["submissions"].values())
        total_submissions = sum(sum(b.stats()["submissions"].values()) for b in backends)
        assert total_submissions == count + len(moved)

        text = op.metrics()
        assert metric(text, "comfykube_jobs_finished_total", phase="Succeeded", reason="Succeeded") == count
        submitted = sum(metric(text, "comfykube_prompt_submissions_total", backend=b.url) for b in backends)
        assert submitted == total_submissions
        assert metric(text, "comfykube_backend_up", backend=medium.url) == 0
        assert metric(text, "comfykube_backend_up", backend=fast.url) == 1
        assert metric(text, "comfykube_uploaded_bytes_total") > 0
    finally:
        op.stop()


def test_backends_are_discovered_from_endpoint_slices_without_a_restart(
    cluster: Any, namespace: str, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    with run_in_thread(exec_seconds=0.2) as first, run_in_thread(exec_seconds=0.2) as second:
        def endpoint_slice(name: str, server: ThreadedComfyUI) -> dict[str, Any]:
            port = int(server.url.rsplit(":", 1)[1])
            return {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {"kubernetes.io/service-name": "comfyui"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            }

        cluster.apply(endpoint_slice("comfyui-a", first))
        env = operator_env(
            cluster.env, comfyui_url="http://127.0.0.1:9", s3=s3_server, bucket=s3_bucket,
            extra={"COMFYUI_DISCOVERY_SERVICE": "comfyui", "COMFYUI_DISCOVERY_NAMESPACE": namespace,
                   "BACKEND_CHECK_INTERVAL": "0.5"},
        )
        op = OperatorProcess(env, namespace, tmp_path / "operator.log").start()
        try:
            create_jobs(cluster, namespace, 3, prefix="a")
            items = wait_until(lambda: finished(cluster, namespace, 3), timeout=60, what="first jobs")
            assert {j["status"]["backend"] for j in items} == {first.url}

            # Scale out: a second endpoint appears; then the first goes away.
            cluster.apply(endpoint_slice("comfyui-b", second))
            cluster.kubectl("delete", "endpointslice", "comfyui-a", "-n", namespace)
            wait_until(lambda: "comfyui has backends: " + second.url in op.logs(), timeout=30,
                       what="the pool to follow the EndpointSlices")
            create_jobs(cluster, namespace, 3, prefix="b")
            items = wait_until(lambda: finished(cluster, namespace, 6), timeout=60, what="second jobs")
            later = [j for j in items if j["metadata"]["name"].startswith("b")]
            assert {j["status"]["backend"] for j in later} == {second.url}
            assert all(j["status"]["phase"] == "Succeeded" for j in items)
        finally:
            op.stop()


def test_job_asking_for_a_checkpoint_no_backend_has_fails_listing_what_exists(
    cluster: Any, namespace: str, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    with run_in_thread(checkpoints=["a.safetensors"]) as one, run_in_thread(checkpoints=["b.safetensors"]) as two:
        env = operator_env(cluster.env, comfyui_url=f"{one.url},{two.url}", s3=s3_server, bucket=s3_bucket,
                           extra={"BACKEND_CHECK_INTERVAL": "0.5"})
        op = OperatorProcess(env, namespace, tmp_path / "operator.log").start()
        try:
            docs = [
                {"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob",
                 "metadata": {"name": name, "namespace": namespace},
                 "spec": {"prompt": "x", "width": 64, "height": 64, "steps": 1, "model": model}}
                for name, model in (("wants-b", "b.safetensors"), ("wants-c", "c.safetensors"))
            ]
            cluster.apply(yaml.safe_dump_all(docs))
            items = {j["metadata"]["name"]: j["status"]
                     for j in wait_until(lambda: finished(cluster, namespace, 2), timeout=60, what="both jobs")}
            assert items["wants-b"]["phase"] == "Succeeded" and items["wants-b"]["backend"] == two.url
            assert items["wants-c"]["phase"] == "Failed"
            assert "c.safetensors" in items["wants-c"]["message"]
            assert "a.safetensors" in items["wants-c"]["message"] and "b.safetensors" in items["wants-c"]["message"]
        finally:
            op.stop()
