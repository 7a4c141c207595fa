"""A tiny kopf operator used only by tests/test_standin_kube.py to prove FakeKube serves kopf.

It uses the settings the real comfykube operator is expected to use: a comfykube finalizer,
annotation-based progress storage (so ``.status`` stays clean), standalone mode and short timeouts.
Run: ``kopf run --standalone -n default tests/standins/kopf_probe_operator.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

GROUP, VERSION, PLURAL = "comfykube.dev", "v1alpha1", "imagejobs"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Settings verified against FakeKube (see the note on the Kubernetes API stand-in)."""
    settings.persistence.finalizer = "comfykube.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="comfykube.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="comfykube.dev", key="last-handled-configuration"
    )
    settings.peering.standalone = True
    settings.watching.connect_timeout = 5
    settings.watching.server_timeout = 60
    settings.posting.level = logging.INFO


@kopf.on.create(GROUP, VERSION, PLURAL)
async def created(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> dict[str, str]:
    """Pretend to render: write a terminal status and post an event."""
    patch.status["phase"] = "Succeeded"
    patch.status["observedGeneration"] = body.metadata.get("generation")
    patch.status["imageCount"] = 1
    kopf.info(body, reason="Rendered", message="probe operator finished the job")
    logger.info("probe rendered %s", body.metadata.name)
    return {"probe": "done"}


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Cleanup hook: its presence makes kopf hold the finalizer until it ran."""
    logger.info("probe cleaned up %s", body.metadata.name)
