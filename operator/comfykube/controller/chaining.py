"""`spec.images[].fromJob`: another ImageJob's stored output as this job's input.

The pipeline knows nothing about Kubernetes, so the operator resolves each
`fromJob` to an object key here, reading the other ImageJob's typed status, and
hands the keys to the pipeline. Only the same namespace is looked at (the
reference has no namespace field), so a job can never read another tenant's
results this way.
"""

from __future__ import annotations

from typing import Any, Protocol

from comfykube.errors import InputImageFailed, InvalidSpec, WaitingForJob
from comfykube.types import ImageJobSpec, ImageJobStatus, OutputKind, Phase

#: Longest part of the source's failure message repeated in this job's message.
MAX_SOURCE_MESSAGE = 300


class ReadsImageJobs(Protocol):
    """What this module needs of the Kubernetes API client (`KubeApi.get`)."""

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ImageJob, or None when there is none."""
        ...


async def resolve_from_jobs(
    api: ReadsImageJobs, namespace: str, spec: ImageJobSpec, *, age: float, missing_grace: float
) -> dict[str, str]:
    """Image name → the object key of the referenced output, for every `fromJob` image.

    `age` is how long this job exists (seconds since its creation) and `missing_grace`
    how long a job it names may not exist yet: `kubectl apply -f` of a chain may create
    the second job first, so a missing job is waited for (`WaitingForJob`) until then,
    and refused (`InvalidSpec`) after. A job that runs or waits is waited for; one that
    failed or was cancelled fails this one (`InputImageFailed`, its failure named); an
    index it did not store is `InvalidSpec`; an output that is not a picture is refused.
    """
    keys: dict[str, str] = {}
    for image in spec.images or ():
        ref = image.from_job
        if ref is None:
            continue
        where = f"spec.images[{image.name}].fromJob"
        body = await api.get(namespace, ref.name)
        if body is None:
            if age < missing_grace:
                raise WaitingForJob(
                    f"{where}: waiting for ImageJob {ref.name!r} to be created in namespace {namespace!r} "
                    f"(up to {missing_grace:.0f} s after this job's creation, FROM_JOB_WAIT_SECONDS)"
                )
            raise InvalidSpec(
                f"{where}: there is no ImageJob {ref.name!r} in namespace {namespace!r} "
                f"(waited {missing_grace:.0f} s after this job's creation, FROM_JOB_WAIT_SECONDS)"
            )
        # Status is data: a field that does not validate is dropped, never trusted.
        status = ImageJobStatus.from_wire(body.get("status"))
        if status.phase in (Phase.FAILED, Phase.CANCELLED):
            cause = status.reason or status.phase.value
            if status.message:
                text = status.message
                cause += f": {text if len(text) <= MAX_SOURCE_MESSAGE else text[:MAX_SOURCE_MESSAGE] + '…'}"
            raise InputImageFailed(
                f"{where}: ImageJob {ref.name!r} ended {status.phase.value} ({cause}); it has no output to use"
            )
        if status.phase is not Phase.SUCCEEDED:
            raise WaitingForJob(f"{where}: waiting for ImageJob {ref.name!r} to succeed (it is {status.phase.value})")
        if ref.index >= len(status.images):
            raise InvalidSpec(
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
