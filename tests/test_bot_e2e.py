"""End to end: fake Discord → `comfykube bot` process → ImageJob → `comfykube operator` process → ComfyUI
stand-in → nanio → the result message, whose attachment has the sha256 of the stored object; and
`/imagine image:` (issue #13): the uploaded picture stored, rendered by img2img, deleted with its job.

Every piece is a real process or a real socket: the bot and the operator are started with the CLI and
configured only through their environment, as the Helm chart does.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import REPO, OperatorProcess, free_port, kubectl_json, operator_env
from tests.standins.discord import FakeDiscord
from tests.test_bot_support import wait_for

NAMESPACE_PREFIX = "bot-e2e"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def stack_env(kube_api: Any, comfyui_process: Any, s3_server: Any, s3_bucket: str) -> dict[str, str]:
    """Cluster, ComfyUI and S3 settings shared by the operator and the bot."""
    comfyui_process.configure(exec_seconds=1.5)  # long enough for a progress edit to be seen
    return operator_env(kube_api.env, comfyui_url=comfyui_process.url, s3=s3_server, bucket=s3_bucket)


@pytest.fixture
def operator(stack_env: dict[str, str], namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(stack_env, namespace, tmp_path / "operator.log").start()
    yield proc
    proc.stop()


def start_bot(env: dict[str, str], health_port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`comfykube bot` as the chart runs it (configuration from the environment only)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "comfykube.cli", "bot", "--health-port", str(health_port), "--metrics-port", "0"],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def stop_bot(bot: subprocess.Popen[bytes]) -> None:
    """SIGTERM (what Kubernetes sends), SIGKILL if it does not exit."""
    if bot.poll() is None:
        os.killpg(bot.pid, signal.SIGTERM)
        try:
            bot.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(bot.pid, signal.SIGKILL)
            bot.wait(timeout=5)


async def test_imagine_end_to_end_through_the_operator(
    stack_env: dict[str, str], operator: OperatorProcess, namespace: str, kube_api: Any, tmp_path: Path
) -> None:
    async with FakeDiscord() as fake:
        health_port = free_port()
        env = {
            **stack_env,
            **fake.env(),
            "BOT_NAMESPACE": namespace,
            "BOT_EDIT_INTERVAL_SECONDS": "0.3",
            "BOT_COOLDOWN_SECONDS": "0",
            "BOT_LISTEN_HOST": "127.0.0.1",
            "LOG_LEVEL": "INFO",
        }
        log_path = tmp_path / "bot.log"
        bot = start_bot(env, health_port, log_path)
        try:
            async with httpx.AsyncClient() as http:
                async def ready() -> bool:
                    if bot.poll() is not None:
                        raise AssertionError(f"bot exited: {log_path.read_text()[-3000:]}")
                    try:
                        return (await http.get(f"http://127.0.0.1:{health_port}/readyz", timeout=1)).status_code == 200
                    except httpx.HTTPError:
                        return False

                deadline = time.monotonic() + 60
                while not await ready():
                    assert time.monotonic() < deadline, f"bot never ready: {log_path.read_text()[-3000:]}"
                    await asyncio.sleep(0.1)

            handle = await fake.slash_command(
                "imagine", {"prompt": "a red fox in the snow --steps 3", "width": 64, "height": 64}
            )
            await handle.wait_response()
            await wait_for(lambda: len(handle.followups) == 1, 15, "the public job message")
            msg = handle.followups[0]
            await wait_for(lambda: msg.attachments, 90, f"the result message; bot log: {log_path}")

            name = f"ij-{handle.id}"
            job = kubectl_json(kube_api, "get", "imagejob", name, "-n", namespace)
            image = job["status"]["images"][0]
            attachment = msg.attachments[0]
            assert hashlib.sha256(attachment.data).hexdigest() == image["sha256"]
            async with httpx.AsyncClient() as http:
                stored = (await http.get(job["status"]["url"], timeout=10)).content
            assert hashlib.sha256(stored).hexdigest() == image["sha256"]
            assert job["metadata"]["labels"]["comfykube.dev/requester"] == str(fake.user_ids["alice"])
            assert len(msg.versions) >= 3, [v["content"] for v in msg.versions]  # waiting → progress → result
            assert "✅ **Done**" in msg.content and msg.embeds[0]["footer"]["text"] == f"{namespace}/{name} · Succeeded"
        finally:
            await asyncio.to_thread(stop_bot, bot)
        assert bot.returncode == 0, log_path.read_text()[-3000:]


def _jpeg(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buf, format="JPEG")
    return buf.getvalue()


async def test_imagine_with_an_attachment_renders_img2img_and_the_picture_goes_with_the_job(
    stack_env: dict[str, str], operator: OperatorProcess, namespace: str, kube_api: Any, comfyui_process: Any,
    s3_server: Any, s3_bucket: str, tmp_path: Path,
) -> None:
    from comfykube.storage import MinioStore

    store = MinioStore(s3_server.settings(s3_bucket))
    async with FakeDiscord() as fake:
        health_port = free_port()
        env = {**stack_env, **fake.env(), "BOT_NAMESPACE": namespace, "BOT_COOLDOWN_SECONDS": "0",
               "BOT_LISTEN_HOST": "127.0.0.1", "BOT_EDIT_INTERVAL_SECONDS": "0.3"}
        # The bot downloads from the fake's CDN on loopback because DISCORD_CDN_BASE names it, not
        # because private addresses are allowed.
        env.pop("INPUT_URL_ALLOW_PRIVATE", None)
        log_path = tmp_path / "bot.log"
        bot = start_bot(env, health_port, log_path)
        try:
            async with httpx.AsyncClient() as http:
                deadline = time.monotonic() + 60
                while True:
                    assert bot.poll() is None, log_path.read_text()[-3000:]
                    try:
                        if (await http.get(f"http://127.0.0.1:{health_port}/readyz", timeout=1)).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, f"bot never ready: {log_path.read_text()[-3000:]}"
                    await asyncio.sleep(0.1)

            picture = _jpeg(96, 64)
            handle = await fake.slash_command(
                "imagine", {"prompt": "the same scene in autumn --steps 3",
                            "image": ("scene.jpg", picture, "image/jpeg"), "strength": 0.5}
            )
            await handle.wait_response()
            await wait_for(lambda: len(handle.followups) == 1, 15, "the public job message")
            msg = handle.followups[0]
            await wait_for(lambda: msg.attachments, 90, f"the result message; bot log: {log_path}")

            name = f"ij-{handle.id}"
            key = f"{namespace}/inputs/{name}/init.jpg"
            job = kubectl_json(kube_api, "get", "imagejob", name, "-n", namespace)
            assert job["spec"]["workflow"] == "img2img" and job["spec"]["inputs"] == {"denoise": 0.5}
            assert job["spec"]["images"] == [{"name": "init", "s3Key": key}]
            status = job["status"]
            assert status["phase"] == "Succeeded", status
            (image,) = status["images"]
            assert (image["width"], image["height"]) == (96, 64)  # img2img keeps the picture's size
            assert hashlib.sha256(msg.attachments[0].data).hexdigest() == image["sha256"]
            # Rendered once, from the uploaded bytes (ComfyUI got them under the job's uid).
            stats = comfyui_process.stats()
            assert stats["submissions"] == {job["metadata"]["uid"]: 1}
            assert f"comfykube/{job['metadata']['uid']}/init.jpg" in stats["uploads"]
            info = await store.stat(key)
            assert info is not None and info.size == len(picture)

            result = kube_api.kubectl("delete", "imagejob", name, "-n", namespace, "--wait=true", "--timeout=30s")
            assert result.returncode == 0, result.stderr
            for _ in range(100):
                if await store.stat(key) is None:
                    break
                await asyncio.sleep(0.1)
            assert await store.stat(key) is None, "the uploaded picture outlived its job"
        finally:
            await asyncio.to_thread(stop_bot, bot)
