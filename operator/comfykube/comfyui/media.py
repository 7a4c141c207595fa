"""What kind of file an output is, and whether it is whole: the byte checks per kind.

Every `type: output` file a prompt reports is checked here after it was
streamed to disk (`download.py`), whatever node wrote it:

- image (PNG, JPEG, WebP, one-frame GIF): magic bytes, every pixel decoded by Pillow;
  asked for it (`preview_side`), the check keeps a reduced copy of the first frame, so
  the thumbnail is made from the pixels decoded here instead of decoding the file again;
- animation (animated WebP, APNG, GIF): magic bytes, every frame decoded by Pillow;
- video: MP4/MOV (ISO BMFF) top-level boxes must tile the file, starting with `ftyp`,
  with `moov` and `mdat`; WebM/Matroska needs an EBML header naming webm/matroska,
  followed by a Segment;
- audio: FLAC's STREAMINFO, WAV's `fmt ` chunk, a valid MP3 frame header, the Ogg
  codec's ID packet (Opus, Vorbis).

No video or audio decoder is at hand (no ffmpeg), so those are checked by their
headers and structure; a cut-off MP4 still fails because its boxes no longer
tile the file. Checks run in a worker thread (`check_media` is blocking).
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from PIL import Image, ImageSequence, UnidentifiedImageError

from comfykube.errors import DownloadFailed
from comfykube.types import OutputKind

log = logging.getLogger(__name__)

#: Bytes read for sniffing (the first MP4 box, the EBML header, the first Ogg page all fit).
HEAD_BYTES = 64
#: Frames decoded at most (a bound on the CPU time one output can take to check).
MAX_FRAMES = 10_000
#: A picture larger than this many pixels gets no preview copy (decompression bombs; the
#: thumbnail module then decides on its own, from the file).
MAX_PREVIEW_SOURCE_PIXELS = 64_000_000


@dataclass(frozen=True)
class CheckedMedia:
    """The facts of one output that passed its checks."""

    kind: OutputKind
    content_type: str
    ext: str
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    #: The first frame reduced to at most `preview_side` px (RGB, or RGBA where it has
    #: transparency), when asked for; None for other kinds or when it could not be made.
    preview: Image.Image | None = field(default=None, repr=False, compare=False)


def reduced_frame(frame: Image.Image, max_side: int) -> Image.Image:
    """A new RGB (RGBA where there is transparency) copy of `frame`, its longest side at most `max_side` px.

    Shrunk by the smallest whole factor that fits (`Image.reduce`: each output pixel the mean
    of a k×k block, so it is antialiased), which leaves the longest side between half of
    `max_side` and `max_side` (512 px → 256, 768 → 384, 1024 → 341). A whole-factor box
    reduce costs ~0.5 ms on a 512 px render where a BILINEAR resize to exactly `max_side`
    costs ~6 (measured, Pillow 13, this machine): it sits on every job's critical path.
    """
    mode = "RGBA" if "A" in frame.getbands() or "transparency" in frame.info else "RGB"
    factor = -(-max(frame.size) // max_side)  # ceil: the smallest k with longest / k <= max_side
    if frame.mode == mode:
        # reduce() returns a new image (and copy() one when nothing needs shrinking).
        return frame.reduce(factor) if factor > 1 else frame.copy()
    copy = frame.convert(mode)
    return copy.reduce(factor) if factor > 1 else copy


#: File name extension → the sniffed extensions it may hold.
_SAME_FAMILY: dict[str, frozenset[str]] = {
    "png": frozenset({"png"}),
    "jpg": frozenset({"jpg"}),
    "jpeg": frozenset({"jpg"}),
    "webp": frozenset({"webp"}),
    "gif": frozenset({"gif"}),
    "mp4": frozenset({"mp4", "mov"}),
    "mov": frozenset({"mp4", "mov"}),
    "webm": frozenset({"webm", "mkv"}),
    "mkv": frozenset({"webm", "mkv"}),
    "flac": frozenset({"flac"}),
    "wav": frozenset({"wav"}),
    "mp3": frozenset({"mp3"}),
    "opus": frozenset({"ogg", "opus"}),
    "ogg": frozenset({"ogg", "opus"}),
}


def sniff(head: bytes) -> tuple[str, str, str] | None:
    """`(family, content_type, ext)` from the first bytes, or None for a format we do not keep."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "pillow", "image/png", "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "pillow", "image/jpeg", "jpg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "pillow", "image/webp", "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "pillow", "image/gif", "gif"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        return ("bmff", "video/quicktime", "mov") if brand == b"qt  " else ("bmff", "video/mp4", "mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "ebml", "video/webm", "webm"
    if head.startswith(b"fLaC"):
        return "flac", "audio/flac", "flac"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav", "audio/wav", "wav"
    if head.startswith(b"OggS"):
        return "ogg", "audio/ogg", "ogg"
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3", "audio/mpeg", "mp3"
    return None


def check_media(path: Path, head: bytes, name: str, *, preview_side: int | None = None) -> CheckedMedia:
    """Sniff and check one downloaded output; DownloadFailed names it and what is wrong (blocking).

    With `preview_side`, a picture's result carries its first frame reduced to that size
    (`CheckedMedia.preview`), made from the pixels the check decoded anyway.
    """
    found = sniff(head)
    if found is None:
        raise DownloadFailed(
            f"output {name!r} is not an image, animation, video or sound we know "
            f"(starts with {head[:8].hex() or 'nothing'})"
        )
    family, content_type, ext = found
    named = Path(name).suffix.lower().lstrip(".")
    if named in _SAME_FAMILY and ext not in _SAME_FAMILY[named]:
        # ComfyUI names files after what it wrote: a .png holding something else is not its file.
        raise DownloadFailed(
            f"output {name!r} is named .{named} but its bytes are {content_type} "
            f"(starts with {head[:8].hex()}): not the file ComfyUI wrote"
        )
    if family == "pillow":
        return _check_picture(path, content_type, ext, name, preview_side)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if family == "bmff":
            _check_bmff(handle, size, name)
            return CheckedMedia(OutputKind.VIDEO, content_type, ext)
        if family == "ebml":
            doctype = _check_ebml(handle, size, name)
            if doctype == "matroska":
                return CheckedMedia(OutputKind.VIDEO, "video/x-matroska", "mkv")
            return CheckedMedia(OutputKind.VIDEO, content_type, ext)
        data = handle.read(64 * 1024)
    if family == "flac":
        _check_flac(data, name)
    elif family == "wav":
        _check_wav(data, name)
    elif family == "ogg":
        codec = _check_ogg(data, name)
        if codec == "opus":
            return CheckedMedia(OutputKind.AUDIO, "audio/ogg; codecs=opus", "opus")
    else:
        _check_mp3(data, name)
    return CheckedMedia(OutputKind.AUDIO, content_type, ext)


class PngWindow(io.RawIOBase):
    """The first `limit` bytes of a file, as a seekable stream (reads past it see the end)."""

    def __init__(self, handle: io.BufferedReader, limit: int) -> None:
        self._handle = handle
        self._limit = limit

    def readable(self) -> bool:
        """Always: a read-only view."""
        return True

    def seekable(self) -> bool:
        """Always: Pillow seeks within the PNG."""
        return True

    def tell(self) -> int:
        """The position in the file."""
        return self._handle.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        """Seek in the file; the end is the window's end."""
        if whence == 2:
            return self._handle.seek(self._limit + offset)
        return self._handle.seek(offset, whence)

    def readinto(self, buffer: Any) -> int:
        """Read up to the window's end, then nothing (Pillow stops there cleanly)."""
        left = self._limit - self._handle.tell()
        if left <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), left)]
        return self._handle.readinto(view)


