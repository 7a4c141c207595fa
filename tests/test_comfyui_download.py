"""Downloads through /view against the ComfyUI stand-in: every bad answer is refused, nothing is left behind."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfykube.comfyui import ComfyClient, HistoryEntry, OutputImage
from comfykube.errors import DownloadFailed
from tests.standins.comfyui import FakeComfyUI


def graph(prefix: str, *, width: int = 64, height: int = 48, batch_size: int = 1) -> dict[str, Any]:
    """txt2img in API format with a chosen SaveImage prefix (which may hold a subfolder)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15-base.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch_size}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": uuid.uuid4().int % 2**32,
                "steps": 2,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """Where downloads go (the stand-in fixture writes its own outputs elsewhere in tmp_path)."""
    path = tmp_path / "downloads"
    path.mkdir()
    return path


def files(path: Path) -> list[str]:
    """Names in a directory (a failed download must leave none)."""
    return sorted(os.listdir(path))


async def render(client: ComfyClient, prefix: str = "dl/img", **kwargs: Any) -> HistoryEntry:
    pid = str(uuid.uuid4())
    async with client.watch(pid) as watch:
        await client.submit(graph(prefix, **kwargs), pid)
        return await client.follow(watch, pid, poll_interval=0.5)


async def test_output_image_downloads_with_checksum_and_size(comfyui: FakeComfyUI, dest: Path) -> None:
    async with ComfyClient(comfyui.url) as client:
        entry = await render(client)
        (image,) = entry.output_images
        got = await client.download(image, dest, expected_size=(64, 48))
    data = got.path.read_bytes()
    assert got.path.parent == dest and got.path.suffix == ".png"
    assert got.bytes == len(data) and got.sha256 == hashlib.sha256(data).hexdigest()
    assert (got.width, got.height, got.content_type) == (64, 48, "image/png")
    assert got.source == image
    on_server = comfyui.output_dir / image.subfolder / image.filename
    assert data == on_server.read_bytes()


async def test_temp_previews_are_skipped(comfyui: FakeComfyUI, dest: Path) -> None:
    async with ComfyClient(comfyui.url) as client:
        entry = await render(client, batch_size=2)
        assert {image.type for image in entry.images} == {"output", "temp"}
        outputs = entry.output_images
        got = [await client.download(image, dest, expected_size=(64, 48)) for image in outputs]
    assert len(got) == 2
    assert all(item.source.type == "output" for item in got)
    assert files(dest) == sorted(item.path.name for item in got)


@pytest.mark.parametrize(
    "prefix",
    [
        "with space/a b",
        "amp&sub/x&y=1",
        "hash#dir/pic#1?q",
        "ünïcødé/файл 画像",
        "deep/er/still+plus%20",
    ],
)
async def test_filenames_with_space_ampersand_hash_unicode_and_subfolder_download(
    comfyui: FakeComfyUI, dest: Path, prefix: str
) -> None:
    async with ComfyClient(comfyui.url) as client:
        entry = await render(client, prefix)
        (image,) = entry.output_images
        assert image.subfolder == prefix.rsplit("/", 1)[0]
        got = await client.download(image, dest, expected_size=(64, 48))
    assert got.path.read_bytes() == (comfyui.output_dir / image.subfolder / image.filename).read_bytes()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("empty", "empty body"),
        ("truncated", "cut off"),
        ("html200", "HTML page"),
        ("wrong_magic", "named .png but its bytes are image/gif"),
        ("not_found", "404"),
        ("wrong_size", "expected 64x48"),
    ],
)
async def test_bad_view_answers_are_refused_and_leave_no_file(
    comfyui: FakeComfyUI, dest: Path, mode: str, expected: str
) -> None:
    async with ComfyClient(comfyui.url) as client:
        entry = await render(client, "bad/one")
        (image,) = entry.output_images
        comfyui.configure(image_mode=mode)
        with pytest.raises(DownloadFailed) as info:
            await client.download(image, dest, expected_size=(64, 48))
    assert expected in info.value.message
    assert f"'bad/{image.filename}'" in info.value.message  # names the file
    assert files(dest) == []


async def test_zero_byte_image_is_refused(comfyui: FakeComfyUI, dest: Path) -> None:
    async with ComfyClient(comfyui.url) as client:
        (image,) = (await render(client)).output_images
        comfyui.configure(image_mode="empty")
        with pytest.raises(DownloadFailed, match="empty body"):
            await client.download(image, dest)
    assert files(dest) == []


async def test_truncated_body_is_refused(comfyui: FakeComfyUI, dest: Path) -> None:
    comfyui.configure(pad_bytes=2_000_000)  # big enough that the cut lands mid-stream
    async with ComfyClient(comfyui.url) as client:
        (image,) = (await render(client)).output_images
        comfyui.configure(image_mode="truncated")
        with pytest.raises(DownloadFailed, match="cut off") as info:
            await client.download(image, dest)
    assert image.filename in info.value.message
    # A body cut off mid-stream is retried (the backend may have died while we read it):
    # the next attempt downloads it again, or the job moves; it is never stored as it is.
    assert info.value.retryable
    assert files(dest) == []


async def test_html_200_is_refused(comfyui: FakeComfyUI, dest: Path) -> None:
    async with ComfyClient(comfyui.url) as client:
        (image,) = (await render(client)).output_images
        comfyui.configure(image_mode="html200")
        with pytest.raises(DownloadFailed, match="HTML page"):
            await client.download(image, dest)
    assert files(dest) == []


async def test_missing_file_is_refused_naming_it(comfyui: FakeComfyUI, dest: Path) -> None:
    async with ComfyClient(comfyui.url) as client:
        with pytest.raises(DownloadFailed, match=r"image 'nope/gone_00001_.png': /view answered 404"):
            await client.download(OutputImage("gone_00001_.png", "nope"), dest)


async def test_100_mb_image_streams_with_bounded_memory(comfyui_process: Any, dest: Path) -> None:
    # The stand-in runs in its own process so its buffers do not count against ours.
    comfyui_process.configure(pad_bytes=100 * 1024 * 1024)
    async with ComfyClient(comfyui_process.url, timeout=60) as client:
        (image,) = (await render(client, "big/pic")).output_images
        tracemalloc.start()
        try:
            got = await client.download(image, dest, expected_size=(64, 48))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert got.bytes > 100 * 1024 * 1024
    hasher = hashlib.sha256()
    with got.path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(block)
    assert got.sha256 == hasher.hexdigest()
    # Python allocations peaked far below the file size: it was never held in memory.
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"
    with Image.open(got.path) as img:
        assert img.size == (64, 48)
