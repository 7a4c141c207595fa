"""Shared setup for the bot's contract tests (no tests here).

`BotWorld` wires a real `ComfyBot` (discord.py 2.7.1) to the loopback stand-ins:
the fake Discord (REST + gateway), the Kubernetes API stand-in (in-process, served
over HTTP; the bot talks to it through `comfykube.kube.KubeApi`), the ComfyUI
stand-in (checkpoint list) and nanio (stored images). Tests play the operator
by patching `status` in the Kubernetes stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from comfykube.kube import KubeApi
from comfykube.names import ANN_SIGNATURE
from comfykube.settings import Settings
from comfykube.storage import MinioStore, object_key
from comfykube_bot.main import ComfyBot
from comfykube_bot.settings import BotSettings
from comfykube_bot.signing import Signer
from tests.standins.discord import FakeDiscord, make_png, point_discord_at
from tests.standins.kube import FakeKube
from tests.standins.kube_plugin import load_imagejob_crd

RESOURCE = "comfykube.dev/v1alpha1/imagejobs"
NAMESPACE = "default"


async def kube_api_for(url: str, workdir: Path) -> KubeApi:
    """A `KubeApi` for the stand-in at `url` (through a kubeconfig, like the bot in a cluster would)."""
    from tests.standins.kube import render_kubeconfig

    path = workdir / f"kubeconfig-{abs(hash(url))}.yaml"
    path.write_text(render_kubeconfig(url), encoding="utf-8")
    cfg = k8s_client.Configuration()
    await k8s_config.load_kube_config(config_file=str(path), client_configuration=cfg)
    return KubeApi(k8s_client.ApiClient(configuration=cfg))


class BotWorld:
    """Stand-ins plus helpers to start and stop bots against them."""

    def __init__(self, fake: FakeDiscord, kube: FakeKube, core: Settings, workdir: Path) -> None:
        self.fake = fake
        self.kube = kube
        self.core = core
        self.workdir = workdir
        self.store = MinioStore(core) if core.minio_endpoint else None
        self._apis: list[KubeApi] = []

    # ------------------------------------------------------------------ bots

    def settings(self, **overrides: Any) -> BotSettings:
        """Bot settings for the tests: fast edits, no cooldown unless asked."""
        values: dict[str, Any] = {
            "discord_token": self.fake.token,
            "bot_namespace": NAMESPACE,
            "bot_edit_interval_seconds": 0.2,
            "bot_cooldown_seconds": 0,
            "bot_checkpoint_refresh_seconds": 30,
            "bot_listen_host": "127.0.0.1",
        }
        values.update(overrides)
        return BotSettings(**values)

    async def make_bot(self, **overrides: Any) -> ComfyBot:
        """A bot (not started) with its own Kubernetes client."""
        api = await kube_api_for(self.kube.base_url, self.workdir)
        self._apis.append(api)
        return ComfyBot(self.settings(**overrides), self.core, kube=api, guild_ready_timeout=0.05)

    @contextlib.asynccontextmanager
    async def running(self, bot: ComfyBot | None = None, **overrides: Any) -> AsyncIterator[ComfyBot]:
        """Start a bot, wait until it is ready, its commands are synced and its watch runs; close it after."""
        bot = bot or await self.make_bot(**overrides)
        task = asyncio.create_task(bot.start(self.fake.token), name="bot-under-test")
        try:
            deadline = time.monotonic() + 15
            while not (bot.is_ready() and bot.watch_ready):
                if task.done():
                    task.result()
                    raise RuntimeError("bot stopped before it was ready")
                if time.monotonic() > deadline:
                    raise TimeoutError("bot not ready after 15 s")
                await asyncio.sleep(0.01)
            yield bot
        finally:
            await bot.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 5)

    async def aclose(self) -> None:
        """Close the Kubernetes clients made for bots."""
        for api in self._apis:
            await api.close()

    # ------------------------------------------------------------------ the operator's part

    def job(self, name: str) -> dict[str, Any] | None:
        """The ImageJob as stored (None when absent)."""
        return self.kube.get_object(RESOURCE, NAMESPACE, name)

    def jobs(self) -> list[dict[str, Any]]:
        """All ImageJobs in the namespace."""
        return self.kube.list_objects(RESOURCE, NAMESPACE)

    def patch_status(self, name: str, **status: Any) -> dict[str, Any]:
        """Write status as the operator would (merge patch on the status subresource)."""
        return self.kube.patch_object(RESOURCE, NAMESPACE, name, {"status": status}, subresource="status")

    def create_job(self, name: str, spec: dict[str, Any], *, signed: bool = False, **meta: Any) -> dict[str, Any]:
        """Create an ImageJob directly: as kubectl would, or (`signed`) as an earlier bot process did."""
        metadata = {"name": name, "namespace": NAMESPACE, **meta}
        if signed:
            labels = dict(metadata.get("labels") or {})
            labels.setdefault("app.kubernetes.io/managed-by", "comfykube-bot")
            annotations = dict(metadata.get("annotations") or {})
            annotations[ANN_SIGNATURE] = self.signer.sign(NAMESPACE, name, labels, annotations)
            metadata.update(labels=labels, annotations=annotations)
        body = {"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob", "metadata": metadata, "spec": spec}
        return self.kube.create_object(RESOURCE, body, NAMESPACE)

    @property
    def signer(self) -> Signer:
        """The signer the test bots use (derived from the fake Discord's token, as in production)."""
        return Signer.from_secrets(None, self.fake.token)

    async def store_image(self, job: dict[str, Any], png: bytes, index: int = 0) -> dict[str, Any]:
        """Put a real PNG into nanio under the job's key; returns the status.images entry for it."""
        assert self.store is not None
        meta = job["metadata"]
        key = object_key(meta["namespace"], meta["name"], meta["uid"], index, "png")
        path = self.workdir / f"{meta['name']}-{index}.png"
        path.write_bytes(png)
        digest = hashlib.sha256(png).hexdigest()
        await self.store.ensure_ready()
        await self.store.put_verified(key, path, size=len(png), sha256=digest, content_type="image/png", metadata={})
        url, expires = await self.store.presign(key, 3600)
        return {"key": key, "bytes": len(png), "sha256": digest, "contentType": "image/png",
                "width": 64, "height": 64, "url": url,
                "urlExpiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ") if expires else None}

    async def succeed(self, name: str, png: bytes | None = None, **extra: Any) -> tuple[dict[str, Any], str]:
        """Store an image and mark the job Succeeded; returns (image entry, sha256)."""
        job = self.job(name)
        assert job is not None, f"no ImageJob {name}"
        image = await self.store_image(job, png or make_png(64, 64))
        self.patch_status(
            name, phase="Succeeded", images=[image], imageCount=1, url=image["url"], seed=extra.pop("seed", 1234),
            startTime="2026-01-01T00:00:00Z", completionTime="2026-01-01T00:01:05Z", **extra,
        )
        return image, image["sha256"]


@contextlib.asynccontextmanager
async def bot_world(
    tmp_path: Path, core: Settings, *, fake: FakeDiscord | None = None
) -> AsyncIterator[BotWorld]:
    """Fake Discord + Kubernetes stand-in (with the ImageJob CRD) around one test."""
    fake = fake or FakeDiscord()
    kube = FakeKube()
    kube.register_crd(load_imagejob_crd())
    await fake.start()
    try:
        async with kube, kube.serve():
            with point_discord_at(fake):
                world = BotWorld(fake, kube, core, tmp_path)
                try:
                    yield world
                finally:
                    await world.aclose()
    finally:
        await fake.stop()


async def wait_for(predicate: Callable[[], Any], within: float = 5.0, what: str = "condition") -> Any:
    """Poll `predicate` (real time) until truthy; return its value."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


def ephemeral_text(handle: Any) -> str:
    """The text the user saw in the (ephemeral) reply to an interaction."""
    original = handle.original
    return original.content if original is not None else ""
