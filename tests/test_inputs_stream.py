"""The input check that runs while the fetch writes the file (inputs/stream.py), over a real socket.

The picture server sends its bodies in pieces with pauses, so the decode really
runs while bytes are missing: each test shows a verdict that is the same as the
check of the whole file (passes, refusals and their messages), that a page which
is no picture stops the fetch at its first bytes, and that a cut-off or cancelled
fetch leaves no file and no waiting thread behind.
"""

from __future__ import annotations

import asyncio
import io
import random
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image

from comfykube.errors import InputImageFailed
from comfykube.inputs import InputLimits, UrlSource, prepare_image

LIMITS = InputLimits(max_bytes=64 << 20, allow_private=True)
PIECE = 48 * 1024


def noise_png(size: int = 300) -> bytes:
    """An incompressible PNG (several hundred KB: many chunks of the fetch)."""
    rng = random.Random(3)
    buf = io.BytesIO()
    Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def with_trailing_chunk(data: bytes, size: int, *, bad_crc: bool = False) -> bytes:
    """`data` with a private chunk of `size` bytes after the pixels, before IEND."""
    body = b"\x00" * size
    crc = zlib.crc32(b"prIv" + body) ^ (1 if bad_crc else 0)
    chunk = struct.pack(">I", size) + b"prIv" + body + struct.pack(">I", crc & 0xFFFFFFFF)
    return data[:-12] + chunk + data[-12:]


def solid_png(size: int) -> bytes:
    """A small file of many pixels (a decompression bomb's shape)."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def noise_jpeg(size: int = 400) -> bytes:
    rng = random.Random(4)
    buf = io.BytesIO()
    Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def names(path: Path) -> list[str]:
    return [p.name for p in path.iterdir()]


def check_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "input-check"]


class SlowServer:
    """Serves bodies in `PIECE`-sized writes with a pause between them; `cut` ends one early."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}
        self.stall_after: dict[str, int] = {}
        self.pause = 0.01
        #: whether an `input-check` thread was alive while a body was still being sent
        self.saw_check_midway = False
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = self.bodies[name]
        resp = web.StreamResponse(headers={"Content-Type": "image/png", "Content-Length": str(len(body))})
        await resp.prepare(request)
        cut = self.cut_after.get(name)
        stall = self.stall_after.get(name)
        for start in range(0, len(body), PIECE):
            if cut is not None and start >= cut:
                await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.abort()
                return resp
            if stall is not None and start >= stall:
                for _ in range(3000):  # 30 s, or until the client hung up
                    if request.transport is None or request.transport.is_closing():
                        return resp
                    await asyncio.sleep(0.01)
            await resp.write(body[start:start + PIECE])
            await asyncio.sleep(self.pause)
            if start + PIECE < len(body) and check_threads():
                self.saw_check_midway = True
        await resp.write_eof()
        return resp


@pytest.fixture
async def server() -> AsyncIterator[SlowServer]:
    srv = SlowServer()
    await srv.start()
    yield srv
    await srv.stop()


async def no_check_thread_left() -> None:
    for _ in range(200):
        if not check_threads():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"check threads still running: {check_threads()}")


async def take(server: SlowServer, name: str, tmp_path: Path) -> Path:
    prepared = await prepare_image("init", UrlSource(f"{server.url}/{name}"), tmp_path, store=None, limits=LIMITS)
    return prepared.path


@pytest.mark.parametrize("kind", ["png", "png-trailing", "jpeg"])
async def test_the_decode_runs_while_the_bytes_arrive_and_passes_a_good_picture(
    server: SlowServer, tmp_path: Path, kind: str
) -> None:
    data = {"png": noise_png(), "png-trailing": with_trailing_chunk(noise_png(), 600_000), "jpeg": noise_jpeg()}[kind]
    server.bodies["pic"] = data
    path = await take(server, "pic", tmp_path)
    assert path.read_bytes() == data  # the bytes checked are the bytes kept
    assert server.saw_check_midway  # the check thread ran while the body was still coming
    assert names(tmp_path) == [path.name]
    await no_check_thread_left()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (with_trailing_chunk(noise_png(), 300_000, bad_crc=True), "has a bad CRC (damaged file)"),
        (noise_png()[:-12], "PNG ends without an IEND chunk"),  # every pixel there, the end missing
        (noise_png()[:200_000], "runs past the end (cut off?)"),  # the walk's message wins over the decode's
        (with_trailing_chunk(solid_png(5000), 300_000), "more than the 16777216 allowed (INPUT_IMAGE_MAX_PIXELS)"),
    ],
)
async def test_a_bad_picture_is_refused_with_the_message_of_the_whole_file_check(
    server: SlowServer, tmp_path: Path, body: bytes, expected: str
) -> None:
    server.bodies["bad"] = body
    with pytest.raises(InputImageFailed) as info:
        await take(server, "bad", tmp_path)
    assert expected in info.value.message and "'init'" in info.value.message
    assert names(tmp_path) == []
    await no_check_thread_left()


async def test_a_page_that_is_no_picture_stops_the_fetch_at_its_first_bytes(
    server: SlowServer, tmp_path: Path
) -> None:
    server.bodies["page"] = b"<!DOCTYPE html><html><body>" + b"login " * 100_000
    server.stall_after["page"] = PIECE  # the rest would take 30 s
    started = time.monotonic()
    with pytest.raises(InputImageFailed) as info:
        await take(server, "page", tmp_path)
    assert time.monotonic() - started < 10
    assert "starts like an HTML/XML page" in info.value.message
    assert info.value.message.count("input image 'init'") == 1
    assert names(tmp_path) == []


async def test_a_body_cut_off_midway_releases_the_check_and_leaves_no_file(
    server: SlowServer, tmp_path: Path
) -> None:
    server.bodies["cut"] = noise_png()
    server.cut_after["cut"] = 3 * PIECE
    with pytest.raises(InputImageFailed) as info:
        await take(server, "cut", tmp_path)
    assert "cut off" in info.value.message and info.value.retryable
    assert names(tmp_path) == []
    await no_check_thread_left()


async def test_a_cancelled_fetch_releases_the_check_and_leaves_no_file(server: SlowServer, tmp_path: Path) -> None:
    server.bodies["slow"] = noise_png()
    server.stall_after["slow"] = 2 * PIECE
    task = asyncio.create_task(take(server, "slow", tmp_path))
    for _ in range(500):
        if check_threads():
            break
        await asyncio.sleep(0.01)
    assert check_threads()  # the check waits for bytes that will not come
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert names(tmp_path) == []
    await no_check_thread_left()
