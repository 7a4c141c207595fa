"""Finished jobs leave kopf's watch: labelled `comfykube.dev/finished=true`, finalizer released.

kopf processes every object it watches on every start (list) and every write (watch event):
with thousands of finished ImageJobs that was most of a restart (≈ 6 ms of CPU each). A
finished job needs nothing from kopf unless its deletion has work to do, which is only
`spec.output.deleteWithJob` (a finished prompt has nothing to cancel). So when a job
finishes, one merge patch labels it and drops our finalizer (kept, with the job watched, when
its deletion deletes something: `deleteWithJob`, or input images uploaded for it), and kopf's watch selects
`!comfykube.dev/finished` on the server: the job leaves the watch and is never listed by
kopf again. Its TTL and URL refresh stay with `maintenance` (which lists every job).

The label is a claim anyone may make: `maintenance` takes it off a job that is not
finished (it re-enters the watch and is run), and releases finished jobs an older operator
left with the finalizer.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from comfykube.controller.teardown import own_inputs
from comfykube.kube import KubeApi
from comfykube.names import FINALIZER, LABEL_FINISHED
from comfykube.types import TERMINAL_PHASES, Phase

log = logging.getLogger(__name__)

#: Tries when the object changed between reading and patching it (409).
ATTEMPTS = 3


def releasable(obj: dict[str, Any]) -> bool:
    """A finished job whose deletion needs no clean-up, not yet released."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp") or (meta.get("labels") or {}).get(LABEL_FINISHED) == "true":
        return False
    try:
        phase = Phase((obj.get("status") or {}).get("phase") or Phase.PENDING)
    except ValueError:
        return False
    spec = obj.get("spec") or {}
    output = spec.get("output") or {}
    # Deleting these has work to do (teardown.py), which needs the finalizer.
    return phase in TERMINAL_PHASES and not output.get("deleteWithJob") and own_inputs(meta, spec) is None


def wrongly_labelled(obj: dict[str, Any]) -> bool:
    """Labelled finished, but not finished: the operator would never run it."""
    meta = obj.get("metadata") or {}
    if (meta.get("labels") or {}).get(LABEL_FINISHED) != "true":
        return False
    try:
        phase = Phase((obj.get("status") or {}).get("phase") or Phase.PENDING)
    except ValueError:
        return True
    return phase not in TERMINAL_PHASES


def release_patch(obj: dict[str, Any]) -> dict[str, Any]:
    """The merge patch: the label, the finalizers less ours, guarded by the resourceVersion.

    A merge patch replaces the whole finalizer list, so the version check makes sure no
    other controller's finalizer added meanwhile is dropped.
    """
    meta = obj.get("metadata") or {}
    return {"metadata": {
        "labels": {LABEL_FINISHED: "true"},
        "finalizers": [f for f in meta.get("finalizers") or [] if f != FINALIZER],
        "resourceVersion": meta.get("resourceVersion"),
    }}


async def release(api: KubeApi, obj: dict[str, Any]) -> bool:
    """Label a finished job and drop our finalizer; False when it was not (gone, or kept).

    `obj` is the object as last seen (e.g. the answer to the terminal status write). Never
    raises: a job left unreleased only costs kopf's attention, and `maintenance` retries.
    """
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    for _ in range(ATTEMPTS):
        if not releasable(obj):
            return False
        try:
            await api.patch(namespace, name, release_patch(obj))
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status != 409:
                log.warning("[%s/%s] could not release the finished job: %s", namespace, name, exc.reason)
                return False
        except (TimeoutError, OSError) as exc:
            log.warning("[%s/%s] could not release the finished job: %s", namespace, name, exc)
            return False
        fresh = await _get(api, namespace, name)
        if fresh is None:
            return False
        obj = fresh
    return False


async def unlabel(api: KubeApi, obj: dict[str, Any]) -> None:
    """Take the finished label off a job that is not finished, so that kopf sees it again."""
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    log.warning("[%s/%s] labelled %s=true but not finished: taking the label off", namespace, name, LABEL_FINISHED)
    try:
        await api.patch(namespace, name, {"metadata": {"labels": {LABEL_FINISHED: None}}})
    except (ApiException, TimeoutError, OSError) as exc:
        log.warning("[%s/%s] could not take the label off: %s", namespace, name, exc)


async def _get(api: KubeApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await api.get(namespace, name)
    except (ApiException, TimeoutError, OSError):
        return None