def png_image_data_end(handle: io.BufferedReader, size: int, name: str, *, what: str | None = None) -> int:
    """Walk a PNG's chunks, checking each CRC in bounded blocks; the offset after its last image data.

    Pillow keeps the chunks after the image data in memory (text, private chunks),
    so it only sees the file up to there; the rest was checked here, block by block.
    Messages start with `what` (default: `output 'name'`).
    """
    who = what or f"output {name!r}"
    offset = 8
    data_end = 0
    first = True
    while True:
        handle.seek(offset)
        header = handle.read(8)
        if len(header) < 8:
            raise DownloadFailed(f"{who}: PNG ends without an IEND chunk (cut off?)")
        length, chunk_type = struct.unpack(">I4s", header)
        if first and chunk_type != b"IHDR":
            raise DownloadFailed(f"{who}: PNG does not start with IHDR")
        first = False
        if offset + 12 + length > size:
            raise DownloadFailed(f"{who}: PNG chunk {chunk_type!r} runs past the end (cut off?)")
        crc = zlib.crc32(chunk_type)
        left = length
        while left > 0:
            block = handle.read(min(left, 1024 * 1024))
            if not block:
                raise DownloadFailed(f"{who}: PNG chunk {chunk_type!r} cut off")
            crc = zlib.crc32(block, crc)
            left -= len(block)
        (stored,) = struct.unpack(">I", handle.read(4))
        if stored != crc & 0xFFFFFFFF:
            raise DownloadFailed(f"{who}: PNG chunk {chunk_type!r} has a bad CRC (damaged file)")
        offset += 12 + length
        if chunk_type in (b"IDAT", b"fdAT"):
            data_end = offset
        if chunk_type == b"IEND":
            break
    if data_end == 0:
        raise DownloadFailed(f"{who}: PNG without image data")
    return data_end


