"""Input images end to end: a URL / an object / a file → checked → uploaded → LoadImage → output.

Each refusal (missing image, 404, HTML, too big, not decodable, a private address,
a redirect to one, an unknown fromJob) is shown to happen before anything reaches
ComfyUI: the stand-in records every upload and every submission, and both stay empty.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from comfykube.comfyui.client import ComfyClient
from comfykube.errors import InputImageFailed, InvalidSpec, PreflightFailed
from comfykube.inputs import InputLimits, StoreSource, UrlSource, prepare_image
from comfykube.inputs.addresses import IPAddress, forbidden_reason
from comfykube.inputs.fetch import fetch_url
from comfykube.pipeline import JobIdentity, Pipeline
from comfykube.settings import DEFAULT_WORKFLOWS_DIR
from comfykube.storage import LocalStore, MinioStore
from comfykube.types import OutputKind, parse_spec
from comfykube.workflows import WorkflowLibrary

TEST_WORKFLOWS = Path(__file__).parent / "data" / "workflows"
WORKFLOWS = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR, TEST_WORKFLOWS])
TRUSTED = InputLimits(allow_private=True)


def png_with_bad_pixels() -> bytes:
    """Every chunk whole (right CRCs), but the pixel data is not a zlib stream: only a decode finds it."""
    import struct
    import zlib

    good = png()
    ihdr = good[8:33]
    data = b"\x00not zlib at all" * 8
    idat = struct.pack(">I", len(data)) + b"IDAT" + data + struct.pack(">I", zlib.crc32(b"IDAT" + data))
    return good[:8] + ihdr + idat + good[-12:]


def png(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


class ImageServer:
    """An http server on loopback that serves pictures and the bad answers inputs get."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.redirect_to = ""
        #: `gated.png` is served once this returns True (polled); it answers 404 after 10 s.
        self.gate: Any = lambda: True
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append((name, request.headers.get("Host", "")))
        if name == "init.png":
            return web.Response(body=png(), content_type="image/png")
        if name == "photo.jpg":
            buf = io.BytesIO()
            Image.new("RGB", (80, 56), (10, 120, 200)).save(buf, format="JPEG")
            return web.Response(body=buf.getvalue(), content_type="image/jpeg")
        if name == "page.html":
            return web.Response(body=b"<!DOCTYPE html><html><body>login</body></html>", content_type="text/html")
        if name == "page-as-image.png":  # an HTML page that claims to be a picture
            return web.Response(body=b"<!DOCTYPE html><html><body>login</body></html>", content_type="image/png")
        if name == "cut.png":  # the magic bytes of a PNG, then garbage: fails only a full decode
            return web.Response(body=png()[:60] + b"\x00" * 200, content_type="image/png")
        if name == "badpixels.png":
            return web.Response(body=png_with_bad_pixels(), content_type="image/png")
        if name == "huge.png":
            return web.Response(body=png() + b"\x00" * (2 * 1024 * 1024), content_type="image/png")
        if name == "bomb.png":
            return web.Response(body=png(5000, 5000), content_type="image/png")
        if name == "gated.png":
            for _ in range(1000):
                if self.gate():
                    return web.Response(body=png(), content_type="image/png")
                if request.transport is None or request.transport.is_closing():
                    return web.Response(status=499)  # the client gave up (cancelled): stop waiting
                await asyncio.sleep(0.01)
            return web.Response(status=404, text="the gate never opened")
        if name == "stalling-page.png":  # a page claiming to be a picture, whose rest never comes
            resp = web.StreamResponse(headers={"Content-Type": "image/png", "Content-Length": "1000000"})
            await resp.prepare(request)
            await resp.write(b"<!DOCTYPE html><html><body>")
            for _ in range(1000):  # 10 s, or until the client hung up
                if request.transport is None or request.transport.is_closing():
                    break
                await asyncio.sleep(0.01)
            return resp
        if name == "redirect":
            raise web.HTTPFound(self.redirect_to)
        if name == "loop":
            raise web.HTTPFound("/loop")
        return web.Response(status=404, text="404: Not Found")


@pytest.fixture
async def images() -> AsyncIterator[ImageServer]:
    server = ImageServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def other_host() -> AsyncIterator[ImageServer]:
    """A second server on 127.0.0.2 (Linux routes all of 127/8 to loopback)."""
    server = ImageServer("127.0.0.2")
    await server.start()
    yield server
    await server.stop()


