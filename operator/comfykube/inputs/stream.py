"""The image check of `check.py`, run while the fetch still writes the file.

A 1 MB input over loopback spends as long in the full decode as in the fetch;
one after the other they add up. Here the decode starts once the first bytes
are on disk: a worker thread reads the file as it grows (a read of bytes not
written yet waits for them), so Pillow decodes while the rest arrives, and
what is left after the last byte is the tail of the decode. The checks are the
same as `check_image_file`'s, in the same thread-side code path: magic bytes
(at once, from the first bytes: a page that is not a picture stops the fetch),
pixel cap from the header before any pixel is decoded, every pixel, and for a
PNG the CRC walk of every chunk (after the last byte; its message wins over a
decode error, as in `check_image_file`). Pillow sees a PNG up to the end of its
first run of image data only: the chunks after it (text, private chunks of any
size) are CRC-checked in blocks but never held in memory.

The event loop only writes, flushes and notifies; it never waits on the thread
except for the result. A failed or cancelled fetch releases the thread at once.
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from comfykube.comfyui.media import png_image_data_end
from comfykube.errors import DownloadFailed, InputImageFailed
from comfykube.inputs.check import CheckedImage, ImageKind, check_open_image, describe_head, sniff_input

#: Bytes of the head needed to sniff the kind (as fetch.HEAD_BYTES).
SNIFF_BYTES = 16


class _Aborted(Exception):
    """The fetch failed or was cancelled: the thread stops reading."""


class _Progress:
    """How far the file is written, shared by the writer (event loop) and the reader (thread)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.written = 0
        self.done = False
        self.aborted = False

    def grew(self, total: int) -> None:
        """`total` bytes are on disk (called from the event loop: a short lock, no wait)."""
        with self._cond:
            self.written = total
            self._cond.notify_all()

    def finish(self, total: int) -> None:
        """The file is complete at `total` bytes."""
        with self._cond:
            self.written = total
            self.done = True
            self._cond.notify_all()

    def abort(self) -> None:
        """No more bytes will come: reads fail."""
        with self._cond:
            self.aborted = True
            self._cond.notify_all()

    def available(self, end: int) -> int:
        """Wait until the file is written up to `end` or complete; the written end."""
        with self._cond:
            while not self.aborted and not self.done and self.written < end:
                self._cond.wait()
            if self.aborted:
                raise _Aborted
            return self.written

    def final(self) -> int:
        """Wait until the file is complete; its size."""
        with self._cond:
            while not self.aborted and not self.done:
                self._cond.wait()
            if self.aborted:
                raise _Aborted
            return self.written


