"""One Kubernetes watch per server feeds the index; every browser reads the index.

The loop: list (in pages of `LIST_LIMIT`) → `JobIndex.replace_all` → watch from the
list's resourceVersion, applying every event → when the watch ends, watch on from the
last resourceVersion seen; when the API answers 410 Gone (too old), list again. So the
index is rebuilt from the cluster at start and after any gap, and deletions made while
nobody watched are noticed.

With several configured namespaces there is one list and one watch per namespace
(namespaced RBAC cannot watch across namespaces); with all namespaces, one of each.
Reads only: list and watch on ImageJobs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from comfykube.kube import KubeApi
from comfykube.types import API_GROUP, API_VERSION, PLURAL
from comfykube_web.index import JobIndex
from comfykube_web.jobs import JobView

log = logging.getLogger(__name__)

LIST_LIMIT = 500
WATCH_SECONDS = 300
RETRY_SECONDS = 2.0


class Feed:
    """Keeps a `JobIndex` in step with the ImageJobs of some namespaces (None: all)."""

    def __init__(self, kube: KubeApi, index: JobIndex, namespaces: list[str] | None) -> None:
        self.kube = kube
        self.index = index
        self.namespaces = namespaces
        self._synced: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        """True once every namespace (or the cluster) has been listed."""
        return len(self._synced) == len(self.namespaces or [""])

    def start(self) -> None:
        """Start one list-and-watch task per namespace (or one for all)."""
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]
        for namespace in scopes:
            self._tasks.append(asyncio.create_task(self._run(namespace), name=f"web-feed-{namespace or '*'}"))

    async def stop(self) -> None:
        """Cancel the watches."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _call_args(self, namespace: str | None) -> tuple[Any, tuple[Any, ...]]:
        if namespace:
            return self.kube.custom.list_namespaced_custom_object, (API_GROUP, API_VERSION, namespace, PLURAL)
        return self.kube.custom.list_cluster_custom_object, (API_GROUP, API_VERSION, PLURAL)

    async def list_once(self, namespace: str | None) -> str:
        """List every ImageJob (in pages), replace that namespace's part of the index; the resourceVersion."""
        func, args = self._call_args(namespace)
        items: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_LIMIT}
            if token:
                kwargs["_continue"] = token
            result = await func(*args, **kwargs)
            items.extend(item for item in result.get("items", []) if isinstance(item, dict))
            meta = result.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            token = meta.get("continue") or None
            if not token:
                break
        jobs = [JobView.from_obj(item) for item in items]
        if namespace:
            others = [job for job in self.index.jobs() if job.namespace != namespace]
            self.index.replace_all(others + jobs)
        else:
            self.index.replace_all(jobs)
        self._synced.add(namespace or "")
        log.info("listed %d ImageJobs in %s", len(jobs), namespace or "all namespaces")
        return version

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        """Apply one watch event to the index."""
        if kind == "BOOKMARK":
            return
        job = JobView.from_obj(obj)
        if kind == "DELETED":
            current = self.index.get(job.key)
            if current is None or current.uid == job.uid:
                self.index.remove(job.key)
        else:
            self.index.upsert(job)

    async def _run(self, namespace: str | None) -> None:
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self.list_once(namespace)
                version = await self._watch(namespace, version)
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    log.info("ImageJob watch in %s is too old (410); listing again", namespace or "all namespaces")
                else:
                    log.warning("ImageJob list/watch in %s failed: HTTP %s %s",
                                namespace or "all namespaces", exc.status, exc.reason)
                    await asyncio.sleep(RETRY_SECONDS)
                version = None
            except Exception as exc:  # the feed must outlive any API hiccup
                log.warning("ImageJob list/watch in %s failed: %s", namespace or "all namespaces", exc)
                version = None
                await asyncio.sleep(RETRY_SECONDS)

    async def _watch(self, namespace: str | None, version: str) -> str:
        """Watch from `version` until the stream ends; the last resourceVersion seen."""
        func, args = self._call_args(namespace)
        stream = watch.Watch()
        try:
            async for event in stream.stream(
                func, *args, resource_version=version, timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True
            ):
                obj = event.get("raw_object") or event.get("object")
                if isinstance(obj, dict):
                    self.apply(str(event.get("type")), obj)
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        finally:
            stream.stop()
            await stream.close()
        return version


__all__ = ["Feed"]