def new_job(name: str = "fox", namespace: str = "tests") -> JobIdentity:
    return JobIdentity(namespace=namespace, name=name, uid=str(uuid.uuid4()))


@pytest.fixture
async def store(s3_settings: Any) -> MinioStore:
    return MinioStore(s3_settings)


@pytest.fixture
async def pipeline(comfyui: Any, store: MinioStore) -> AsyncIterator[Pipeline]:
    async with ComfyClient(comfyui.url, timeout=10) as comfy:
        yield Pipeline(comfy=comfy, store=store, workflows=WORKFLOWS, poll_interval=0.2, input_limits=TRUSTED)


def img2img(**images: dict[str, Any]) -> Any:
    return parse_spec(
        {
            "prompt": "a red fox",
            "workflow": "io_img2img",
            "steps": 2,
            "seed": 5,
            "images": [{"name": name, **source} for name, source in images.items()],
        }
    )


def files(path: Path) -> list[Path]:
    return list(path.iterdir())


def nothing_reached(comfyui: Any) -> None:
    stats = comfyui.stats()
    assert stats["submissions"] == {} and stats["uploads"] == [], stats


# --- the address policy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("fc00::5", "private"),
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped IPv6 is the IPv4 address
        ("100.64.0.1", "not a public"),  # carrier-grade NAT
        ("0.0.0.0", "private"),  # "this network": Python counts it private
        ("224.0.0.1", "not a unicast"),
    ],
)
def test_private_loopback_link_local_and_metadata_addresses_are_refused(address: str, why: str) -> None:
    reason = forbidden_reason(ipaddress.ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


# --- fetching ------------------------------------------------------------------------------


async def test_a_loopback_url_is_refused_by_default_without_a_request(images: ImageServer, tmp_path: Path) -> None:
    with pytest.raises(InputImageFailed, match="loopback address") as info:
        await fetch_url(f"{images.url}/init.png", tmp_path / "x", max_bytes=1 << 20, allow_private=False)
    assert "INPUT_URL_ALLOW_PRIVATE" in info.value.message and not info.value.retryable
    assert images.requests == [] and files(tmp_path) == []


async def test_the_name_is_resolved_once_and_the_connection_pinned_to_the_checked_address(
    images: ImageServer, tmp_path: Path
) -> None:
    answers: list[str] = ["127.0.0.1", "127.0.0.2"]  # a rebinding resolver: the second answer is "private"
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address(answers.pop(0))]

    def only_127_0_0_2_is_private(address: IPAddress) -> str | None:
        return "a private address" if str(address) == "127.0.0.2" else None

    got = await fetch_url(
        f"http://images.test:{images.port}/init.png",
        tmp_path / "x",
        max_bytes=1 << 20,
        allow_private=False,
        resolve=rebinding,
        policy=only_127_0_0_2_is_private,
    )
    assert got.bytes == len(png()) and got.head.startswith(b"\x89PNG")
    assert asked == ["images.test"]  # once: no second lookup that could answer differently
    assert images.requests == [("init.png", f"images.test:{images.port}")]  # the name, sent to the checked address


async def test_a_redirect_to_a_private_address_is_refused(
    images: ImageServer, other_host: ImageServer, tmp_path: Path
) -> None:
    images.redirect_to = f"{other_host.url}/init.png"

    def only_127_0_0_2_is_private(address: IPAddress) -> str | None:
        return "a private address" if str(address) == "127.0.0.2" else None

    with pytest.raises(InputImageFailed, match=r"127\.0\.0\.2, a private address"):
        await fetch_url(
            f"{images.url}/redirect", tmp_path / "x", max_bytes=1 << 20, allow_private=False,
            policy=only_127_0_0_2_is_private,
        )
    assert [path for path, _ in images.requests] == ["redirect"] and other_host.requests == []


