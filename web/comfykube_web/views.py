"""The pages and the JSON API: grid, job page, and their data (read only).

Templates are Jinja2 with autoescaping on (HTML and attributes); no value reaches a
page unescaped, and no data is ever written into a script: scripts are static files
that read `data-*` attributes or fetch JSON.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web

from comfykube.kube import KubeApi
from comfykube.types import Phase
from comfykube_web.auth import USER
from comfykube_web.cards import BLANK, CardCache
from comfykube_web.events import job_events, timings
from comfykube_web.index import Filters, JobIndex, decode_cursor
from comfykube_web.jobs import JobView
from comfykube_web.links import Links
from comfykube_web.settings import WebSettings

#: Grid page links and filter menus show at most this many requesters/workflows/namespaces.
MAX_CHOICES = 200


def make_templates() -> jinja2.Environment:
    """The Jinja2 environment: package templates, autoescape everything, undefined is an error."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("comfykube_web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        enable_async=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s"


@dataclass
class Views:
    """Request handlers, sharing the index, links, the API client and the templates."""

    settings: WebSettings
    index: JobIndex
    links: Links
    kube: KubeApi
    templates: jinja2.Environment
    cards: CardCache

    def _render(self, name: str, request: web.Request, **context: Any) -> web.Response:
        started = time.perf_counter()
        html = self.templates.get_template(name).render(user=request.get(USER, ""), **context)
        response = web.Response(text=html, content_type="text/html", charset="utf-8")
        response.headers["Server-Timing"] = f"render;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    async def _page_data(self, request: web.Request) -> dict[str, Any]:
        filters = Filters.from_query(request.query)
        cursor = decode_cursor(request.query.get("older", ""))
        page = self.index.page(filters, limit=self.settings.page_size, older_than=cursor)
        cards = [(await self.cards.get(job))[0] for job in page.jobs]
        older = None
        if page.older:
            older = "/?" + urllib.parse.urlencode({**filters.query(), "older": page.older})
        return {
            "cards": cards,
            "older": older,
            "filters": filters,
            "first_page": cursor is None,
            "seq": self.index.seq,
        }

    async def grid(self, request: web.Request) -> web.Response:
        """GET /: the newest jobs (filters and `older` cursor in the query)."""
        started = time.perf_counter()
        data = await self._page_data(request)
        filters: Filters = data["filters"]
        choices = {k: v[:MAX_CHOICES] for k, v in self.index.choices().items()}
        stream = "/api/stream?" + urllib.parse.urlencode({**filters.query(), "since": data["seq"]})
        response = self._render(
            "grid.html",
            request,
            choices=choices,
            stream=stream,
            total=len(self.index),
            synced=self.index.synced,
            page_size=self.settings.page_size,
            blank=BLANK,
            **data,
        )
        response.headers["Server-Timing"] += f", total;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    async def jobs_json(self, request: web.Request) -> web.Response:
        """GET /api/jobs: the same page as JSON."""
        data = await self._page_data(request)
        return web.json_response(
            {"jobs": data["cards"], "older": data["older"], "seq": data["seq"], "total": len(self.index)}
        )

    def _job(self, request: web.Request) -> JobView:
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        job = self.index.get(key)
        if job is None:
            # Namespaces outside the configured ones are never in the index: a 404 like any unknown job.
            raise web.HTTPNotFound(text=f"no ImageJob {key} here\n")
        return job

    async def job_page(self, request: web.Request) -> web.Response:
        """GET /jobs/{namespace}/{name}: every image at full size, spec, timings, Events, copy as YAML."""
        job = self._job(request)
        events = await job_events(self.kube, job, self.settings.events_timeout)
        images = [
            {"image": image, "url": await self.links.url(image.key), "index": at}
            for at, image in enumerate(job.status.images)
        ]
        spec = job.spec.wire() if job.spec is not None else job.raw_spec
        return self._render(
            "job.html",
            request,
            job=job,
            card=(await self.cards.get(job))[0],
            images=images,
            spec=spec,
            spec_valid=job.spec is not None,
            events=events,
            timings=timings(job, events),
            seconds=_seconds,
            manifest=job.again_manifest(),
            failed=job.phase in (Phase.FAILED, Phase.CANCELLED),
            stream="/api/stream?" + urllib.parse.urlencode({"job": job.key, "since": self.index.seq}),
        )

    async def job_json(self, request: web.Request) -> web.Response:
        """GET /api/jobs/{namespace}/{name}: the card plus spec and status as typed models write them."""
        job = self._job(request)
        body = dict((await self.cards.get(job))[0])  # a copy: the cached card is shared
        body["spec"] = job.spec.wire() if job.spec is not None else None
        body["status"] = job.status.wire()
        body["imageUrls"] = [await self.links.url(image.key) for image in job.status.images]
        return web.json_response(body)


__all__ = ["Views", "make_templates"]
