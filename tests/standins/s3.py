"""A real S3 server for tests: nanio, run as a subprocess on loopback.

nanio checks SigV4 signatures on requests and presigned URLs and refuses
expired presigned URLs, so tests against it catch signing mistakes that a
permissive fake (moto) would let through. Never call bucket-policy APIs
against it: it misroutes `?policy` to bucket calls (delete_bucket_policy
deletes an empty bucket).

`NanioServer` can be stopped and started again on the same port and data
directory, which is how tests simulate "S3 down, then back".
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from comfykube.settings import Settings

DEFAULT_ACCESS_KEY = "comfykube-test"
DEFAULT_SECRET_KEY = "comfykube-test-secret-0123456789"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nanio_executable() -> Path:
    """The `nanio` script installed next to the running interpreter (the project venv)."""
    candidate = Path(sys.executable).parent / "nanio"
    if not candidate.exists():
        raise RuntimeError(f"nanio is not installed in this venv ({candidate} missing): pip install nanio")
    return candidate


def unique_bucket(prefix: str = "t") -> str:
    """A fresh valid bucket name (lower-case, 3..63 characters)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class NanioServer:
    """One nanio process; `start()`/`stop()` may be called repeatedly (same port, same data)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        startup_timeout: float = 20.0,
    ) -> None:
        """Nothing runs until `start()`; the port is picked now so it stays the same across restarts."""
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.access_key = access_key
        self.secret_key = secret_key
        self.startup_timeout = startup_timeout
        self.log_path = self.data_dir.parent / f"nanio-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """`127.0.0.1:PORT`, the form MINIO_ENDPOINT takes."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://{self.endpoint}"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> NanioServer:
        """Spawn nanio and wait until it answers HTTP; raises with its log if it does not."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(NANIO_ACCESS_KEY=self.access_key, NANIO_SECRET_KEY=self.secret_key)
        cmd = [
            str(nanio_executable()),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        with self.log_path.open("ab") as log:
            # Own process group: stop() can kill nanio and anything it forked in one go.
            self._process = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_until_answering()
        return self

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"nanio exited with {self._process.returncode} while starting:\n{self.log_tail()}"
                )
            try:
                # Any HTTP answer (403 for an anonymous GET /) means it is serving.
                httpx.get(self.url + "/", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nanio did not answer on {self.url} within {self.startup_timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process group and wait for the port to close; no-op if not running."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        else:
            # The leader is gone; make sure no child of it still holds the port.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def restart(self) -> NanioServer:
        """Stop, then start on the same port and data directory (objects survive)."""
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines nanio wrote (for failure messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def settings(self, bucket: str, **overrides: Any) -> Settings:
        """comfykube Settings pointing at this server and `bucket`."""
        values: dict[str, Any] = dict(
            minio_endpoint=self.endpoint,
            minio_access_key=self.access_key,
            minio_secret_key=self.secret_key,
            minio_bucket=bucket,
            minio_secure=False,
            minio_region=None,
            minio_public_endpoint=None,
        )
        values.update(overrides)
        return Settings(**values)

    def __enter__(self) -> NanioServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