async def test_redirects_are_followed_when_allowed_and_bounded(
    images: ImageServer, other_host: ImageServer, tmp_path: Path
) -> None:
    images.redirect_to = f"{other_host.url}/init.png"
    got = await fetch_url(f"{images.url}/redirect", tmp_path / "a", max_bytes=1 << 20, allow_private=True)
    assert got.bytes == len(png()) and [p for p, _ in other_host.requests] == ["init.png"]
    with pytest.raises(InputImageFailed, match="redirects more than 3 times"):
        await fetch_url(f"{images.url}/loop", tmp_path / "b", max_bytes=1 << 20, allow_private=True,
                        max_redirects=3)
    assert [p for p, _ in images.requests].count("loop") == 4


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "file:///etc/passwd", "http://user:pw@example.com/a"])
async def test_only_plain_http_and_https_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(InputImageFailed):
        await fetch_url(url, tmp_path / "x", max_bytes=1 << 20, allow_private=True)


async def test_messages_never_show_the_query_string(images: ImageServer, tmp_path: Path) -> None:
    with pytest.raises(InputImageFailed) as info:
        await fetch_url(f"{images.url}/gone.png?X-Amz-Signature=secret", tmp_path / "x", max_bytes=1 << 20,
                        allow_private=True)
    assert "404" in info.value.message and "secret" not in info.value.message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gone.png", "404 Not Found"),
        ("page.html", "HTML page"),
        ("page-as-image.png", "starts like an HTML/XML page"),
        ("huge.png", "more than the 1048576 allowed"),
        ("cut.png", "has a bad CRC (damaged file)"),
        ("badpixels.png", "does not decode as PNG"),
        ("bomb.png", "more than the 16777216 allowed (INPUT_IMAGE_MAX_PIXELS)"),
    ],
)
async def test_bad_inputs_are_refused_and_leave_no_file(
    images: ImageServer, tmp_path: Path, name: str, expected: str
) -> None:
    limits = InputLimits(max_bytes=1 << 20, allow_private=True)
    with pytest.raises(InputImageFailed) as info:
        await prepare_image("init", UrlSource(f"{images.url}/{name}"), tmp_path, store=None, limits=limits)
    assert expected in info.value.message and "'init'" in info.value.message
    assert files(tmp_path) == []


async def test_a_page_that_is_no_picture_is_refused_at_its_first_bytes(images: ImageServer, tmp_path: Path) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(InputImageFailed) as info:
        await prepare_image("init", UrlSource(f"{images.url}/stalling-page.png"), tmp_path, store=None, limits=TRUSTED)
    assert asyncio.get_running_loop().time() - started < 5  # not the 10 s the rest would take
    assert "starts like an HTML/XML page" in info.value.message
    assert info.value.message.count("input image 'init'") == 1 and not info.value.retryable
    assert files(tmp_path) == []


