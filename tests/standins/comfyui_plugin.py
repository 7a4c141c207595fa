"""pytest fixtures for the ComfyUI stand-in (``tests.standins.comfyui``).

* ``comfyui``: a started :class:`FakeComfyUI` in the test's own event loop (async tests).
* ``comfyui_factory``: ``await comfyui_factory(exec_seconds=2, checkpoints=[...])`` for several.
* ``comfyui_process``: the stand-in as a subprocess on a free port, controlled over HTTP
  (``.url``, ``.stats()``, ``.configure(**kw)``, ``.restart()``, ``.respawn()``); killed in teardown.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.standins.comfyui import FakeComfyUI

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture
async def comfyui(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FakeComfyUI]:
    """A started ComfyUI stand-in; its output directory is its own (not the test's tmp_path)."""
    fake = FakeComfyUI(output_dir=tmp_path_factory.mktemp("comfyui-output"))
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest_asyncio.fixture
async def comfyui_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Callable[..., Awaitable[FakeComfyUI]]]:
    """Make more stand-ins: ``await comfyui_factory(exec_seconds=1.0, time_scale=10)``.

    Keyword arguments go to :class:`FakeComfyUI`; config fields (``image_mode=...``) are applied
    after start. Each gets its own output directory unless ``output_dir`` is given.
    """
    started: list[FakeComfyUI] = []
    ctor_args = {"exec_seconds", "time_scale", "checkpoints", "output_dir", "preview_method"}

    async def make(**kwargs: Any) -> FakeComfyUI:
        ctor = {k: v for k, v in kwargs.items() if k in ctor_args}
        if ctor.get("output_dir") is None:
            ctor["output_dir"] = tmp_path_factory.mktemp("comfyui-output")
        fake = FakeComfyUI(**ctor)
        await fake.start()
        started.append(fake)
        extra = {k: v for k, v in kwargs.items() if k not in ctor_args}
        if extra:
            fake.configure(**extra)
        return fake

    try:
        yield make
    finally:
        for fake in started:
            await fake.stop()


class ComfyUIProcess:
    """A stand-in running as ``python -m tests.standins.comfyui``, driven over HTTP."""

    def __init__(self, output_dir: Path, log_path: Path, args: list[str] | None = None) -> None:
        self.output_dir = output_dir
        self.log_path = log_path
        self.args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0

    def start(self, port: int = 0, timeout: float = 20.0) -> None:
        """Start the process (``port=0``: a free port) and wait for its READY line."""
        cmd = [sys.executable, "-m", "tests.standins.comfyui", "--port", str(port),
               "--output-dir", str(self.output_dir), *self.args]
        log = open(self.log_path, "ab")  # the child keeps its own copy of the descriptor
        try:
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        finally:
            log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.kill()
                raise RuntimeError(f"ComfyUI stand-in did not start; see {self.log_path}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    continue
                line += chunk
        text = line.decode().strip()
        if not text.startswith("READY "):
            self.kill()
            raise RuntimeError(f"unexpected stand-in output {text!r}")
        self.url = text.split(" ", 1)[1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 5 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def respawn(self, down_seconds: float = 0.0) -> None:
        """A real process restart on the same port (everything in memory is lost)."""
        port = self.port
        self.kill()
        if down_seconds > 0:
            time.sleep(down_seconds)
        self.start(port=port)

    # ---- control over HTTP ----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``GET /_standin/stats``."""
        return dict(httpx.get(self.url + "/_standin/stats", timeout=10).json())

    def configure(self, **changes: Any) -> dict[str, Any]:
        """``POST /_standin/config``; raises on unknown fields or bad values."""
        resp = httpx.post(self.url + "/_standin/config", json=changes, timeout=10)
        resp.raise_for_status()
        return dict(resp.json())

    def restart(self, down_seconds: float = 0.0) -> None:
        """``POST /_standin/restart``: forget queue/history, cut connections, keep the port."""
        httpx.post(self.url + "/_standin/restart", json={"down_seconds": down_seconds}, timeout=10).raise_for_status()

    def stop_listening(self, seconds: float) -> None:
        """``POST /_standin/stop_listening``: refuse connections for ``seconds`` (simulated)."""
        httpx.post(self.url + "/_standin/stop_listening", json={"seconds": seconds}, timeout=10).raise_for_status()

    async def astats(self) -> dict[str, Any]:
        """Async :meth:`stats`."""
        async with httpx.AsyncClient() as client:
            return dict((await client.get(self.url + "/_standin/stats")).json())

    async def aconfigure(self, **changes: Any) -> dict[str, Any]:
        """Async :meth:`configure`."""
        async with httpx.AsyncClient() as client:
            resp = await client.post(self.url + "/_standin/config", json=changes)
            resp.raise_for_status()
            return dict(resp.json())


@pytest.fixture
def comfyui_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyUIProcess]:
    """The stand-in as a separate process on a free loopback port (log: ``.log_path``)."""
    base = tmp_path_factory.mktemp("comfyui-process")
    output = base / "output"
    output.mkdir()
    proc = ComfyUIProcess(output, base / "comfyui-process.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()