def _check_picture(path: Path, content_type: str, ext: str, name: str, preview_side: int | None) -> CheckedMedia:
    fmt = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "gif": "GIF"}[ext]
    try:
        with warnings.catch_warnings(), open(path, "rb") as handle:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            source: Any = handle
            if fmt == "PNG":
                source = PngWindow(handle, png_image_data_end(handle, path.stat().st_size, name))
                handle.seek(0)
            with Image.open(source, formats=[fmt]) as img:
                width, height = img.size
                frames = 0
                preview: Image.Image | None = None
                for frame in ImageSequence.Iterator(img):
                    frame.load()  # every pixel of every frame: cut-off or corrupt data fails here
                    if frames == 0 and preview_side and width * height <= MAX_PREVIEW_SOURCE_PIXELS:
                        preview = _preview_of(frame, preview_side, name)
                    frames += 1
                    if frames >= MAX_FRAMES:
                        break
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DownloadFailed(f"output {name!r} does not decode as {fmt}: {exc}") from None
    if width <= 0 or height <= 0 or frames == 0:
        raise DownloadFailed(f"output {name!r} has no pixels ({width}x{height}, {frames} frames)")
    kind = OutputKind.ANIMATION if frames > 1 else OutputKind.IMAGE
    return CheckedMedia(kind, content_type, ext, width, height, frames if frames > 1 else None, preview)


def _preview_of(frame: Image.Image, side: int, name: str) -> Image.Image | None:
    """The reduced first frame, or None: a preview is best effort and never fails the check."""
    try:
        return reduced_frame(frame, side)
    except (OSError, ValueError, MemoryError) as exc:
        log.info("no preview copy of %r: %s", name, exc)
        return None


def _check_bmff(handle: object, size: int, name: str) -> None:
    """ISO BMFF (MP4/MOV): top-level boxes must tile the file, starting with ftyp, with moov and mdat."""
    stream = cast(BinaryIO, handle)
    offset = 0
    seen: list[bytes] = []
    while offset < size:
        stream.seek(offset)
        header = stream.read(16)
        if len(header) < 8:
            raise DownloadFailed(f"output {name!r}: MP4 box header cut off at byte {offset}")
        box_size, box_type = struct.unpack(">I4s", header[:8])
        if box_size == 1:
            if len(header) < 16:
                raise DownloadFailed(f"output {name!r}: MP4 large box header cut off at byte {offset}")
            box_size = struct.unpack(">Q", header[8:16])[0]
        elif box_size == 0:
            box_size = size - offset  # "to the end of the file"
        if box_size < 8 or offset + box_size > size:
            raise DownloadFailed(
                f"output {name!r}: MP4 box {box_type!r} at byte {offset} claims {box_size} bytes; "
                f"the file has {size} (cut off?)"
            )
        seen.append(box_type)
        offset += box_size
        if len(seen) > 10_000:
            raise DownloadFailed(f"output {name!r}: more than 10000 top-level MP4 boxes")
    if not seen or seen[0] != b"ftyp":
        raise DownloadFailed(f"output {name!r}: an MP4 must start with an ftyp box")
    missing = [box.decode() for box in (b"moov", b"mdat") if box not in seen]
    if missing:
        raise DownloadFailed(f"output {name!r}: MP4 without {' and '.join(missing)} box (not a whole video)")