async def test_an_object_in_the_store_is_an_input(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    await store.ensure_ready()
    source = tmp_path / "a.png"
    source.write_bytes(png(32, 24))
    import hashlib

    data = source.read_bytes()
    await store.put_verified("tests/a.png", source, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                             content_type="image/png")
    work = tmp_path / "work"
    work.mkdir()
    got = await prepare_image("init", StoreSource("tests/a.png"), work, store=store, limits=TRUSTED)
    assert (got.width, got.height, got.content_type, got.upload_name) == (32, 24, "image/png", "init.png")
    with pytest.raises(InputImageFailed, match="no such object"):
        await prepare_image("init", StoreSource("tests/none.png"), work, store=store, limits=TRUSTED)
    with pytest.raises(InputImageFailed, match="INPUT_IMAGE_MAX_BYTES"):
        await prepare_image("init", StoreSource("tests/a.png"), work, store=store, limits=InputLimits(max_bytes=20))


# --- through the pipeline: img2img against the ComfyUI stand-in, S3 in nanio ---------------------


async def test_img2img_from_a_url_uploads_under_a_per_job_name_and_the_output_follows_the_input(
    pipeline: Pipeline, comfyui: Any, images: ImageServer
) -> None:
    job = new_job()
    status = await pipeline.run(img2img(init={"url": f"{images.url}/photo.jpg"}), job)
    (stored,) = status.images
    assert (stored.kind, stored.width, stored.height) == (OutputKind.IMAGE, 80, 56)  # 80x56: the input's size
    name = f"comfykube/{job.uid}/init.jpg"
    assert comfyui.stats()["uploads"] == [name]
    (record,) = comfyui.stats()["prompts"]
    graph = comfyui.history[record["prompt_id"]]["prompt"][2]
    assert graph["10"]["inputs"]["image"] == name
    assert (comfyui.input_dir / name).read_bytes()[:3] == b"\xff\xd8\xff"


async def test_two_jobs_never_read_each_others_input(pipeline: Pipeline, comfyui: Any, images: ImageServer) -> None:
    first, second = new_job("a"), new_job("b")
    await pipeline.run(img2img(init={"url": f"{images.url}/init.png"}), first)
    await pipeline.run(img2img(init={"url": f"{images.url}/photo.jpg"}), second)
    assert comfyui.stats()["uploads"] == [f"comfykube/{first.uid}/init.png", f"comfykube/{second.uid}/init.jpg"]


async def test_the_name_comfyui_answers_is_the_one_used(pipeline: Pipeline, comfyui: Any, images: ImageServer) -> None:
    job = new_job()
    # Something else already sits under the job's name with other bytes: ComfyUI renames (capture 85).
    taken = comfyui.input_dir / "comfykube" / job.uid / "init.png"
    taken.parent.mkdir(parents=True)
    taken.write_bytes(png(16, 16, (1, 2, 3)))
    status = await pipeline.run(img2img(init={"url": f"{images.url}/init.png"}), job)
    assert comfyui.stats()["uploads"] == [f"comfykube/{job.uid}/init (1).png"]
    (record,) = comfyui.stats()["prompts"]
    assert comfyui.history[record["prompt_id"]]["prompt"][2]["10"]["inputs"]["image"].endswith("init (1).png")
    assert (status.images[0].width, status.images[0].height) == (64, 48)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"url": "/gone.png"}, "404 Not Found"),
        ({"url": "/page.html"}, "HTML page"),
        ({"url": "/huge.png"}, "INPUT_IMAGE_MAX_BYTES"),
        ({"url": "/cut.png"}, "damaged file"),
        ({"s3Key": "tests/none.png"}, "no such object"),
    ],
)
async def test_a_bad_input_fails_the_job_before_anything_reaches_comfyui(
    pipeline: Pipeline, comfyui: Any, images: ImageServer, source: dict[str, str], expected: str
) -> None:
    pipeline.input_limits = InputLimits(max_bytes=1 << 20, allow_private=True)
    if "url" in source:
        source = {"url": images.url + source["url"]}
    with pytest.raises(InputImageFailed, match=expected):
        await pipeline.run(img2img(init=source), new_job())
    nothing_reached(comfyui)


async def test_the_input_is_taken_in_while_comfyui_is_checked(
    pipeline: Pipeline, comfyui: Any, images: ImageServer
) -> None:
    # The picture is served only once ComfyUI answered the health check and the preflight:
    # taking it in after them (one after the other) would wait for a gate that never opens.
    images.gate = lambda: {"GET /system_stats", "GET /models/checkpoints"} <= set(comfyui.requests)
    status = await pipeline.run(img2img(init={"url": f"{images.url}/gated.png"}), new_job())
    assert status.images and len(comfyui.stats()["uploads"]) == 1
    requests = comfyui.requests
    # Every input was checked and uploaded before the one submission.
    assert requests.index("POST /upload/image") < requests.index("POST /prompt")


async def test_a_failed_preflight_stops_the_input_and_leaves_nothing_behind(
    comfyui: Any, store: MinioStore, images: ImageServer, tmp_path: Path
) -> None:
    images.gate = lambda: False  # the fetch is still waiting when the preflight fails
    async with ComfyClient(comfyui.url, timeout=10) as comfy:
        pipeline = Pipeline(comfy=comfy, store=store, workflows=WORKFLOWS, input_limits=TRUSTED, tmp_dir=tmp_path)
        spec = img2img(init={"url": f"{images.url}/gated.png"}).model_copy(update={"model": "no_such.safetensors"})
        with pytest.raises(PreflightFailed, match="no_such.safetensors"):
            await pipeline.run(spec, new_job())
    assert [name for name, _ in images.requests] == ["gated.png"]  # it had started
    assert files(tmp_path) == []  # the partial input and its directory are gone
    nothing_reached(comfyui)


