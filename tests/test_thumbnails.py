"""Thumbnails are made once, when the image is stored: a small WebP beside the original, in status."""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from comfykube.comfyui.client import ComfyClient
from comfykube.pipeline import JobIdentity, Pipeline
from comfykube.settings import DEFAULT_WORKFLOWS_DIR
from comfykube.storage import LocalStore, MinioStore
from comfykube.storage.thumbnails import MAX_SIDE, store_thumbnail, thumbnail_key
from comfykube.types import ImageJobSpec, Phase
from comfykube.workflows import WorkflowLibrary

WORKFLOWS = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR])


def test_thumbnail_key_sits_beside_the_original() -> None:
    assert thumbnail_key("ns/fox/0f1e/0.png") == "ns/fox/0f1e/0.thumb.webp"
    assert thumbnail_key("ns/fox/0f1e/3.webp") == "ns/fox/0f1e/3.thumb.webp"


async def test_pipeline_stores_a_small_webp_and_records_its_key(comfyui: Any, s3_settings: Any) -> None:
    store = MinioStore(s3_settings)
    job = JobIdentity(namespace="tests", name="thumb", uid=str(uuid.uuid4()))
    spec = ImageJobSpec(prompt="a red fox", width=1024, height=512, steps=2, seed=3, batch_size=2)
    async with ComfyClient(comfyui.url, timeout=10) as comfy:
        pipeline = Pipeline(comfy=comfy, store=store, workflows=WORKFLOWS, poll_interval=0.2)
        status = await pipeline.run(spec, job)
    assert status.phase is Phase.SUCCEEDED
    for index, image in enumerate(status.images):
        assert image.thumbnail_key == f"tests/thumb/{job.uid}/{index}.thumb.webp"
        info = await store.stat(image.thumbnail_key)
        assert info is not None and info.content_type == "image/webp"
        assert info.size < image.bytes
        url, _ = await store.presign(image.thumbnail_key, 60)
        async with httpx.AsyncClient() as http:
            body = (await http.get(url)).content
        with Image.open(io.BytesIO(body)) as thumb:
            assert thumb.format == "WEBP"
            assert thumb.size == (MAX_SIDE, MAX_SIDE // 2)  # aspect kept
    # Written to status through the type: the CRD knows the field.
    assert "thumbnailKey" in status.images[0].wire()


async def test_an_unreadable_image_gets_no_thumbnail_and_no_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    await store.ensure_ready()
    bogus = tmp_path / "video.mp4"
    bogus.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    assert await store_thumbnail(store, bogus, "ns/job/uid/0.mp4") is None
    assert await store.stat("ns/job/uid/0.thumb.webp") is None


@pytest.mark.parametrize("mode", ["RGBA", "P", "L"])
async def test_thumbnails_of_other_modes_are_webp(tmp_path: Path, mode: str) -> None:
    store = LocalStore(tmp_path / "store")
    await store.ensure_ready()
    source = tmp_path / "in.png"
    Image.new(mode, (800, 600)).save(source)
    key = await store_thumbnail(store, source, "ns/job/uid/0.png")
    assert key == "ns/job/uid/0.thumb.webp"
    with Image.open(store.directory / key) as thumb:
        assert thumb.format == "WEBP" and max(thumb.size) == MAX_SIDE


async def test_a_video_gets_no_thumbnail_attempt(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    await store.ensure_ready()
    source = tmp_path / "still.png"
    Image.new("RGB", (64, 64)).save(source)  # readable, but declared a video: skipped, not decoded
    assert await store_thumbnail(store, source, "ns/job/uid/0.mp4", content_type="video/mp4") is None


def test_the_download_check_keeps_a_reduced_first_frame_for_the_thumbnail(tmp_path: Path) -> None:
    from comfykube.comfyui.media import check_media
    from comfykube.storage.thumbnails import render_thumbnail

    source = tmp_path / "out.png"
    Image.new("RGBA", (1000, 500), (200, 10, 10, 128)).save(source)
    checked = check_media(source, source.read_bytes()[:64], "out.png", preview_side=MAX_SIDE)
    assert checked.preview is not None
    assert checked.preview.size == (MAX_SIDE, MAX_SIDE * 500 // 1000) and checked.preview.mode == "RGBA"
    # Without the ask there is none (the check alone keeps nothing in memory).
    assert check_media(source, source.read_bytes()[:64], "out.png").preview is None
    size, sha256 = render_thumbnail(source.with_name("missing.png"), tmp_path / "t.webp", frame=checked.preview)
    data = (tmp_path / "t.webp").read_bytes()
    assert size == len(data) and sha256 == hashlib.sha256(data).hexdigest()
    with Image.open(tmp_path / "t.webp") as thumb:  # made from the frame: the file was not opened again
        assert thumb.format == "WEBP" and thumb.size == (MAX_SIDE, 192) and thumb.mode == "RGBA"


def test_a_large_jpeg_thumbnail_decoded_in_draft_mode_keeps_aspect_and_colour(tmp_path: Path) -> None:
    from comfykube.storage.thumbnails import render_thumbnail

    source = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 1500), (10, 120, 200)).save(source, quality=90)
    render_thumbnail(source, tmp_path / "t.webp")
    with Image.open(tmp_path / "t.webp") as thumb:
        assert thumb.size == (MAX_SIDE, MAX_SIDE // 2)
        red, green, blue = thumb.convert("RGB").getpixel((10, 10))  # type: ignore[misc]
        assert abs(red - 10) < 8 and abs(green - 120) < 8 and abs(blue - 200) < 8


async def test_an_original_that_fails_its_check_in_the_store_takes_its_thumbnail_with_it(
    comfyui: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preview is stored beside the original, not after it: a failed original leaves no preview."""
    import asyncio

    from comfykube.errors import StorageVerificationFailed

    store = LocalStore(tmp_path / "store")
    job = JobIdentity(namespace="tests", name="thumb", uid=str(uuid.uuid4()))
    real_put = store.put_verified
    thumb_file = store.directory / f"tests/thumb/{job.uid}/0.thumb.webp"

    async def failing_original(key: str, path: Path, **kwargs: Any) -> None:
        if key.endswith(".thumb.webp"):
            return await real_put(key, path, **kwargs)
        for _ in range(200):  # fail only once the preview is really stored
            if thumb_file.exists():
                break
            await asyncio.sleep(0.01)
        assert thumb_file.exists()
        raise StorageVerificationFailed(f"{key}: the store disagreed (test)")

    monkeypatch.setattr(store, "put_verified", failing_original)
    spec = ImageJobSpec(prompt="a red fox", width=64, height=64, steps=1, seed=3)
    async with ComfyClient(comfyui.url, timeout=10) as comfy:
        pipeline = Pipeline(comfy=comfy, store=store, workflows=WORKFLOWS, poll_interval=0.2)
        with pytest.raises(StorageVerificationFailed):
            await pipeline.run(spec, job)
    assert not thumb_file.exists()
    assert await store.stat(f"tests/thumb/{job.uid}/0.thumb.webp") is None
