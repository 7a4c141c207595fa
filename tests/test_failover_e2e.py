"""Failover in seconds: a backend whose port refuses connections loses its jobs at once;
one that only stops answering keeps them for the grace period (it may still be rendering).

Real processes: the Kubernetes API stand-in, the operator and the ComfyUI stand-in that
dies are subprocesses (SIGKILL: its process and in-memory queue are gone); the healthy
stand-in runs in a thread of the test process. "Stalled" is a TCP listener on the dead
stand-in's port that never accepts: connections open, requests time out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness import REPO, OperatorProcess, kubectl_json, operator_env, wait_until
from tests.standins.comfyui import run_in_thread

NAMESPACE_PREFIX = "failover"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

#: The ComfyUI stand-in's execution time: long enough that jobs wait in its queue.
EXEC_SECONDS = 2.0


class ComfyProcess:
    """`python -m tests.standins.comfyui` in its own process (so it can be SIGKILLed)."""

    def __init__(self, exec_seconds: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.standins.comfyui", "--port", "0", "--exec-seconds", str(exec_seconds)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("READY "), line
        self.url = line.split()[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def doomed() -> Iterator[ComfyProcess]:
    server = ComfyProcess(EXEC_SECONDS)
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def stalled_listener(port: int) -> Iterator[socket.socket]:
    """Listen on `port` and never accept: the kernel completes handshakes, nobody answers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + 10
    while True:
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    sock.listen(512)
    try:
        yield sock
    finally:
        sock.close()


def create_jobs(cluster: Any, namespace: str, count: int) -> None:
    docs = [
        {"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob",
         "metadata": {"name": f"j{i:02d}", "namespace": namespace},
         "spec": {"prompt": f"failover {i}", "width": 64, "height": 64, "steps": 2}}
        for i in range(count)
    ]
    cluster.apply(yaml.safe_dump_all(docs))


def statuses(cluster: Any, namespace: str) -> dict[str, dict[str, Any]]:
    items = kubectl_json(cluster, "get", "imagejobs", "-n", namespace)["items"]
    return {j["metadata"]["name"]: j.get("status") or {} for j in items}


def submitted_on(cluster: Any, namespace: str, url: str, at_least: int) -> dict[str, dict[str, Any]] | None:
    """The jobs submitted to `url`, once there are `at_least` of them.

    Both sides must say so: the status (a submission is on record before its POST) and the
    server (it has the prompt), so a job whose POST had not landed yet is not counted.
    """
    received = httpx.get(f"{url}/_standin/stats", timeout=5).json()["submissions"]
    found = {
        name: s for name, s in statuses(cluster, namespace).items()
        if s.get("backend") == url and s.get("submissions") and s.get("phase") in ("Queued", "Running")
        and s.get("promptId") in received
    }
    return found if len(found) >= at_least else None


def start_operator(cluster: Any, namespace: str, urls: str, tmp_path: Path, s3: Any, bucket: str,
                   **extra: str) -> OperatorProcess:
    env = operator_env(
        cluster.env, comfyui_url=urls, s3=s3, bucket=bucket,
        extra={"BACKEND_CHECK_INTERVAL": "5", "MAX_INFLIGHT_PER_BACKEND": "3", **extra},
    )
    return OperatorProcess(env, namespace, tmp_path / "operator.log").start()


def test_jobs_on_a_backend_whose_port_refuses_move_within_10_seconds(
    cluster: Any, namespace: str, doomed: ComfyProcess, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    with run_in_thread(exec_seconds=0.2) as alive:
        # The long grace (60 s default) must not apply: the port refuses, nothing is rendering.
        op = start_operator(cluster, namespace, f"{doomed.url},{alive.url}", tmp_path, s3_server, s3_bucket,
                            COMFYUI_UNREACHABLE_GRACE="60")
        try:
            create_jobs(cluster, namespace, 8)
            stranded = wait_until(lambda: submitted_on(cluster, namespace, doomed.url, 2), timeout=60,
                                  what="two jobs submitted to the backend that will die")
            doomed.kill()
            killed_at = time.monotonic()

            def moved() -> dict[str, dict[str, Any]] | None:
                now = statuses(cluster, namespace)
                done = {n: now[n] for n in stranded if now[n].get("backend") == alive.url}
                return done if len(done) == len(stranded) else None

            wait_until(moved, timeout=30, interval=0.2, what="the stranded jobs moved to the live backend")
            took = time.monotonic() - killed_at
            assert took <= 10, f"jobs moved {took:.1f} s after the backend died (want <= 10 s)"

            final = wait_until(
                lambda: (s := statuses(cluster, namespace)) and all(
                    v.get("phase") in ("Succeeded", "Failed") for v in s.values()) and s,
                timeout=90, what="all jobs finished")
            assert all(s["phase"] == "Succeeded" for s in final.values()), final
            for name in stranded:
                # Submitted on the dead backend, then once more on the live one: no more.
                assert final[name]["backend"] == alive.url and final[name]["submissions"] == 2, final[name]
            assert all(n == 1 for n in alive.stats()["submissions"].values()), alive.stats()["submissions"]
        finally:
            op.stop()


def test_jobs_on_a_backend_that_stalls_keep_it_for_the_grace_period(
    cluster: Any, namespace: str, doomed: ComfyProcess, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    with run_in_thread(exec_seconds=0.2) as alive:
        op = start_operator(cluster, namespace, f"{doomed.url},{alive.url}", tmp_path, s3_server, s3_bucket,
                            COMFYUI_UNREACHABLE_GRACE="20", COMFYUI_REQUEST_TIMEOUT="1")
        try:
            create_jobs(cluster, namespace, 8)
            stranded = wait_until(lambda: submitted_on(cluster, namespace, doomed.url, 2), timeout=60,
                                  what="two jobs submitted to the backend that will stall")
            doomed.kill()
            with stalled_listener(doomed.port):
                stalled_at = time.monotonic()
                # Well past the refused grace (5 s) and the 10 s of a refused port: still theirs.
                while time.monotonic() - stalled_at < 14:
                    now = statuses(cluster, namespace)
                    for name in stranded:
                        assert now[name].get("backend") == doomed.url, (name, now[name])
                        assert now[name].get("submissions") == 1, (name, now[name])
                    time.sleep(1)
                assert not set(stranded) & set(alive.stats()["submissions"]), "moved before the grace"
                # After the grace they move (and finish) on the live backend, submitted once more.
                final = wait_until(
                    lambda: (s := statuses(cluster, namespace)) and all(
                        v.get("phase") in ("Succeeded", "Failed") for v in s.values()) and s,
                    timeout=120, what="all jobs finished")
            assert all(s["phase"] == "Succeeded" for s in final.values()), final
            for name in stranded:
                assert final[name]["backend"] == alive.url and final[name]["submissions"] == 2, final[name]
        finally:
            op.stop()
