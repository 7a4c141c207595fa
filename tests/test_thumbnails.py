"""Thumbnails are made once, when the image is stored: a small JPEG (WebP with alpha) beside the original."""

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
    assert thumbnail_key("ns/fox/0f1e/0.png") == "ns/fox/0f1e/0.thumb.jpg"
    assert thumbnail_key("ns/fox/0f1e/3.webp", "webp") == "ns/fox/0f1e/3.thumb.webp"


async def test_pipeline_stores_a_small_jpeg_and_records_its_key(comfyui: Any, s3_settings: Any) -> None:
    store = MinioStore(s3_settings)
    job = JobIdentity(namespace="tests", name="thumb", uid=str(uuid.uuid4()))
    spec = ImageJobSpec(prompt="a red fox", width=1024, height=512, steps=2, seed=3, batch_size=2)
    async with ComfyClient(comfyui.url, timeout=10) as comfy:
        pipeline = Pipeline(comfy=comfy, store=store, workflows=WORKFLOWS, poll_interval=0.2)
        status = await pipeline.run(spec, job)
    assert status.phase is Phase.SUCCEEDED
    for index, image in enumerate(status.images):
        assert image.thumbnail_key == f"tests/thumb/{job.uid}/{index}.thumb.jpg"
        info = await store.stat(image.thumbnail_key)
        assert info is not None and info.content_type == "image/jpeg"
        assert info.size < image.bytes
        url, _ = await store.presign(image.thumbnail_key, 60)
        async with httpx.AsyncClient() as http:
            body = (await http.get(url)).content
        with Image.open(io.BytesIO(body)) as thumb:
            assert thumb.format == "JPEG"
            assert thumb.size == (342, 171)  # 1024x512 reduced 3x (partial edge blocks count): aspect kept
    # Written to status through the type: the CRD knows the field.
    assert "thumbnailKey" in status.images[0].wire()


async def test_an_unreadable_image_gets_no_thumbnail_and_no_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    await store.ensure_ready()
    bogus = tmp_path / "video.mp4"
    bogus.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    assert await store_thumbnail(store, bogus, "ns/job/uid/0.mp4") is None
    assert await store.stat("ns/job/uid/0.thumb.jpg") is None


@pytest.mark.parametrize(
    ("mode", "fmt", "thumb_mode"),
    [("RGBA", "WEBP", "RGBA"), ("LA", "WEBP", "RGBA"), ("P", "JPEG", "RGB"), ("L", "JPEG", "RGB"),
     ("RGB", "JPEG", "RGB")],
)
async def test_thumbnails_keep_transparency_in_webp_and_are_jpeg_otherwise(
    tmp_path: Path, mode: str, fmt: str, thumb_mode: str
) -> None:
    store = LocalStore(tmp_path / "store")
    await store.ensure_ready()
    source = tmp_path / "in.png"
    Image.new(mode, (800, 600)).save(source)
    key = await store_thumbnail(store, source, "ns/job/uid/0.png")
    assert key == f"ns/job/uid/0.thumb.{fmt.lower().replace('jpeg', 'jpg')}"
    info = await store.stat(key)
    assert info is not None and info.content_type == f"image/{fmt.lower()}"
    with Image.open(store.directory / key) as thumb:
        # 800 px / 3 (the smallest whole factor that leaves at most MAX_SIDE): never above it, never below half.
        assert thumb.format == fmt and thumb.size == (267, 200) and thumb.mode == thumb_mode
        assert MAX_SIDE // 2 <= max(thumb.size) <= MAX_SIDE


@pytest.mark.parametrize("side", [100, MAX_SIDE, MAX_SIDE + 1, 512, 768, 1024, 2048, 4097])
def test_the_reduced_frame_is_at_most_max_side_and_at_least_half_of_it(side: int) -> None:
    from comfykube.comfyui.media import reduced_frame

    frame = Image.new("RGB", (side, side // 2 or 1), (200, 100, 50))
    reduced = reduced_frame(frame, MAX_SIDE)
    longest = max(reduced.size)
    assert longest <= MAX_SIDE
    assert longest == side if side <= MAX_SIDE else longest > MAX_SIDE // 2
    assert reduced.getpixel((0, 0)) == (200, 100, 50) and reduced is not frame


def test_the_reduced_frame_is_antialiased() -> None:
    """A box reduce averages each block: a one-pixel checkerboard becomes flat grey, not aliased stripes."""
    from comfykube.comfyui.media import reduced_frame

    board = Image.new("L", (768, 768))
    board.putdata([255 * ((x + y) % 2) for y in range(768) for x in range(768)])
    reduced = reduced_frame(board, MAX_SIDE)
    assert reduced.size == (384, 384)
    values = set(reduced.convert("L").getdata())
    assert values <= {127, 128}, sorted(values)[:5]


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
    assert checked.preview.size == (334, 167) and checked.preview.mode == "RGBA"
    # Without the ask there is none (the check alone keeps nothing in memory).
    assert check_media(source, source.read_bytes()[:64], "out.png").preview is None
    rendered = render_thumbnail(source.with_name("missing.png"), tmp_path, "0", frame=checked.preview)
    assert rendered.path == tmp_path / "0.thumb.webp" and rendered.content_type == "image/webp"
    data = rendered.path.read_bytes()
    assert rendered.bytes == len(data) and rendered.sha256 == hashlib.sha256(data).hexdigest()
    with Image.open(rendered.path) as thumb:  # made from the frame: the file was not opened again
        assert thumb.format == "WEBP" and thumb.size == (334, 167) and thumb.mode == "RGBA"


def test_a_large_jpeg_thumbnail_decoded_in_draft_mode_keeps_aspect_and_colour(tmp_path: Path) -> None:
    from comfykube.storage.thumbnails import render_thumbnail

    source = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 1500), (10, 120, 200)).save(source, quality=90)
    rendered = render_thumbnail(source, tmp_path, "big")
    with Image.open(rendered.path) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= MAX_SIDE and abs(thumb.size[0] - 2 * thumb.size[1]) <= 2
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
    thumb_file = store.directory / f"tests/thumb/{job.uid}/0.thumb.jpg"

    async def failing_original(key: str, path: Path, **kwargs: Any) -> None:
        if key.endswith(".thumb.jpg"):
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
    assert await store.stat(f"tests/thumb/{job.uid}/0.thumb.jpg") is None
