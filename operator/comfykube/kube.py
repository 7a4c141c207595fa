"""Async access to ImageJobs and Events through the Kubernetes API.

Shared by the operator (status, events, TTL deletes) and the bot (create,
watch, annotate). kubernetes_asyncio does the authentication (kubeconfig,
in-cluster service account, exec plugins); this module keeps the calls in one
place and always sends patches as merge patches: kubernetes_asyncio would send
a dict as a JSON patch, which a real API server refuses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from yarl import URL

from comfykube.types import API_GROUP, API_VERSION, KIND, PLURAL

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"

#: Who posts the Events (required beside eventTime): the pod's name in a cluster.
REPORTING_INSTANCE = (os.environ.get("HOSTNAME") or "comfykube")[:128]


def _skip_env_lookups(api_client: client.ApiClient) -> None:
    """No ~/.netrc and proxy-variable lookups per request when no proxy applies to the API server.

    kubernetes_asyncio's aiohttp session trusts the environment, so aiohttp reads ~/.netrc
    in one thread and the proxy variables in another on every request (two thread hops, a
    file read: a good part of the operator's CPU per request). The environment does not
    change while we run: look the proxy up once, and with none keep the session from looking
    again. With a proxy, nothing changes. (A ~/.netrc entry for the API server could not be
    used anyway: aiohttp refuses it beside the Authorization header the client sends.)
    """
    session = getattr(getattr(api_client, "rest_client", None), "pool_manager", None)
    if session is None or not getattr(session, "_trust_env", False):
        return
    try:
        get_env_proxy_for_url(URL(api_client.configuration.host or ""))
    except (LookupError, ValueError):
        session._trust_env = False  # the only switch aiohttp has for it, after construction
    # else: a proxy applies, and aiohttp keeps finding it itself


class KubeApi:
    """ImageJob CRUD, status patches and Events, on one shared API client."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        _skip_env_lookups(api_client)
        # Typed as Any: the generated client's hints omit the `_content_type` and
        # `_preload_content` keywords it does accept, and what they return.
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.core: Any = client.CoreV1Api(api_client)

    @classmethod
    async def connect(cls) -> KubeApi:
        """Log in from KUBECONFIG / ~/.kube/config, or as the pod's service account."""
        cfg = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            # Read KUBECONFIG now: kubernetes_asyncio's default is fixed when it is imported.
            await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg)
        return cls(client.ApiClient(configuration=cfg))

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.api_client.close()

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ImageJob, or None when it does not exist."""
        try:
            return await self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an ImageJob (apiVersion and kind are filled in)."""
        body = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, **body}
        return await self.custom.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, body)

    async def list(self, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        """ImageJobs in one namespace (or all), optionally filtered by labels."""
        kwargs: dict[str, Any] = {}
        if label_selector:
            kwargs["label_selector"] = label_selector
        if namespace:
            result = await self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, **kwargs
            )
        else:
            result = await self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL, **kwargs)
        return list(result.get("items", []))

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge `status` into the ImageJob's status subresource."""
        return await self.custom.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status}, _content_type=MERGE_PATCH
        )

    async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the ImageJob itself (labels, annotations)."""
        return await self.custom.patch_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name, patch, _content_type=MERGE_PATCH
        )

    async def delete(self, namespace: str, name: str) -> bool:
        """Delete the ImageJob; False when it was already gone."""
        try:
            await self.custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def watch(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event type, object) pairs, forever: re-lists and re-watches when a stream ends."""
        while True:
            stream = watch.Watch()
            kwargs: dict[str, Any] = {"timeout_seconds": timeout_seconds}
            if label_selector:
                kwargs["label_selector"] = label_selector
            if namespace:
                func = self.custom.list_namespaced_custom_object
                args: tuple[Any, ...] = (API_GROUP, API_VERSION, namespace, PLURAL)
            else:
                func = self.custom.list_cluster_custom_object
                args = (API_GROUP, API_VERSION, PLURAL)
            try:
                async for event in stream.stream(func, *args, **kwargs):
                    obj = event["object"]
                    if isinstance(obj, dict):
                        yield event["type"], obj
            except (TimeoutError, ApiException, OSError) as exc:
                log.info("watch on ImageJobs ended (%s); watching again", exc)
                await asyncio.sleep(1)
            finally:
                stream.stop()

    async def post_event(
        self, obj: dict[str, Any], *, type_: str, reason: str, message: str, component: str = "comfykube"
    ) -> None:
        """Record a Kubernetes Event on the object; never raises (events are best effort)."""
        meta = obj.get("metadata", {})
        # kubectl describe sorts Events by lastTimestamp, which has whole seconds, and keeps the
        # API's order (by name) among equal ones: a generated name shuffled the events of one
        # second. The name is client-go's recorder's, `<object>.<UnixNano in hex>`, so name order
        # is time order; eventTime keeps the microseconds for `kubectl events` and other readers.
        stamp = time.time_ns()
        when = datetime.fromtimestamp(stamp / 1e9, UTC)
        now = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        name = f"{str(meta.get('name', 'imagejob'))[:236]}.{stamp:x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "eventTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "action": reason[:128],
            "reportingComponent": component,
            "reportingInstance": REPORTING_INSTANCE,
        }
        try:
            # The answer is not needed: skip turning it into a V1Event model (a few ms per event).
            response = await self.core.create_namespaced_event(
                meta.get("namespace") or "default", body, _preload_content=False
            )
            try:
                if not 200 <= response.status <= 299:
                    log.info("could not post event %s on %s: HTTP %s", reason, meta.get("name"), response.status)
            finally:
                response.release()
        except (TimeoutError, ApiException, OSError) as exc:
            log.info("could not post event %s on %s: %s", reason, meta.get("name"), exc)
