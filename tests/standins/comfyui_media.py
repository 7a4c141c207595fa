"""Real media files for the ComfyUI stand-in's savers: animated WebP/PNG, GIF, MP4, WebM, FLAC.

Pictures and animations are written by Pillow, as ComfyUI itself does. No video
or audio encoder is at hand, so MP4 and WebM files are containers with the
real structure (ISO BMFF boxes `ftyp`, `free`, `mdat`, `moov/mvhd` in the order
ffmpeg writes them, capture 94; an EBML header naming webm and a Segment with
Info) and FLAC is a real, decodable stream: STREAMINFO, then frames with
VERBATIM subframes and correct CRC-8/CRC-16.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

from PIL import Image


def _rgb(colour: int) -> tuple[int, int, int]:
    return (colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF


def write_animation(path: Path, fmt: str, width: int, height: int, colours: list[int], fps: float,
                    **options: object) -> None:
    """An animated WEBP, PNG (APNG) or GIF, one solid frame per colour."""
    frames = [Image.new("RGB", (width, height), _rgb(colour)) for colour in colours] or [
        Image.new("RGB", (width, height))
    ]
    duration = max(1, round(1000 / max(fps, 0.01)))
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=duration, loop=0,
                   **options)


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def mp4_bytes(frames: int, fps: float) -> bytes:
    """An ISO BMFF file laid out as ffmpeg writes one: ftyp, free, mdat, moov(mvhd)."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    free = _box(b"free", b"")
    mdat = _box(b"mdat", bytes((i * 37) & 0xFF for i in range(64 * max(1, frames))))
    duration_ms = round(1000 * frames / max(fps, 0.01))
    mvhd = _box(
        b"mvhd",
        struct.pack(">B3xIIII", 0, 0, 0, 1000, duration_ms)
        + struct.pack(">IH10x", 0x00010000, 0x0100)
        + struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
        + bytes(24)
        + struct.pack(">I", 2),
    )
    return ftyp + free + mdat + _box(b"moov", mvhd)


def _ebml(element: int, payload: bytes) -> bytes:
    ident = element.to_bytes((element.bit_length() + 7) // 8, "big")
    size = len(payload) | (0x01 << 56)  # 8-byte size field
    return ident + size.to_bytes(8, "big") + payload


def _uint(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def webm_bytes(frames: int, fps: float) -> bytes:
    """An EBML header with DocType webm and a Segment holding Info (timecode scale, duration)."""
    header = _ebml(
        0x1A45DFA3,
        _ebml(0x4286, _uint(1)) + _ebml(0x42F7, _uint(1)) + _ebml(0x42F2, _uint(4)) + _ebml(0x42F3, _uint(8))
        + _ebml(0x4282, b"webm") + _ebml(0x4287, _uint(4)) + _ebml(0x4285, _uint(2)),
    )
    info = _ebml(
        0x1549A966,
        _ebml(0x2AD7B1, _uint(1_000_000)) + _ebml(0x4D80, b"comfykube stand-in") + _ebml(0x5741, b"comfykube")
        + _ebml(0x4489, struct.pack(">d", 1000 * frames / max(fps, 0.01))),
    )
    return header + _ebml(0x18538067, info)


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _utf8_number(value: int) -> bytes:
    """FLAC's "UTF-8" coding of the frame number (values < 2^31 here)."""
    if value < 0x80:
        return bytes([value])
    out = []
    while True:
        out.insert(0, 0x80 | (value & 0x3F))
        value >>= 6
        if value < (0x3F >> len(out)):
            lead = (0xFF << (7 - len(out))) & 0xFF
            return bytes([lead | value]) + bytes(out)


def flac_bytes(seconds: float, sample_rate: int = 44100, frequency: float = 440.0) -> bytes:
    """A mono 16-bit FLAC stream of a sine tone, `seconds` long (VERBATIM subframes)."""
    total = max(1, round(seconds * sample_rate))
    block = 4096
    samples = [round(12000 * math.sin(2 * math.pi * frequency * n / sample_rate)) for n in range(total)]
    frames = []
    for number, start in enumerate(range(0, total, block)):
        chunk = samples[start : start + block]
        # sync 0xFFF8 (fixed blocksize), block size code 7 (16-bit size-1 follows),
        # sample rate code 9 (44.1 kHz), mono, 16 bits per sample.
        rate_code = 9 if sample_rate == 44100 else 0
        header = bytes([0xFF, 0xF8, (0x7 << 4) | rate_code, (0x0 << 4) | (0x4 << 1)])
        header += _utf8_number(number) + struct.pack(">H", len(chunk) - 1)
        header += bytes([_crc8(header)])
        body = bytes([0x02]) + struct.pack(f">{len(chunk)}h", *chunk)  # VERBATIM subframe
        frame = header + body
        frames.append(frame + struct.pack(">H", _crc16(frame)))
    sizes = [len(frame) for frame in frames]
    info = struct.pack(">HH", block, block) + min(sizes).to_bytes(3, "big") + max(sizes).to_bytes(3, "big")
    packed = (sample_rate << 44) | (0 << 41) | (15 << 36) | total
    info += packed.to_bytes(8, "big") + bytes(16)  # MD5 unknown (all zero is allowed)
    streaminfo = bytes([0x80]) + len(info).to_bytes(3, "big") + info  # last metadata block, type 0
    return b"fLaC" + streaminfo + b"".join(frames)