async def test_a_cancelled_job_stops_taking_its_input_in_and_leaves_nothing_behind(
    comfyui: Any, store: MinioStore, images: ImageServer, tmp_path: Path
) -> None:
    images.gate = lambda: False
    async with ComfyClient(comfyui.url, timeout=10) as comfy:
        pipeline = Pipeline(comfy=comfy, store=store, workflows=WORKFLOWS, input_limits=TRUSTED, tmp_dir=tmp_path)
        run = asyncio.create_task(pipeline.run(img2img(init={"url": f"{images.url}/gated.png"}), new_job()))
        for _ in range(500):
            if images.requests and "GET /models/checkpoints" in comfyui.requests:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the preflight is over: the run waits for the input alone
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        leftover = [task for task in asyncio.all_tasks() if "_take_in" in repr(task.get_coro())]
        assert leftover == []
    assert files(tmp_path) == []
    nothing_reached(comfyui)


async def test_a_private_url_fails_the_job_by_default(pipeline: Pipeline, comfyui: Any, images: ImageServer) -> None:
    pipeline.input_limits = InputLimits()
    with pytest.raises(InputImageFailed, match="loopback address"):
        await pipeline.run(img2img(init={"url": f"{images.url}/init.png"}), new_job())
    nothing_reached(comfyui)
    assert images.requests == []


async def test_a_missing_image_is_invalid_before_anything_is_fetched(pipeline: Pipeline, comfyui: Any) -> None:
    with pytest.raises(InvalidSpec, match="needs the image 'init'"):
        await pipeline.run(parse_spec({"prompt": "x", "workflow": "io_img2img"}), new_job())
    nothing_reached(comfyui)


async def test_an_image_the_workflow_does_not_take_is_invalid(pipeline: Pipeline, comfyui: Any) -> None:
    spec = parse_spec({"prompt": "x", "images": [{"name": "init", "url": "https://example.com/a.png"}]})
    with pytest.raises(InvalidSpec, match="has no input image 'init'"):
        await pipeline.run(spec, new_job())
    nothing_reached(comfyui)


async def test_from_job_without_the_operator_and_s3_keys_of_other_namespaces_are_refused(
    pipeline: Pipeline, comfyui: Any
) -> None:
    with pytest.raises(InvalidSpec, match="fromJob: ImageJob 'fox' can only be read in a cluster"):
        await pipeline.run(img2img(init={"fromJob": {"name": "fox"}}), new_job())
    with pytest.raises(InvalidSpec, match="outside this namespace's objects"):
        await pipeline.run(img2img(init={"s3Key": "other/fox/uid/0.png"}), new_job(namespace="tests"))
    nothing_reached(comfyui)


async def test_a_stored_output_feeds_the_next_job(pipeline: Pipeline, comfyui: Any, images: ImageServer) -> None:
    first = await pipeline.run(img2img(init={"url": f"{images.url}/photo.jpg"}), new_job("first"))
    key = first.images[0].key
    second = await pipeline.run(
        img2img(init={"fromJob": {"name": "first"}}), new_job("second"), resolved_jobs={"init": key}
    )
    assert (second.images[0].width, second.images[0].height) == (80, 56)
    assert comfyui.stats()["uploads"][-1].endswith("/init.png")  # the stored PNG, not the first JPEG


async def test_a_missing_input_file_in_comfyui_gets_the_real_validation_error(
    pipeline: Pipeline, comfyui: Any
) -> None:
    """The stand-in answers a LoadImage of a file never uploaded like ComfyUI (capture 96)."""
    from comfykube.errors import PromptRejected

    graph = {
        "10": {"class_type": "LoadImage", "inputs": {"image": "comfykube/none/missing.png"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "x/missing"}},
    }
    with pytest.raises(PromptRejected, match="Invalid image file: comfykube/none/missing.png"):
        await pipeline.comfy.submit(graph, str(uuid.uuid4()))


# --- outputs of every kind --------------------------------------------------------------------


