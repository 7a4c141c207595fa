"""Is this ComfyUI ready? Needs nothing but a URL (usable before any client exists).

Probes `/system_stats` (JSON, version, devices: the real readiness signal),
`/queue` (the scheduler answers) and `/` (the web server answers). Retries
with exponential backoff through the injected Clock so tests can compress time.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from comfykube.clock import REAL_CLOCK, Clock
from comfykube.comfyui.history import parse_queue
from comfykube.comfyui.models import Device, HealthReport
from comfykube.comfyui.transport import (
    json_body,
    make_http_client,
    normalize_base_url,
    request,
    status_text,
    unavailable,
)
from comfykube.errors import ComfyUIUnavailable

log = logging.getLogger(__name__)

#: Longest single backoff between attempts (clock seconds).
MAX_BACKOFF = 30.0


def _devices(stats: Any) -> tuple[Device, ...]:
    found = []
    for raw in stats.get("devices") or () if isinstance(stats, dict) else ():
        if isinstance(raw, dict):
            found.append(
                Device(
                    name=str(raw.get("name") or "?"),
                    type=str(raw.get("type") or "?"),
                    vram_total=raw.get("vram_total") if isinstance(raw.get("vram_total"), int) else None,
                    vram_free=raw.get("vram_free") if isinstance(raw.get("vram_free"), int) else None,
                )
            )
    return tuple(found)


async def probe(http: httpx.AsyncClient, base_url: str, http_timeout: float | None = None) -> HealthReport:
    """One attempt at the three endpoints; ComfyUIUnavailable names the first that failed and how."""
    url = f"{base_url}/system_stats"
    response = await request(http, "GET", url, http_timeout=http_timeout)
    if response.status_code != 200:
        raise unavailable("GET", url, f"answered {status_text(response)}")
    stats = json_body(response, "GET", url)
    if not isinstance(stats, dict) or not isinstance(stats.get("system"), dict):
        raise unavailable("GET", url, "answered JSON without a 'system' section (is this ComfyUI?)")
    version = stats["system"].get("comfyui_version")

    url = f"{base_url}/queue"
    response = await request(http, "GET", url, http_timeout=http_timeout)
    if response.status_code != 200:
        raise unavailable("GET", url, f"answered {status_text(response)}")
    queue = parse_queue(json_body(response, "GET", url))

    url = f"{base_url}/"
    response = await request(http, "GET", url, http_timeout=http_timeout)
    if response.status_code != 200:
        raise unavailable("GET", url, f"answered {status_text(response)}")

    return HealthReport(
        url=base_url,
        version=str(version) if version is not None else None,
        devices=_devices(stats),
        queue_running=len(queue.running),
        queue_pending=len(queue.pending),
    )


async def check_health(
    url: str,
    *,
    retries: int = 5,
    backoff: float = 0.5,
    http_timeout: float = 10.0,
    clock: Clock = REAL_CLOCK,
    http: httpx.AsyncClient | None = None,
) -> HealthReport:
    """Probe ComfyUI up to `retries + 1` times, sleeping `backoff * 2**n` (clock time) between.

    Raises ComfyUIUnavailable saying which endpoint failed how on the last attempt,
    and how many attempts were made.
    """
    base_url = normalize_base_url(url)
    own = http is None
    client = http if http is not None else make_http_client(http_timeout)
    last: ComfyUIUnavailable | None = None
    attempts = max(0, retries) + 1
    try:
        for attempt in range(attempts):
            try:
                return await probe(client, base_url, http_timeout)
            except ComfyUIUnavailable as exc:
                last = exc
                log.info("ComfyUI health attempt %d/%d failed: %s", attempt + 1, attempts, exc.message)
            if attempt + 1 < attempts:
                await clock.sleep(min(MAX_BACKOFF, backoff * 2**attempt))
    finally:
        if own:
            await client.aclose()
    assert last is not None
    noun = "attempt" if attempts == 1 else "attempts"
    # Keep the kind: a refused connection on the last attempt tells the pool the process is gone.
    raise type(last)(f"ComfyUI at {base_url} is not healthy after {attempts} {noun}: {last.message}")
