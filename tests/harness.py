"""Running `comfykube operator` as a real process in tests (also used by the bot's e2e tests).

`OperatorProcess` starts the operator with the environment a deployment would
give it (KUBECONFIG from the Kubernetes API stand-in, COMFYUI_URL, MINIO_*),
waits for its readiness probe, and can SIGKILL and restart it to test resume.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}: last={last!r}")


class OperatorProcess:
    """`comfykube operator -n NAMESPACE` in a subprocess."""

    def __init__(self, env: Mapping[str, str], namespace: str, log_path: Path, *, metrics: bool = False) -> None:
        self.env = dict(env)
        self.metrics_port = free_port() if metrics else 0
        self.namespace = namespace
        self.log_path = log_path
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> OperatorProcess:
        """Start it; with `wait`, return once /readyz answers 200."""
        self.health_port = free_port()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "comfykube.cli", "operator", "-n", self.namespace,
             "--health-port", str(self.health_port), "--metrics-port", str(self.metrics_port)],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if wait:
            wait_until(self.ready, timeout=60, what="operator /readyz")
        return self

    def ready(self) -> bool:
        """True when /readyz answers 200."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no clean-up, no chance to finish anything (what a node failure does)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait (what `kubectl rollout restart` does)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        """The /metrics page (Prometheus text format)."""
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def logs(self) -> str:
        """Everything the operator printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


def operator_env(
    kube_env: Mapping[str, str],
    *,
    comfyui_url: str,
    s3: Any = None,
    bucket: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for an operator process: cluster, ComfyUI and S3 settings."""
    env = {k: v for k, v in kube_env.items() if not k.startswith(("MINIO_", "COMFYUI_"))}
    # Input images in the tests come from servers on loopback.
    env.update(
        COMFYUI_URL=comfyui_url, COMFYUI_POLL_INTERVAL="0.5", PYTHONUNBUFFERED="1", INPUT_URL_ALLOW_PRIVATE="true"
    )
    if s3 is not None:
        env.update(
            MINIO_ENDPOINT=s3.endpoint,
            MINIO_ACCESS_KEY=s3.access_key,
            MINIO_SECRET_KEY=s3.secret_key,
            MINIO_BUCKET=bucket or "comfykube",
        )
    env.update(extra or {})
    return env


def kubectl_json(kube: Any, *args: str) -> Any:
    """`kubectl ... -o json`, parsed."""
    result = kube.kubectl(*args, "-o", "json")
    return json.loads(result.stdout)
