"""Deleting a job deletes the input pictures uploaded for it (`<ns>/inputs/<name>/`), and only those."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from comfykube.controller.context import OperatorContext
from comfykube.controller.scheduler import Scheduler
from comfykube.controller.teardown import on_job_deleted
from comfykube.settings import DEFAULT_WORKFLOWS_DIR, Settings
from comfykube.storage import LocalStore, input_prefix
from comfykube.workflows import WorkflowLibrary
from tests.standins.discord import make_png

LOG = logging.getLogger("test")


async def put(store: LocalStore, key: str, tmp_path: Path) -> None:
    data = make_png(8, 8)
    path = tmp_path / "pic.png"
    path.write_bytes(data)
    await store.put_verified(key, path, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                             content_type="image/png")


def body(name: str, images: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}"},
            "spec": {"prompt": "x", "workflow": "img2img", "images": images}, "status": {"phase": "Succeeded"}}


async def test_a_deleted_job_takes_its_own_uploaded_inputs_and_nothing_else(tmp_path: Path) -> None:
    settings = Settings(comfyui_url="http://127.0.0.1:1", output_dir=tmp_path / "out")
    store = LocalStore(settings.output_dir)
    ctx = OperatorContext(
        settings=settings, api=None, store=store,  # type: ignore[arg-type]  # no Event is posted on success
        workflows=WorkflowLibrary([DEFAULT_WORKFLOWS_DIR]), scheduler=Scheduler(["http://127.0.0.1:1"], 1),
    )
    assert input_prefix("ns", "fox") == "ns/inputs/fox/"
    for key in ("ns/inputs/fox/init.png", "ns/inputs/fox-2/init.png", "ns/inputs/cat/init.png", "ns/shared/a.png"):
        await put(store, key, tmp_path)
    # Reads a shared object only: nothing under its own prefix is touched (there is none to own).
    await on_job_deleted(ctx, body("cat", [{"name": "init", "s3Key": "ns/shared/a.png"}]), LOG)
    assert await store.stat("ns/inputs/cat/init.png") is not None
    assert await store.stat("ns/shared/a.png") is not None
    await on_job_deleted(ctx, body("fox", [{"name": "init", "s3Key": "ns/inputs/fox/init.png"}]), LOG)
    assert await store.stat("ns/inputs/fox/init.png") is None
    assert await store.stat("ns/inputs/fox-2/init.png") is not None  # a prefix, not a string match
    assert await store.stat("ns/shared/a.png") is not None


def test_a_finished_job_with_uploaded_inputs_keeps_its_finalizer() -> None:
    """Releasing a finished job drops the finalizer; not when deleting it still has inputs to delete."""
    from comfykube.controller.release import releasable

    own = body("fox", [{"name": "init", "s3Key": "ns/inputs/fox/init.png"}])
    shared = body("cat", [{"name": "init", "s3Key": "ns/shared/a.png"}])
    assert not releasable(own)  # its deletion deletes ns/inputs/fox/: kopf must still see it
    assert releasable(shared)
    assert not releasable({**shared, "spec": {**shared["spec"], "output": {"deleteWithJob": True}}})
