"""`spec.images[].fromJob`: another ImageJob's stored output as this job's input.

The pipeline knows nothing about Kubernetes, so the operator resolves each
`fromJob` to an object key here, reading the other ImageJob's typed status, and
hands the keys to the pipeline. Only the same namespace is looked at (the
reference has no namespace field), so a job can never read another tenant's
results this way.
"""

from __future__ import annotations

from typing import Any, Protocol

from comfykube.errors import InputImageFailed
from comfykube.types import ImageJobSpec, ImageJobStatus, OutputKind, Phase


class ReadsImageJobs(Protocol):
    """What this module needs of the Kubernetes API client (`KubeApi.get`)."""

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ImageJob, or None when there is none."""
        ...


async def resolve_from_jobs(api: ReadsImageJobs, namespace: str, spec: ImageJobSpec) -> dict[str, str]:
    """Image name → the object key of the referenced output, for every `fromJob` image.

    Refuses (not retryable) a job that does not exist, failed, or has no such output,
    and an output that is not a picture; waits (retryable) while the other job runs.
    """
    keys: dict[str, str] = {}
    for image in spec.images or ():
        ref = image.from_job
        if ref is None:
            continue
        where = f"spec.images[{image.name}].fromJob"
        body = await api.get(namespace, ref.name)
        if body is None:
            raise InputImageFailed(f"{where}: there is no ImageJob {ref.name!r} in namespace {namespace!r}")
        # Status is data: a field that does not validate is dropped, never trusted.
        status = ImageJobStatus.from_wire(body.get("status"))
        if status.phase in (Phase.FAILED, Phase.CANCELLED):
            raise InputImageFailed(
                f"{where}: ImageJob {ref.name!r} ended {status.phase.value} ({status.reason}); it has no output to use"
            )
        if status.phase is not Phase.SUCCEEDED:
            raise InputImageFailed(
                f"{where}: waiting for ImageJob {ref.name!r} to succeed (it is {status.phase.value})", retryable=True
            )
        if ref.index >= len(status.images):
            raise InputImageFailed(
                f"{where}: ImageJob {ref.name!r} stored {len(status.images)} output(s); index {ref.index} is not one"
            )
        output = status.images[ref.index]
        if output.kind not in (OutputKind.IMAGE, OutputKind.ANIMATION):
            raise InputImageFailed(
                f"{where}: output {ref.index} of ImageJob {ref.name!r} is {output.kind.value} "
                f"({output.content_type}), not a picture"
            )
        keys[image.name] = output.key
    return keys
