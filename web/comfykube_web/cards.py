"""What a grid card shows, as one dict: rendered by the template and sent as JSON to live pages.

The same dict feeds both, so a card drawn by the server and a card updated by
`gallery.js` cannot drift apart. Values are plain data; the template escapes them, the
script inserts them with `textContent`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from comfykube_web.index import JobIndex
from comfykube_web.jobs import JobView
from comfykube_web.links import Links


async def card(job: JobView, links: Links) -> dict[str, Any]:
    """The card of one job, with its thumbnail URL minted now."""
    status = job.status
    progress = status.progress
    # The first output with a preview (a job may store a video or a sound before its pictures).
    shown = [image for image in status.images if image.thumbnail_key or image.content_type.startswith("image/")]
    first = shown[0] if shown else None
    return {
        "key": job.key,
        "namespace": job.namespace,
        "name": job.name,
        "path": job.path,
        "prompt": job.short_prompt(),
        "workflow": job.workflow,
        "phase": job.phase.value,
        "terminal": job.phase.terminal,
        "reason": status.reason or "",
        "message": (status.message or "")[:300],
        "requester": job.requester.label,
        "requesterKey": job.requester.key,
        "created": job.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "createdTs": job.created.timestamp(),
        "progress": {"value": progress.value if progress else 0, "max": progress.max if progress else 0},
        "percent": job.percent,
        "queuePosition": status.queue_position,
        "images": len(status.images),
        "thumb": await links.thumbnail(first),
        "deleting": job.deleting,
    }


class CardCache:
    """Cards built once per job version and shared by every page and stream that shows it.

    A hundred browsers watching fifty running jobs then cost fifty cards per change, not
    five thousand. An entry is rebuilt when the job changed (another `JobView` object) or
    when its URL would no longer be the one `Links` hands out.
    """

    def __init__(self, links: Links, index: JobIndex) -> None:
        self.links = links
        self.index = index
        self._cards: dict[str, tuple[JobView, float, dict[str, Any], str]] = {}

    async def get(self, job: JobView) -> tuple[dict[str, Any], str]:
        """(card, its JSON) for the job."""
        now = time.monotonic()
        hit = self._cards.get(job.key)
        if hit is not None and hit[0] is job and now - hit[1] < self.links.reuse_seconds / 2:
            return hit[2], hit[3]
        built = await card(job, self.links)
        text = json.dumps(built, separators=(",", ":"))
        self._cards[job.key] = (job, now, built, text)
        if len(self._cards) > 2 * len(self.index) + 100:  # deleted jobs nobody streamed: drop them
            for key in [k for k in self._cards if self.index.get(k) is None]:
                del self._cards[key]
        return built, text

    def forget(self, key: str) -> None:
        """Drop a deleted job's card."""
        self._cards.pop(key, None)


#: An empty card: the `<template>` that gallery.js clones for jobs that appear while the page is open.
BLANK: dict[str, Any] = {
    "key": "", "namespace": "", "name": "", "path": "/", "prompt": "", "workflow": "", "phase": "Pending",
    "terminal": False, "reason": "", "message": "", "requester": "", "requesterKey": "", "created": "",
    "createdTs": 0, "progress": {"value": 0, "max": 0}, "percent": 0, "queuePosition": None, "images": 0,
    "thumb": None, "deleting": False,
}

__all__ = ["BLANK", "CardCache", "card"]
