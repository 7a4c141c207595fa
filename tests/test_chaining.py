"""fromJob resolution: the other ImageJob's typed status decides, in the same namespace only."""

from __future__ import annotations

from typing import Any

import pytest

from comfykube.controller.chaining import resolve_from_jobs
from comfykube.errors import InputImageFailed, InvalidSpec, JobError, WaitingForJob
from comfykube.types import parse_spec

SHA = "0" * 64


class Jobs:
    def __init__(self, **jobs: dict[str, Any]) -> None:
        self.jobs = jobs
        self.asked: list[tuple[str, str]] = []

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.asked.append((namespace, name))
        status = self.jobs.get(name)
        return None if status is None else {"metadata": {"name": name, "namespace": namespace}, "status": status}


def spec(index: int = 0) -> Any:
    return parse_spec(
        {"prompt": "x", "workflow": "upscale", "images": [{"name": "init", "fromJob": {"name": "fox", "index": index}}]}
    )


def output(kind: str, key: str, content_type: str) -> dict[str, Any]:
    return {"kind": kind, "key": key, "bytes": 10, "sha256": SHA, "contentType": content_type}


async def test_a_succeeded_jobs_output_resolves_to_its_key_in_the_same_namespace() -> None:
    api = Jobs(fox={"phase": "Succeeded", "images": [output("image", "ns/fox/u/0.png", "image/png"),
                                                     output("animation", "ns/fox/u/1.webp", "image/webp")]})
    assert await resolve_from_jobs(api, "ns", spec(1), age=0, missing_grace=60) == {"init": "ns/fox/u/1.webp"}
    assert api.asked == [("ns", "fox")]


@pytest.mark.parametrize(
    ("status", "age", "error", "expected"),
    [
        # `kubectl apply -f` of a chain may create the second job first: wait, then refuse.
        (None, 5, WaitingForJob, "waiting for ImageJob 'fox' to be created in namespace 'ns' (up to 60 s"),
        (None, 60, InvalidSpec, "there is no ImageJob 'fox' in namespace 'ns' (waited 60 s"),
        ({"phase": "Pending"}, 600, WaitingForJob, "waiting for ImageJob 'fox' to succeed (it is Pending)"),
        ({"phase": "Running"}, 600, WaitingForJob, "waiting for ImageJob 'fox' to succeed (it is Running)"),
        ({"phase": "Uploading"}, 0, WaitingForJob, "(it is Uploading)"),
        ({"phase": "Failed", "reason": "ExecutionFailed", "message": "KSampler: out of memory"}, 0,
         InputImageFailed, "ended Failed (ExecutionFailed: KSampler: out of memory); it has no output"),
        ({"phase": "Cancelled", "reason": "Cancelled"}, 0, InputImageFailed, "ended Cancelled (Cancelled)"),
        ({"phase": "Succeeded", "images": []}, 0, InvalidSpec, "stored 0 output(s); index 0 is not one"),
        ({"phase": "Succeeded", "images": [output("audio", "ns/fox/u/0.flac", "audio/flac")]}, 0,
         InputImageFailed, "is audio (audio/flac), not a picture"),
        ({"phase": "Succeeded", "images": "not a list"}, 0, InvalidSpec, "stored 0 output(s)"),
    ],
)
async def test_what_cannot_be_used_is_refused_and_what_may_come_is_waited_for(
    status: dict[str, Any] | None, age: float, error: type[JobError], expected: str
) -> None:
    api = Jobs(**({"fox": status} if status is not None else {}))
    with pytest.raises(JobError) as info:
        await resolve_from_jobs(api, "ns", spec(), age=age, missing_grace=60)
    assert type(info.value) is error, info.value
    assert expected in info.value.message
    assert info.value.retryable is (error is WaitingForJob)
    assert "spec.images[init].fromJob" in info.value.message


async def test_a_long_failure_message_of_the_source_is_shortened() -> None:
    api = Jobs(fox={"phase": "Failed", "reason": "ExecutionFailed", "message": "x" * 5000})
    with pytest.raises(InputImageFailed) as info:
        await resolve_from_jobs(api, "ns", spec(), age=0, missing_grace=60)
    assert len(info.value.message) < 500 and "x…)" in info.value.message