async def test_every_kind_of_output_is_checked_and_stored_with_its_type(
    pipeline: Pipeline, comfyui: Any, store: MinioStore
) -> None:
    spec = parse_spec({"prompt": "a fox", "workflow": "io_media", "width": 64, "height": 64, "batchSize": 2})
    job = new_job()
    status = await pipeline.run(spec, job)
    kinds = [(image.kind, image.content_type, image.key.rsplit(".", 1)[1]) for image in status.images]
    assert sorted(kinds) == sorted(
        [
            (OutputKind.IMAGE, "image/png", "png"),
            (OutputKind.IMAGE, "image/png", "png"),
            (OutputKind.ANIMATION, "image/webp", "webp"),
            (OutputKind.VIDEO, "video/mp4", "mp4"),
            (OutputKind.VIDEO, "video/webm", "webm"),
            (OutputKind.AUDIO, "audio/flac", "flac"),
        ]
    )
    assert status.image_count == 6 and "2 image" in (status.message or "") and "1 audio" in (status.message or "")
    # Previews (type: temp) are never stored.
    assert all("temp" not in (image.node or "") for image in status.images)
    assert {image.node for image in status.images} == {"9", "12", "13", "14", "17"}
    for image in status.images:
        info = await store.stat(image.key)
        assert info is not None and info.content_type == image.content_type and info.size == image.bytes


@pytest.mark.parametrize(
    ("workflow", "inputs", "size"),
    [
        ("img2img", {"denoise": 0.5}, (80, 56)),
        ("inpaint", {}, (80, 56)),
        ("upscale", {"scale": 2.0}, (160, 112)),
        # A 4x model from the server's list, then half of that: 2x.
        ("upscale_model", {"upscaleModel": "4x-UltraSharp.pth", "scale": 0.5}, (160, 112)),
    ],
)
async def test_the_shipped_image_workflows_run_from_a_url_input(
    pipeline: Pipeline, comfyui: Any, images: ImageServer, workflow: str, inputs: dict[str, Any],
    size: tuple[int, int],
) -> None:
    spec = parse_spec(
        {
            "prompt": "a red fox",
            "workflow": workflow,
            "inputs": inputs,
            "images": [{"name": "init", "url": f"{images.url}/photo.jpg"}],
            **({"steps": 2} if not workflow.startswith("upscale") else {}),
        }
    )
    job = new_job(workflow)
    status = await pipeline.run(spec, job)
    (stored,) = status.images
    assert (stored.width, stored.height) == size
    assert comfyui.stats()["uploads"] == [f"comfykube/{job.uid}/init.jpg"]


async def test_the_stand_in_upload_keeps_identical_bytes_and_renames_other_bytes(
    comfyui: Any, tmp_path: Path
) -> None:
    """Captures 83–85: same name and bytes → the same name; same name, other bytes → `init (1).png`."""
    first, other = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(png())
    other.write_bytes(png(colour=(1, 2, 3)))
    async with ComfyClient(comfyui.url) as comfy:
        names = [
            (await comfy.upload_image(path, filename="init.png", subfolder="comfykube/job")).load_name
            for path in (first, first, other)
        ]
    assert names == ["comfykube/job/init.png", "comfykube/job/init.png", "comfykube/job/init (1).png"]


async def test_an_upload_larger_than_one_block_arrives_whole_under_an_awkward_name(
    comfyui: Any, tmp_path: Path
) -> None:
    """The streamed multipart body (multipart.py): exact bytes past a block boundary, the name as sent."""
    from comfykube.comfyui.multipart import BLOCK

    path = tmp_path / "big.png"
    data = png() + bytes(range(256)) * (BLOCK // 256 + 7)  # more than one block, not a multiple of it
    path.write_bytes(data)
    async with ComfyClient(comfyui.url) as comfy:
        uploaded = await comfy.upload_image(path, filename="my init 'ä'.png", subfolder="comfykube/job",
                                            content_type="image/png")
    assert uploaded.load_name == "comfykube/job/my init 'ä'.png"
    assert (comfyui.input_dir / "comfykube" / "job" / "my init 'ä'.png").read_bytes() == data


async def test_a_file_that_changes_while_it_uploads_is_never_sent_cut_off(tmp_path: Path) -> None:
    from comfykube.comfyui.multipart import MultipartFile

    path = tmp_path / "a.png"
    path.write_bytes(png())
    form = MultipartFile(path, "image", filename="a.png", content_type="image/png", fields={"type": "input"})
    path.write_bytes(png()[:20])
    with pytest.raises(OSError, match="shrank"):
        [chunk async for chunk in form.chunks()]
    declared = int(form.headers()["Content-Length"])
    assert declared == len(form.head) + len(png()) + len(form.tail)
