"""A job's Kubernetes Events (read only) and the timings they tell.

Events are listed when a job page is served (`involvedObject.name` field selector, then
matched on the uid so a re-created job with the same name shows only its own). They
expire after an hour on most clusters; timings fall back to the status' start and
completion times then.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from comfykube.kube import KubeApi
from comfykube.types import KIND, Phase
from comfykube_web.jobs import JobView, parse_time

log = logging.getLogger(__name__)

#: Events shown on a job page at most (the newest).
MAX_EVENTS = 100


@dataclass(frozen=True)
class EventRow:
    """One Event as the job page shows it."""

    type: str
    reason: str
    message: str
    count: int
    at: dt.datetime | None
    #: The API's resourceVersion, to keep Events of the same second in the order they were made.
    order: int = 0

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> EventRow:
        """Decode an Event dict (core/v1 or events.k8s.io shapes both carry these fields)."""
        at = (
            parse_time(obj.get("lastTimestamp"))
            or parse_time(obj.get("eventTime"))
            or parse_time(obj.get("firstTimestamp"))
            or parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
        )
        try:
            count = int(obj.get("count") or 1)
        except (TypeError, ValueError):
            count = 1
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        return cls(
            order=int(version) if version.isdigit() else 0,
            type=str(obj.get("type") or ""),
            reason=str(obj.get("reason") or ""),
            message=str(obj.get("message") or "")[:2000],
            count=count,
            at=at,
        )


async def job_events(kube: KubeApi, job: JobView, limit_seconds: float) -> list[EventRow] | None:
    """The job's Events, oldest first; None when they could not be read."""
    selector = f"involvedObject.name={job.name},involvedObject.kind={KIND}"
    try:
        response = await asyncio.wait_for(
            kube.core.list_namespaced_event(job.namespace, field_selector=selector, _preload_content=False),
            limit_seconds,
        )
        try:
            body = await response.json()
        finally:
            response.release()
    except (TimeoutError, ApiException, OSError, ValueError) as exc:
        log.info("could not read the Events of %s: %s", job.key, exc)
        return None
    rows = []
    for item in body.get("items", []) if isinstance(body, dict) else []:
        if not isinstance(item, dict):
            continue
        involved = item.get("involvedObject") or {}
        if involved.get("uid") and job.uid and involved.get("uid") != job.uid:
            continue
        rows.append(EventRow.from_obj(item))
    epoch = dt.datetime.fromtimestamp(0, dt.UTC)
    rows.sort(key=lambda row: (row.at or epoch, row.order))
    return rows[-MAX_EVENTS:]


@dataclass(frozen=True)
class Timings:
    """Seconds spent waiting, rendering and storing (None: not known)."""

    queued: float | None
    rendering: float | None
    storing: float | None
    total: float | None


def timings(job: JobView, events: list[EventRow] | None) -> Timings:
    """From creation, the first Running and Uploading Events, and the completion time."""
    first: dict[str, dt.datetime] = {}
    for row in events or []:
        if row.at is not None and row.reason not in first:
            first[row.reason] = row.at
    created = job.created
    running = first.get(Phase.RUNNING.value)
    uploading = first.get(Phase.UPLOADING.value)
    done = parse_time(job.status.completion_time)
    if done is None and job.phase.terminal:
        done = first.get(job.phase.value)

    def span(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
        if a is None or b is None or b < a:
            return None
        return (b - a).total_seconds()

    return Timings(
        queued=span(created, running),
        rendering=span(running, uploading),
        storing=span(uploading, done),
        total=span(created, done),
    )


__all__ = ["EventRow", "Timings", "job_events", "timings"]