class _GrowingReader(io.RawIOBase):
    """A read-only view of a file being written: reads wait for the bytes; the end is the final size."""

    def __init__(self, path: Path, progress: _Progress) -> None:
        self._handle = open(path, "rb", buffering=0)
        self._progress = progress

    def close(self) -> None:
        """Close the file."""
        self._handle.close()
        super().close()

    def readable(self) -> bool:
        """Always."""
        return True

    def seekable(self) -> bool:
        """Always: Pillow seeks within the file."""
        return True

    def tell(self) -> int:
        """The position in the file."""
        return self._handle.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        """Seek; from the end waits until the file is complete."""
        if whence == 2:
            return self._handle.seek(self._progress.final() + offset)
        return self._handle.seek(offset, whence)

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer`, waiting for its bytes; short only at the final end (Pillow takes a short read for EOF)."""
        position = self._handle.tell()
        end = self._progress.available(position + len(buffer))
        if end <= position:
            return 0
        view = memoryview(buffer)[: min(len(buffer), end - position)]
        return self._handle.readinto(view) or 0


class _PngFirstRun(io.RawIOBase):
    """A growing PNG up to the end of its first run of IDAT chunks (Pillow decodes only that far).

    The chunk headers are walked just ahead of Pillow's reads, so the window's end is
    known before Pillow could read past it; what follows is never read by Pillow.
    """

    def __init__(self, path: Path, progress: _Progress) -> None:
        self._reader = _GrowingReader(path, progress)
        self._walker = _GrowingReader(path, progress)
        self._walked = 8  # past the signature
        self._seen_idat = False
        self._limit: int | None = None

    def close(self) -> None:
        """Close both handles."""
        self._reader.close()
        self._walker.close()
        super().close()

    def readable(self) -> bool:
        """Always."""
        return True

    def seekable(self) -> bool:
        """Always."""
        return True

    def tell(self) -> int:
        """The position in the file."""
        return self._reader.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        """Seek; the end is the window's end."""
        if whence == 2:
            while self._limit is None:
                self._advance()
            return self._reader.seek(self._limit + offset)
        return self._reader.seek(offset, whence)

    def _advance(self) -> None:
        """Walk one more chunk header; set the limit at the first chunk after the IDAT run (or the end)."""
        self._walker.seek(self._walked)
        header = b""
        while len(header) < 8:
            more = self._walker.read(8 - len(header))
            if not more:
                break
            header += more
        if len(header) < 8:  # the file ends here: Pillow fails, the CRC walk says why
            self._limit = self._walked
            return
        length, chunk_type = struct.unpack(">I4s", header)
        if chunk_type == b"IDAT":
            self._seen_idat = True
        elif self._seen_idat:
            self._limit = self._walked
            return
        self._walked += 12 + length

    def readinto(self, buffer: Any) -> int:
        """Read up to the walked (known-safe) end, walking ahead as Pillow reads."""
        position = self._reader.tell()
        while self._limit is None and self._walked < position + len(buffer):
            self._advance()
        end = self._limit if self._limit is not None else self._walked
        if end <= position:
            return 0
        view = memoryview(buffer)[: min(len(buffer), end - position)]
        return self._reader.readinto(view)


def _check_growing(path: Path, kind: ImageKind, progress: _Progress, max_pixels: int, what: str) -> CheckedImage:
    """`check_image_file`'s checks on a file still being written (blocking: runs in a thread)."""
    source: io.RawIOBase = _PngFirstRun(path, progress) if kind.pillow_format == "PNG" else _GrowingReader(
        path, progress
    )
    decoded: CheckedImage | None = None
    failure: InputImageFailed | None = None
    try:
        with source:
            decoded = check_open_image(source, kind, max_pixels=max_pixels, what=what)
    except InputImageFailed as exc:
        failure = exc
    if kind.pillow_format == "PNG":
        size = progress.final()
        try:
            with open(path, "rb") as handle:
                png_image_data_end(handle, size, what, what=what)  # every chunk's CRC, in blocks
        except DownloadFailed as exc:
            raise InputImageFailed(exc.message) from None
    if failure is not None:
        raise failure
    assert decoded is not None
    return decoded


class StreamCheck:
    """The check of one file the fetch is writing: `feed` per chunk, `result` at the end, `abort` on failure."""

    def __init__(self, path: Path, *, max_pixels: int, what: str) -> None:
        self.path = path
        self.max_pixels = max_pixels
        self.what = what
        self.refused: InputImageFailed | None = None
        self._progress = _Progress()
        self._future: asyncio.Future[CheckedImage] | None = None

    def feed(self, head: bytes, received: int) -> None:
        """`received` bytes are written and flushed, `head` are the first of them.

        Raises InputImageFailed (kept as `refused`) as soon as the head is not a picture:
        the fetch stops there.
        """
        if self._future is None:
            if len(head) < SNIFF_BYTES:
                return
            kind = sniff_input(head)
            if kind is None:
                self.refused = InputImageFailed(
                    f"{self.what} is not a PNG, JPEG, WebP, GIF or BMP image ({describe_head(head)})"
                )
                raise self.refused
            self._future = _in_own_thread(
                _check_growing, self.path, kind, self._progress, self.max_pixels, self.what
            )
        self._progress.grew(received)

    @property
    def started(self) -> bool:
        """Whether the thread runs (the head was long enough to sniff)."""
        return self._future is not None

    async def result(self) -> CheckedImage:
        """The file is complete (the last `feed` had every byte): wait for the check's verdict."""
        assert self._future is not None
        self._progress.finish(self._progress.written)
        return await self._future

    def abort(self) -> None:
        """The fetch failed or the job was cancelled: release the thread (its error is dropped)."""
        self._progress.abort()
        if self._future is not None:
            self._future.add_done_callback(_drop_result)


def _in_own_thread(fn: Callable[..., CheckedImage], *args: Any) -> asyncio.Future[CheckedImage]:
    """`fn(*args)` in a thread of its own, its outcome as a future of the running loop.

    Not the default executor: this thread waits for bytes as long as the fetch runs (up
    to INPUT_URL_TIMEOUT), and a few slow URLs would otherwise hold every worker that
    other jobs' short blocking calls need.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[CheckedImage] = loop.create_future()

    def settle(outcome: CheckedImage | BaseException) -> None:
        if future.done():  # cancelled meanwhile
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def run() -> None:
        outcome: CheckedImage | BaseException
        try:
            outcome = fn(*args)
        except BaseException as exc:  # delivered to the awaiting task, not lost in the thread
            outcome = exc
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:  # the loop closed meanwhile: nobody waits any more
            pass

    threading.Thread(target=run, name="input-check", daemon=True).start()
    return future


def _drop_result(future: asyncio.Future[CheckedImage]) -> None:
    if not future.cancelled():
        future.exception()

