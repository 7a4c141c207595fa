"""fromJob resolution: the other ImageJob's typed status decides, in the same namespace only."""

from __future__ import annotations

from typing import Any

import pytest

from comfykube.controller.chaining import resolve_from_jobs
from comfykube.errors import InputImageFailed
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
    assert await resolve_from_jobs(api, "ns", spec(1)) == {"init": "ns/fox/u/1.webp"}
    assert api.asked == [("ns", "fox")]


@pytest.mark.parametrize(
    ("status", "expected", "retryable"),
    [
        (None, "there is no ImageJob 'fox' in namespace 'ns'", False),
        ({"phase": "Running"}, "waiting for ImageJob 'fox' to succeed (it is Running)", True),
        ({"phase": "Failed", "reason": "ExecutionFailed"}, "ended Failed (ExecutionFailed)", False),
        ({"phase": "Succeeded", "images": []}, "stored 0 output(s); index 0 is not one", False),
        ({"phase": "Succeeded", "images": [output("audio", "ns/fox/u/0.flac", "audio/flac")]},
         "is audio (audio/flac), not a picture", False),
        ({"phase": "Succeeded", "images": "not a list"}, "stored 0 output(s)", False),
    ],
)
async def test_what_cannot_be_used_is_refused_and_a_running_job_is_waited_for(
    status: dict[str, Any] | None, expected: str, retryable: bool
) -> None:
    api = Jobs(**({"fox": status} if status is not None else {}))
    with pytest.raises(InputImageFailed) as info:
        await resolve_from_jobs(api, "ns", spec())
    assert expected in info.value.message and info.value.retryable is retryable
    assert "spec.images[init].fromJob" in info.value.message