def _read_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at `pos`: (value, length)."""
    if pos >= len(data):
        raise ValueError("EBML number past the end")
    first = data[pos]
    length = 1
    mask = 0x80
    while length <= 8 and not first & mask:
        mask >>= 1
        length += 1
    if length > 8 or pos + length > len(data):
        raise ValueError("bad EBML number")
    value = first if keep_marker else first & (mask - 1)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, length


def _check_ebml(handle: object, size: int, name: str) -> str:
    """WebM/Matroska: an EBML header with DocType webm or matroska, then a Segment element."""
    data = cast(BinaryIO, handle).read(4096)
    try:
        _, id_len = _read_vint(data, 0, keep_marker=True)
        header_size, size_len = _read_vint(data, id_len, keep_marker=False)
        body_start = id_len + size_len
        body_end = body_start + header_size
        if body_end > len(data):
            raise ValueError("EBML header longer than its first 4 KiB")
        doctype = None
        pos = body_start
        while pos < body_end:
            element, length = _read_vint(data, pos, keep_marker=True)
            pos += length
            element_size, length = _read_vint(data, pos, keep_marker=False)
            pos += length
            if element == 0x4282:  # DocType
                doctype = data[pos : pos + element_size].rstrip(b"\x00").decode("ascii", "replace")
            pos += element_size
        segment, _ = _read_vint(data, body_end, keep_marker=True)
    except ValueError as exc:
        raise DownloadFailed(f"output {name!r}: broken WebM/Matroska header ({exc})") from None
    if doctype not in ("webm", "matroska"):
        raise DownloadFailed(f"output {name!r}: EBML DocType {doctype!r} is not webm or matroska")
    if segment != 0x18538067:
        raise DownloadFailed(f"output {name!r}: no Segment after the WebM header (not a whole video)")
    if size <= body_end + 12:
        raise DownloadFailed(f"output {name!r}: WebM with an empty Segment")
    return doctype


def _check_flac(data: bytes, name: str) -> None:
    # fLaC, then metadata block header: last-flag + type (0 = STREAMINFO), 24-bit length 34.
    if len(data) < 42 or data[4] & 0x7F != 0 or int.from_bytes(data[5:8], "big") != 34:
        raise DownloadFailed(f"output {name!r}: FLAC without a STREAMINFO block")
    info = int.from_bytes(data[18:26], "big")
    sample_rate = info >> 44
    channels = ((info >> 41) & 0x7) + 1
    if sample_rate == 0 or channels < 1:
        raise DownloadFailed(f"output {name!r}: FLAC STREAMINFO with sample rate {sample_rate}")


def _check_wav(data: bytes, name: str) -> None:
    pos = 12
    while pos + 8 <= len(data):
        chunk, length = struct.unpack("<4sI", data[pos : pos + 8])
        if chunk == b"fmt ":
            if length < 16 or pos + 24 > len(data):
                raise DownloadFailed(f"output {name!r}: WAV fmt chunk too short")
            _, channels, rate = struct.unpack("<HHI", data[pos + 8 : pos + 16])
            if channels == 0 or rate == 0:
                raise DownloadFailed(f"output {name!r}: WAV with {channels} channels at {rate} Hz")
            return
        pos += 8 + length + (length & 1)
    raise DownloadFailed(f"output {name!r}: WAV without a fmt chunk")


def _check_ogg(data: bytes, name: str) -> str:
    if len(data) < 28 or data[4] != 0:
        raise DownloadFailed(f"output {name!r}: broken Ogg page header")
    segments = data[26]
    packet = data[27 + segments : 27 + segments + 8]
    if packet.startswith(b"OpusHead"):
        return "opus"
    if packet.startswith(b"\x01vorbis"):
        return "vorbis"
    if packet.startswith(b"\x7fFLAC"):
        return "flac"
    raise DownloadFailed(f"output {name!r}: Ogg stream of a codec we do not know")


def _check_mp3(data: bytes, name: str) -> None:
    pos = 0
    if data.startswith(b"ID3"):
        if len(data) < 10:
            raise DownloadFailed(f"output {name!r}: MP3 ID3 tag cut off")
        tag = data[6:10]
        pos = 10 + ((tag[0] << 21) | (tag[1] << 14) | (tag[2] << 7) | tag[3])
    frame = data[pos : pos + 4]
    if len(frame) < 4 or frame[0] != 0xFF or frame[1] & 0xE0 != 0xE0:
        raise DownloadFailed(f"output {name!r}: no MP3 frame after the ID3 tag")
    layer = (frame[1] >> 1) & 0x3
    bitrate = frame[2] >> 4
    rate = (frame[2] >> 2) & 0x3
    if layer == 0 or bitrate in (0, 15) or rate == 3:
        raise DownloadFailed(f"output {name!r}: invalid MP3 frame header")
