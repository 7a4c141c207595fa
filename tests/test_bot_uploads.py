"""Issue #13: `/imagine image:` — what is refused before anything is created, and what is made.

A real bot (discord.py) against the fake Discord, whose signed CDN serves the attachment;
the Kubernetes stand-in; nanio for the stored picture. The job that renders end to end
through the operator is in test_bot_e2e.py.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfykube.names import LABEL_REQUESTER
from comfykube.settings import Settings
from comfykube.storage import MinioStore
from tests.standins.discord import make_png
from tests.test_bot_support import NAMESPACE, BotWorld, bot_world, ephemeral_text, wait_for


@pytest.fixture
def core(tmp_path: Path, s3_server: Any, s3_bucket: str, comfyui: Any) -> Settings:
    """comfykube settings: nanio for pictures, the ComfyUI stand-in for checkpoints, 64 KiB inputs at most."""
    return s3_server.settings(s3_bucket, comfyui_url=comfyui.url, output_dir=tmp_path / "out",
                              input_image_max_bytes=64 * 1024, input_image_max_pixels=256 * 256)


def jpeg(width: int = 96, height: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (180, 90, 20)).save(buf, format="JPEG")
    return buf.getvalue()


async def imagine(world: BotWorld, options: dict[str, Any]) -> tuple[Any, str]:
    """Run /imagine; wait for the final ephemeral answer."""
    handle = await world.fake.slash_command("imagine", options)
    await handle.wait_response()
    await wait_for(lambda: ephemeral_text(handle) and "Submitting" not in ephemeral_text(handle),
                   within=15, what="the reply")
    return handle, f"ij-{handle.id}"


async def stored(core: Settings, name: str) -> list[str]:
    """Which of the possible input keys of job `name` exist in the bucket."""
    store = MinioStore(core)
    keys = [f"{NAMESPACE}/inputs/{name}/init.{ext}" for ext in ("png", "jpg", "webp", "gif", "bmp")]
    return [key for key in keys if await store.stat(key) is not None]


async def test_an_attachment_becomes_an_img2img_job_reading_the_stored_picture(
    tmp_path: Path, core: Settings
) -> None:
    picture = jpeg()
    async with bot_world(tmp_path, core) as world:
        async with world.running(discord_cdn_base=world.fake.cdn_base):
            handle, name = await imagine(world, {"prompt": "a fox, watercolour --seed 7",
                                                 "image": ("fox.jpg", picture, "image/jpeg"), "strength": 0.35})
            assert "Queued as" in ephemeral_text(handle), ephemeral_text(handle)
            job = world.job(name)
            assert job is not None
            key = f"{NAMESPACE}/inputs/{name}/init.jpg"
            assert job["spec"]["workflow"] == "img2img"
            assert job["spec"]["images"] == [{"name": "init", "s3Key": key}]
            assert job["spec"]["inputs"] == {"denoise": 0.35}
            assert job["spec"]["seed"] == 7 and job["spec"].get("batchSize", 1) == 1
            # The very bytes the user uploaded, fetched once from the signed CDN URL.
            assert await stored(core, name) == [key]
            body = await MinioStore(core).stat(key)
            assert body is not None and body.size == len(picture)
            fetches = world.fake.attachment_fetches
            assert [status for _, status in fetches] == [200] and "/ephemeral-attachments/" in fetches[0][0]

            # Without strength: the workflow's default denoise.
            handle, name = await imagine(world, {"prompt": "a fox",
                                                 "image": ("fox.png", make_png(64, 64), "image/png")})
            job = world.job(name)
            assert job is not None, ephemeral_text(handle)
            assert job["spec"]["inputs"] == {"denoise": 0.6}
            assert job["spec"]["images"][0]["s3Key"].endswith("/init.png")


@pytest.mark.parametrize(
    ("attachment", "expected", "downloaded"),
    [
        (("huge.png", make_png(64, 64, pad_to=200 * 1024), "image/png"), "is 200 KiB; pictures may be at most 64 KiB",
         False),
        (("notes.txt", b"not a picture at all", "text/plain"), "is `text/plain`, not a picture", False),
        (("nothing", b"\x00" * 100, None), "is of no declared type, not a picture", False),
        # Declared a PNG; the bytes say otherwise: the operator's magic-byte check, after the download.
        (("fox.png", b"<!doctype html><html>" + b" " * 200, "image/png"), "is not a PNG, JPEG, WebP, GIF or BMP",
         True),
        # A real PNG, over the pixel cap read from its header.
        (("wide.png", make_png(512, 256), "image/png"), "more than the 65536 allowed (INPUT_IMAGE_MAX_PIXELS)",
         True),
    ],
)
async def test_what_is_not_a_picture_within_the_limits_is_refused_and_nothing_is_created(
    tmp_path: Path, core: Settings, attachment: tuple[Any, ...], expected: str, downloaded: bool
) -> None:
    async with bot_world(tmp_path, core) as world:
        async with world.running(discord_cdn_base=world.fake.cdn_base):
            handle, name = await imagine(world, {"prompt": "a fox", "image": attachment})
            text = ephemeral_text(handle)
            assert expected in text, text
            assert handle.original is not None and handle.original.ephemeral
            assert handle.followups == [] or all(m.ephemeral for m in handle.followups)  # no public job message
            assert world.jobs() == []
            assert await stored(core, name) == []
            assert bool(world.fake.attachment_fetches) is downloaded
            assert "http" not in text  # the signed CDN URL is never shown


async def test_without_an_object_store_or_with_strength_alone_the_option_is_refused_clearly(
    tmp_path: Path, core: Settings
) -> None:
    local = core.model_copy(update={"minio_endpoint": None})
    async with bot_world(tmp_path, local) as world:
        async with world.running(discord_cdn_base=world.fake.cdn_base):
            handle, _ = await imagine(world, {"prompt": "a fox", "image": ("fox.png", make_png(8, 8), "image/png")})
            assert "`image` needs an object store" in ephemeral_text(handle) and "MINIO_ENDPOINT" in ephemeral_text(
                handle)
            handle, _ = await imagine(world, {"prompt": "a fox", "strength": 0.5})
            assert "`strength` only works with an `image`" in ephemeral_text(handle)
            handle, _ = await imagine(world, {"prompt": "a fox", "width": 512,
                                              "image": ("fox.png", make_png(8, 8), "image/png")})
            assert "the picture sets the size: leave out `width`" in ephemeral_text(handle)
            assert world.jobs() == [] and world.fake.attachment_fetches == []


async def test_a_picture_stored_for_a_request_the_quota_refuses_is_deleted_again(
    tmp_path: Path, core: Settings
) -> None:
    async with bot_world(tmp_path, core) as world:
        alice = world.fake.user_ids["alice"]
        world.create_job("busy", {"prompt": "x"}, signed=True, labels={LABEL_REQUESTER: str(alice)})
        async with world.running(discord_cdn_base=world.fake.cdn_base, bot_max_active_jobs=1):
            handle, name = await imagine(world, {"prompt": "a fox", "image": ("fox.jpg", jpeg(), "image/jpeg")})
            assert "in progress (limit 1)" in ephemeral_text(handle), ephemeral_text(handle)
            assert [j["metadata"]["name"] for j in world.jobs()] == ["busy"]
            assert [status for _, status in world.fake.attachment_fetches] == [200]  # it was stored…
            # … and deleted when no job came of it (right after the refusal was sent).
            for _ in range(100):
                if not await stored(core, name):
                    break
                await asyncio.sleep(0.05)
            assert await stored(core, name) == []


async def test_the_fake_cdn_serves_uploads_only_at_their_signed_unexpired_url(tmp_path: Path, core: Settings) -> None:
    import httpx

    async with bot_world(tmp_path, core) as world:
        fake = world.fake
        async with world.running(discord_cdn_base=fake.cdn_base):
            handle, _ = await imagine(world, {"prompt": "a fox", "image": ("fox.png", make_png(16, 16), "image/png")})
        (upload,) = fake.uploads.values()
        async with httpx.AsyncClient() as http:
            assert (await http.get(upload.url)).content == upload.data
            assert (await http.get(upload.url.split("?")[0])).status_code == 404
            assert (await http.get(upload.url.replace("hm=", "hm=0"))).status_code == 404
            fake.advance(fake.attachment_url_lifetime + 60)
            assert (await http.get(upload.url)).status_code == 404
        assert handle is not None


def test_only_discords_cdn_or_the_configured_one_is_downloaded_from(core: Settings) -> None:
    from dataclasses import dataclass

    from comfykube.workflows import WorkflowLibrary
    from comfykube_bot.uploads import UploadRefused, Uploads

    @dataclass
    class Upload:
        url: str
        filename: str = "fox.png"
        content_type: str | None = "image/png"
        size: int = 1000

    uploads = Uploads(core, WorkflowLibrary.from_settings(core), cdn_base="http://127.0.0.1:5555/cdn")
    for url in ("https://cdn.discordapp.com/ephemeral-attachments/1/2/fox.png?ex=1&is=1&hm=1",
                "https://media.discordapp.net/attachments/1/2/fox.png",
                "http://127.0.0.1:5555/cdn/ephemeral-attachments/1/2/fox.png"):
        uploads.check_declared(Upload(url))
    for url in ("http://cdn.discordapp.com/x.png", "https://cdn.discordapp.com.evil.example/x.png",
                "https://evil.example/cdn.discordapp.com/x.png", "http://127.0.0.1:5556/cdn/x.png",
                "file:///etc/passwd"):
        with pytest.raises(UploadRefused) as info:
            uploads.check_declared(Upload(url))
        assert info.value.refusal.reason == "AttachmentHost", url
