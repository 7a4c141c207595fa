"""ComfyUI backends from a Kubernetes Service's EndpointSlices.

Scaling the ComfyUI Deployment adds or removes endpoints; the pool follows
without an operator restart. Only ready endpoints count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

SERVICE_LABEL = "kubernetes.io/service-name"


def backend_urls(slices: list[dict[str, Any]], *, default_port: int = 8188, scheme: str = "http") -> list[str]:
    """URLs of the ready endpoints in EndpointSlices (port named "http", else the first, else the default)."""
    urls: list[str] = []
    for item in slices:
        ports = item.get("ports") or []
        port = next((p.get("port") for p in ports if p.get("name") == "http"), None)
        if port is None and ports:
            port = ports[0].get("port")
        port = port or default_port
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                host = f"[{address}]" if ":" in address else address
                urls.append(f"{scheme}://{host}:{port}")
    return sorted(dict.fromkeys(urls))


def _publish(
    slices: dict[str, Any],
    current: list[str] | None,
    on_change: Callable[[list[str]], None],
    default_port: int,
    where: str,
) -> list[str]:
    urls = backend_urls(list(slices.values()), default_port=default_port)
    if urls != current:
        log.info("service %s has backends: %s", where, ", ".join(urls) or "none")
        on_change(urls)
    return urls


async def follow_service(
    api_client: client.ApiClient,
    namespace: str,
    service: str,
    on_change: Callable[[list[str]], None],
    *,
    default_port: int = 8188,
) -> None:
    """Forever: call `on_change(urls)` whenever the Service's ready endpoints change."""
    api = client.DiscoveryV1Api(api_client)
    selector = f"{SERVICE_LABEL}={service}"
    current: list[str] | None = None
    while True:
        try:
            listing = await api.list_namespaced_endpoint_slice(namespace, label_selector=selector)
            slices = {s.metadata.name: api_client.sanitize_for_serialization(s) for s in listing.items}

            current = _publish(slices, current, on_change, default_port, f"{namespace}/{service}")
            stream = watch.Watch()
            async for event in stream.stream(
                api.list_namespaced_endpoint_slice,
                namespace,
                label_selector=selector,
                resource_version=listing.metadata.resource_version,
                timeout_seconds=300,
            ):
                obj = api_client.sanitize_for_serialization(event["object"])
                name = str((obj.get("metadata") or {}).get("name") or "")
                if event["type"] == "DELETED":
                    slices.pop(name, None)
                else:
                    slices[name] = obj
                current = _publish(slices, current, on_change, default_port, f"{namespace}/{service}")
        except asyncio.CancelledError:
            raise
        except (TimeoutError, ApiException, OSError, ValueError) as exc:
            log.warning("watching EndpointSlices of %s/%s failed (%s); retrying", namespace, service, exc)
            await asyncio.sleep(2)
