"""Helpers for the gallery's tests: a gallery in-process on the Kubernetes stand-in and nanio.

`Gallery` serves `comfykube_web.app.build_app` on a loopback port, reading a FakeKube
in the same event loop (seeded with `add_job`) and images stored in nanio.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kmock
import yaml
from aiohttp import web
from kubernetes_asyncio import client
from PIL import Image

from comfykube.kube import KubeApi
from comfykube.storage import MinioStore
from comfykube.storage.thumbnails import store_thumbnail
from comfykube_web.app import PARTS, Parts, build_app
from comfykube_web.settings import WebSettings
from tests.harness import REPO

IMAGEJOBS = "comfykube.dev/v1alpha1/imagejobs"
NAMESPACES = kmock.resource("", "v1", "namespaces")
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
EVENTS = kmock.resource("", "v1", "events")


def load_crd() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "crds" / "imagejob.yaml").read_text(encoding="utf-8")))


@dataclass
class Gallery:
    url: str
    app: web.Application
    fake: Any
    store: MinioStore

    @property
    def parts(self) -> Parts:
        return self.app[PARTS]

    async def synced(self, count: int | None = None, within: float = 10) -> None:
        """Wait until the index holds `count` jobs (or the first list is in)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            index = self.parts.index
            if self.parts.feed.ready and (count is None or len(index) == count):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"index has {len(self.parts.index)} jobs, wanted {count}")


@contextlib.asynccontextmanager
async def serve_gallery(fake: Any, s3_settings: Any, **settings: Any) -> AsyncIterator[Gallery]:
    if fake.get_object(CRDS, None, "imagejobs.comfykube.dev") is None:
        fake.register_crd(load_crd())
    for namespace in settings.get("namespaces") or ["default"]:
        if fake.get_object(NAMESPACES, None, namespace) is None:
            fake.create_object(NAMESPACES, {"metadata": {"name": namespace}})
    api = KubeApi(client.ApiClient(configuration=client.Configuration(host=fake.base_url)))
    store = MinioStore(s3_settings)
    await store.ensure_ready()
    app = build_app(WebSettings(**settings), api, store, 3600)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Gallery(f"http://127.0.0.1:{port}", app, fake, store)
    finally:
        await runner.cleanup()
        await api.close()


async def stored_image(store: MinioStore, key: str, size: tuple[int, int] = (256, 256),
                       color: tuple[int, int, int] = (200, 80, 40), *, thumbnail: bool = True,
                       tmp: Path) -> dict[str, Any]:
    """A PNG really stored at `key` (and its thumbnail), as a status.images entry."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    data = buf.getvalue()
    path = tmp / (hashlib.sha256(key.encode()).hexdigest()[:12] + ".png")
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    await store.put_verified(key, path, size=len(data), sha256=digest, content_type="image/png")
    entry: dict[str, Any] = {"key": key, "bytes": len(data), "sha256": digest, "contentType": "image/png",
                             "width": size[0], "height": size[1]}
    if thumbnail:
        thumb = await store_thumbnail(store, path, key)
        assert thumb is not None
        entry["thumbnailKey"] = thumb
    return entry


def add_job(fake: Any, name: str, *, namespace: str = "default", status: dict[str, Any] | None = None,
            labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """Create an ImageJob in the stand-in (and write its status, as the operator would)."""
    body = {"prompt": "a red fox in the snow", "width": 64, "height": 64, "steps": 4}
    body.update(spec)
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    obj = fake.create_object(IMAGEJOBS, {"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob",
                                         "metadata": meta, "spec": body})
    if status is not None:
        obj = fake.patch_object(IMAGEJOBS, namespace, name, {"status": status}, subresource="status")
    return dict(obj)


def set_status(fake: Any, name: str, status: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return dict(fake.patch_object(IMAGEJOBS, namespace, name, {"status": status}, subresource="status"))


def succeeded(images: list[dict[str, Any]], seed: int = 42) -> dict[str, Any]:
    return {"phase": "Succeeded", "reason": "Succeeded", "message": f"{len(images)} image(s) stored",
            "seed": seed, "images": images, "imageCount": len(images), "backend": "http://comfyui:8188",
            "progress": {"value": 4, "max": 4}, "progressText": "4/4",
            "startTime": "2026-12-01T10:00:00Z", "completionTime": "2026-12-01T10:00:09Z"}


class WebProcess:
    """`comfykube web` in a subprocess, with the environment a deployment would give it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        from tests.harness import free_port

        self.port = free_port()
        self.health_port = free_port()
        self.env = dict(env, WEB_PORT=str(self.port), WEB_HEALTH_PORT=str(self.health_port), PYTHONUNBUFFERED="1")
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebProcess:
        from tests.harness import wait_until

        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "comfykube.cli", "web"], env=self.env, cwd=REPO,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_until(self.ready, timeout=60, what="comfykube web /readyz")
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"comfykube web exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
