"""FakeKube: an in-memory Kubernetes API server stand-in for comfykube's tests.

It subclasses kmock 0.8's ``KubernetesEmulator`` (pinned: ``kmock==0.8``) and replaces its request
handling with one that real clients accept. Every gap listed in
``/work/shared/notes/kubernetes-api-stand-in.md`` §5 is fixed here, because a real client failed
without it:

* ``/api/v1/namespaces[/NAME[/status|/finalize]]`` parse as the cluster-scoped ``namespaces``
  resource; ``default``, ``kube-system``, ``kube-public`` and ``kube-node-lease`` are seeded
  (``kopf run -n default`` waits for its namespace). Creating in a missing namespace gives 404.
* One global, monotonic ``resourceVersion`` is stamped on objects, lists and watch events. A watch
  with ``?resourceVersion=N`` replays the recorded events newer than N (410 Gone when N fell out of
  the bounded event log), so list-then-watch clients (kopf, kubectl) miss nothing.
* Create sets ``uid``, ``creationTimestamp``, ``generation=1``, the namespace from the URL, turns
  ``generateName`` into a name (kopf's ``kopf-event-*`` events) and answers **201** (the
  ``kubernetes``/``kubernetes_asyncio`` clients return ``None`` on a 200).
* PUT with optimistic concurrency (stale ``metadata.resourceVersion`` → 409); JSON patch
  (failed ``test`` → 422, which kopf treats as a conflict and retries); RFC 7386 merge patch
  (a stale ``resourceVersion`` in it → 409); strategic merge patch treated as a merge patch; server-side
  apply (``application/apply-patch+yaml``) as merge-or-create. Other patch types → 415; a dict body
  sent as a JSON patch → 400 (kubernetes_asyncio's default content type does that: pass
  ``_content_type='application/merge-patch+json'``). No-op writes bump nothing and emit no event.
* Status subresource: main-resource writes keep the stored ``.status``; ``/status`` writes keep
  everything but ``.status``; ``generation`` bumps only when the spec (everything outside metadata and
  status) changes. Identity metadata (uid, name, namespace, creationTimestamp, generation,
  deletionTimestamp) cannot be changed by clients.
* Label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``) and simple field
  selectors (dotted paths such as ``metadata.name``) on list, watch and deletecollection.
* Watch: ``watch=true/True/1/t``, ``timeoutSeconds``, a JSON content type, MODIFIED events that move
  an object in or out of a label selector become ADDED/DELETED as on a real server.
* Finalizers: DELETE sets ``deletionTimestamp`` while finalizers remain (no new finalizers may be
  added then); the write that empties them really deletes the object (one DELETED event).
* Discovery: ``v1`` groupVersion for the core group, subresource rows (``imagejobs/status``) with
  verbs get/patch/update and no shortNames; ``/version`` says v1.32 (no kubectl skew warning).
* POST/PUT/PATCH/apply of a CustomResourceDefinition registers its resources with printer columns
  and sets the ``NamesAccepted`` and ``Established`` conditions; deleting it removes them.
* kubectl: ``Accept: ...;as=Table`` gets a server-side Table built from ``additionalPrinterColumns``
  (priority-1 columns appear with ``-o wide``; ``date`` columns are rendered as ages; jsonPaths such as
  ``.status.phase``, ``.status.images[0].url``, ``.status.progress.value`` and
  ``.status.conditions[?(@.type=="Ready")].status``), also on watches (``kubectl get -w``).
  ``/openapi/v2`` and ``/openapi/v3`` are empty documents: apply/create need ``--validate=false``.
* kmock records every request for assertions and matches new requests against that history, which
  made a long-running stand-in slow down to 150-200 ms a request (note §10). Here the request history,
  each reaction's history, the error list, each object's version history and the watch event log
  are all bounded: about 1 ms a request, flat, over thousands of create/patch/delete requests.
* kubectl's typed clients POST protobuf (``kubectl create namespace|configmap|secret``): those three
  kinds are decoded (metadata basics and data); other protobuf bodies get 415.

Core resources served: v1 namespaces, events, configmaps, secrets, services, pods (stored only, no
controllers); events.k8s.io/v1 events; discovery.k8s.io/v1 endpointslices; coordination.k8s.io/v1
leases; apiextensions.k8s.io/v1 customresourcedefinitions.

Not emulated: openAPIV3Schema validation, defaulting, pruning, CEL rules, admission, RBAC,
managedFields and apply conflicts, pagination (``limit`` is ignored, no ``continue``), watch bookmarks,
ownerReferences garbage collection, persistence across restarts.

kmock's DSL still works in-process: a reaction such as
``fake['patch', kmock.resource('comfykube.dev/v1alpha1/imagejobs')] << 500`` answers instead of the
emulator (fault injection), and request views such as ``list(fake['post'])`` show the last
``history_limit`` requests. (kmock 0.8 disables a payload-less catcher reaction after its first match.)

Standalone::

    python -m tests.standins.kube --port 0 [--crd PATH ...] [--kubeconfig-out PATH]

prints ``READY http://127.0.0.1:PORT`` on stdout once it listens, writes a kubeconfig (server URL,
dummy token ``fake-token``) to ``--kubeconfig-out``, and exits cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import copy
import dataclasses
import datetime
import ipaddress
import json
import logging
import math
import random
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import apps, enums, rendering

logger = logging.getLogger("comfykube.standins.kube")

Obj = dict[str, Any]
ObjKey = tuple[str | None, str]  # (namespace, name) inside one resource

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")
SEEDED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
FAKE_TOKEN = "fake-token"
# The suffix alphabet of the real apiserver's generateName (no vowels: no accidental words).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_TRUTHY = {"1", "t", "T", "true", "TRUE", "True"}
_CRD_RESOURCE = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
_NS_RESOURCE = kmock.resource("", "v1", "namespaces")
_AGE_COLUMN = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
    "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
    "priority": 0,
}


def api_error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """A Kubernetes ``Status`` failure as real clients expect it (``reason`` is CamelCase)."""
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details or None)


def now_rfc3339() -> str:
    """Server time in the wire format of metav1.Time (seconds precision, UTC, ``Z``)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_age(timestamp: str | None, *, now: datetime.datetime | None = None) -> str | None:
    """Render a timestamp as kubectl's ``HumanDuration`` does (``5s``, ``3m20s``, ``2d4h``...)."""
    if not timestamp:
        return None
    try:
        then = datetime.datetime.fromisoformat(timestamp)
    except ValueError:
        return "<invalid>"
    if then.tzinfo is None:
        then = then.replace(tzinfo=datetime.UTC)
    seconds = ((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds()
    if seconds < -1:
        return "<invalid>"
    seconds = max(0, int(seconds))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    return f"{years}y{days % 365}d" if years < 8 else f"{years}y"


# --------------------------------------------------------------------------------------------------
# JSONPath (the subset CRD printer columns use), label and field selectors, merge patch.
# --------------------------------------------------------------------------------------------------

_JSONPATH_TOKEN = re.compile(
    r"""\.(?P<key>[^.\[\]]+)"""
    r"""|\[(?P<index>-?\d+)\]"""
    r"""|\[(?P<quote>['"])(?P<qkey>.*?)(?P=quote)\]"""
    r"""|\[\?\(@\.(?P<fpath>[\w.-]+)\s*==\s*(?P<fq>['"])(?P<fval>.*?)(?P=fq)\)\]"""
    r"""|(?P<star>\[\*\]|\.\*)"""
)


def jsonpath_find(obj: Any, path: str) -> list[Any]:
    """All values at a simple JSONPath: ``.a.b``, ``[0]``, ``['k']``, ``[*]``, ``[?(@.k=="v")]``.

    Braces (``{.status.phase}``) and a leading ``$`` are accepted, as kubectl accepts them.
    Missing keys give no result (the printer then shows ``<none>``), not an error.
    """
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1].strip()
    path = path.removeprefix("$")
    results: list[Any] = [obj]
    pos = 0
    while pos < len(path):
        match = _JSONPATH_TOKEN.match(path, pos)
        if match is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {path[pos:]!r}")
        pos = match.end()
        found: list[Any] = []
        for value in results:
            if match["key"] is not None or match["qkey"] is not None:
                key = match["key"] if match["key"] is not None else match["qkey"]
                if isinstance(value, Mapping) and key in value:
                    found.append(value[key])
            elif match["index"] is not None:
                index = int(match["index"])
                if isinstance(value, list) and -len(value) <= index < len(value):
                    found.append(value[index])
            elif match["fpath"] is not None:
                if isinstance(value, list):
                    for item in value:
                        got = jsonpath_find(item, "." + match["fpath"])
                        if got and str(got[0]) == match["fval"]:
                            found.append(item)
            elif match["star"] is not None:
                if isinstance(value, list):
                    found.extend(value)
                elif isinstance(value, Mapping):
                    found.extend(value.values())
        results = found
    return results


@dataclasses.dataclass(frozen=True)
class _Requirement:
    """One term of a label selector."""

    key: str
    op: str  # '=', '!=', 'in', 'notin', 'exists', '!'
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a label map satisfies this term (as apimachinery's labels.Selector does)."""
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        # '!=' and 'notin' also match objects that do not have the label at all.
        return labels.get(self.key) not in self.values


_SET_TERM = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*$")


def parse_label_selector(selector: str | None) -> list[_Requirement]:
    """Parse ``app=x,tier!=y,env in (a,b),!legacy`` into requirements; 400 when malformed."""
    if not selector or not selector.strip():
        return []
    # Split on commas outside parentheses: "env in (a,b)" holds commas of its own.
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    requirements = []
    for term in terms:
        if match := _SET_TERM.match(term):
            values = frozenset(v.strip() for v in match[3].split(",") if v.strip())
            requirements.append(_Requirement(match[1], match[2], values))
        elif match := _EQ_TERM.match(term):
            op = "!=" if match[2] == "!=" else "="
            requirements.append(_Requirement(match[1], op, frozenset({match[3]})))
        elif match := _EXISTS_TERM.match(term):
            requirements.append(_Requirement(match[2], "!" if match[1] else "exists"))
        else:
            raise api_error(400, "BadRequest", f"unable to parse requirement: {term.strip()!r}")
    return requirements


def parse_field_selector(selector: str | None) -> list[tuple[str, bool, str]]:
    """Parse ``metadata.name=x,spec.y!=z`` into (dotted path, equal?, value) triples."""
    if not selector or not selector.strip():
        return []
    result = []
    for term in selector.split(","):
        match = re.match(r"^\s*([\w.-]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not match:
            raise api_error(400, "BadRequest", f"invalid field selector: {term.strip()!r}")
        result.append((match[1], match[2] != "!=", match[3]))
    return result


def _field_value(obj: Obj, path: str) -> str:
    found = jsonpath_find(obj, "." + path)
    if not found or found[0] is None:
        return ""
    value = found[0]
    return json.dumps(value) if isinstance(value, bool) else str(value)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pb_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Split a protobuf message into (field number, varint or bytes) pairs."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while pos < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, varint()))
        elif wire == 2:
            size = varint()
            fields.append((number, buf[pos:pos + size]))
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return fields


def _pb_map(entries: list[bytes], *, binary: bool = False) -> dict[str, str]:
    result = {}
    for entry in entries:
        parts = dict(_pb_fields(entry))
        key, value = parts.get(1, b""), parts.get(2, b"")
        assert isinstance(key, bytes) and isinstance(value, bytes)
        result[key.decode()] = base64.b64encode(value).decode() if binary else value.decode()
    return result


def decode_protobuf_object(body: bytes) -> Obj:
    """Decode the few protobuf objects kubectl's typed clients create: Namespace, ConfigMap, Secret.

    Only what a test setup needs is kept (name, generateName, namespace, labels, annotations,
    finalizers, ConfigMap/Secret data and Secret type); anything else gets a 415.
    """
    unsupported = api_error(
        415, "UnsupportedMediaType", "FakeKube decodes protobuf only for Namespace/ConfigMap/Secret"
    )
    if not body.startswith(b"k8s\x00"):
        raise unsupported
    try:
        envelope = _pb_fields(body[4:])
        type_meta = dict(_pb_fields(next(v for n, v in envelope if n == 1 and isinstance(v, bytes))))
        raw = next(v for n, v in envelope if n == 2 and isinstance(v, bytes))
        kind = bytes(type_meta.get(2, b"")).decode()  # type: ignore[arg-type]
        api_version = bytes(type_meta.get(1, b"")).decode()  # type: ignore[arg-type]
        if kind not in ("Namespace", "ConfigMap", "Secret"):
            raise unsupported
        fields = _pb_fields(raw)
        meta_fields = _pb_fields(next((v for n, v in fields if n == 1 and isinstance(v, bytes)), b""))
    except (StopIteration, IndexError, ValueError) as exc:
        raise unsupported from exc

    def strings(items: list[tuple[int, int | bytes]], number: int) -> list[str]:
        return [v.decode() for n, v in items if n == number and isinstance(v, bytes)]

    def blobs(items: list[tuple[int, int | bytes]], number: int) -> list[bytes]:
        return [v for n, v in items if n == number and isinstance(v, bytes)]

    meta: Obj = {}
    for key, number in (("name", 1), ("generateName", 2), ("namespace", 3)):
        if values := strings(meta_fields, number):
            meta[key] = values[-1]
    for key, number in (("labels", 11), ("annotations", 12)):
        if entries := blobs(meta_fields, number):
            meta[key] = _pb_map(entries)
    if finalizers := strings(meta_fields, 14):
        meta["finalizers"] = finalizers
    obj: Obj = {"apiVersion": api_version or "v1", "kind": kind, "metadata": meta}
    if kind == "ConfigMap":
        if entries := blobs(fields, 2):
            obj["data"] = _pb_map(entries)
        if entries := blobs(fields, 3):
            obj["binaryData"] = _pb_map(entries, binary=True)
    elif kind == "Secret":
        if entries := blobs(fields, 2):
            obj["data"] = _pb_map(entries, binary=True)
        if entries := blobs(fields, 4):
            obj["stringData"] = _pb_map(entries)
        if values := strings(fields, 3):
            obj["type"] = values[-1]
    return obj


# --------------------------------------------------------------------------------------------------
# The emulator.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Path:
    """A Kubernetes API URL split into its parts (``group`` is ``''`` for the core API)."""

    group: str | None = None
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_api_path(path: str) -> _Path:
    """Parse an API path, getting ``/api/v1/namespaces/NAME`` right (kmock 0.8 takes it for a prefix)."""
    parts = [part for part in path.strip("/").split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return _Path()
    namespace = None
    # "namespaces/X/<plural>..." is a namespace prefix; "namespaces[/X[/status|finalize]]" is the
    # cluster-scoped namespaces resource itself.
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return _Path(group, version, plural, namespace, name, subresource)


@dataclasses.dataclass
class _Event:
    """One change, as recorded in the event log and fanned out to watchers."""

    rv: int
    resource: kmock.resource
    type: str
    obj: Obj
    old: Obj | None = None


@dataclasses.dataclass(eq=False)
class _Watcher:
    resource: kmock.resource
    queue: asyncio.Queue[_Event | None] = dataclasses.field(default_factory=asyncio.Queue)


@attrs.define(kw_only=True)
class FakeKube(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with the fixes real kopf, kubectl and Python clients need.

    Use it in-process (``async with FakeKube() as fake, fake.serve() as url: ...``) or as a
    subprocess (``python -m tests.standins.kube``). State is readable through kmock's
    ``fake.objects[resource, namespace, name]`` views and :meth:`get_object`; seed state with
    :meth:`create_object` / :meth:`register_crd` (they stamp resourceVersion/uid like the API does).
    """

    history_limit: int = 50  # requests (and per-reaction requests) kept for assertions
    object_history_limit: int = 20  # versions kept per object in kmock's object views
    event_log_limit: int = 5000  # watch events kept for resuming watches from a resourceVersion
    check_namespaces: bool = True  # creating in a missing namespace → 404, as a real server does
    server_version: tuple[int, int] = (1, 32)

    _rv: int = attrs.field(default=0, init=False)
    _served: int = attrs.field(default=0, init=False)
    _live: dict[kmock.resource, dict[ObjKey, Obj]] = attrs.field(factory=dict, init=False)
    _columns: dict[kmock.resource, list[dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _crd_owned: dict[str, list[kmock.resource]] = attrs.field(factory=dict, init=False)
    _log: collections.deque[_Event] = attrs.field(init=False)
    _log_floor: int = attrs.field(default=0, init=False)  # events with rv <= floor were dropped
    _watchers: set[_Watcher] = attrs.field(factory=set, init=False)
    _base_url: str | None = attrs.field(default=None, init=False)
    #: Requests served per "VERB resource[/subresource]" (e.g. "patch imagejobs/status"), unbounded
    #: but small: for benchmarks (``GET /_standin/requests``; ``?reset=1`` clears it).
    request_counts: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)

    def __attrs_post_init__(self) -> None:
        # Deliberately NOT calling kmock's post-init: it registers fallback reactions (the very
        # handlers with the gaps), and every registered reaction is re-matched against the request
        # history on each request. Our own router answers whatever user reactions do not.
        self._log = collections.deque(maxlen=self.event_log_limit)
        self._seed_core_resources()

    # ---------------------------------------------------------------- registry and seeding

    def register_resource(
        self,
        resource: str | kmock.resource,
        *,
        kind: str,
        namespaced: bool,
        singular: str | None = None,
        shortnames: Iterable[str] = (),
        categories: Iterable[str] = (),
        subresources: Iterable[str] = (),
        columns: list[dict[str, Any]] | None = None,
    ) -> kmock.resource:
        """Declare a resource for discovery and storage; ``columns`` are printer columns (no Name)."""
        res = resource if isinstance(resource, kmock.resource) else kmock.resource(resource)
        assert res.plural is not None and res.version is not None and res.group is not None
        self.resources[res] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            singular=singular or kind.lower(),
            verbs=set(ALL_VERBS),
            shortnames=set(shortnames),
            categories=set(categories),
            subresources=set(subresources),
        )
        self._columns[res] = [dict(col, priority=col.get("priority", 0)) for col in columns or [_AGE_COLUMN]]
        self._live.setdefault(res, {})
        return res

    def _seed_core_resources(self) -> None:
        reg = self.register_resource
        reg(
            _NS_RESOURCE,
            kind="Namespace",
            namespaced=False,
            shortnames={"ns"},
            subresources={"status", "finalize"},
            columns=[{"name": "Status", "type": "string", "jsonPath": ".status.phase"}, _AGE_COLUMN],
        )
        event_columns = [
            {"name": "Last Seen", "type": "date", "jsonPath": ".lastTimestamp"},
            {"name": "Type", "type": "string", "jsonPath": ".type"},
            {"name": "Reason", "type": "string", "jsonPath": ".reason"},
            {"name": "Object", "type": "string", "jsonPath": ".involvedObject.name"},
            {"name": "Message", "type": "string", "jsonPath": ".message"},
        ]
        reg("v1/events", kind="Event", namespaced=True, shortnames={"ev"}, columns=event_columns)
        reg("events.k8s.io/v1/events", kind="Event", namespaced=True, shortnames={"ev"})
        reg("v1/configmaps", kind="ConfigMap", namespaced=True, shortnames={"cm"})
        reg("v1/secrets", kind="Secret", namespaced=True)
        reg("v1/services", kind="Service", namespaced=True, shortnames={"svc"}, subresources={"status"})
        reg("v1/pods", kind="Pod", namespaced=True, shortnames={"po"}, subresources={"status"})
        reg(
            "discovery.k8s.io/v1/endpointslices",
            kind="EndpointSlice",
            namespaced=True,
            columns=[{"name": "AddressType", "type": "string", "jsonPath": ".addressType"}, _AGE_COLUMN],
        )
        reg(
            "coordination.k8s.io/v1/leases",
            kind="Lease",
            namespaced=True,
            columns=[{"name": "Holder", "type": "string", "jsonPath": ".spec.holderIdentity"}, _AGE_COLUMN],
        )
        reg(
            _CRD_RESOURCE,
            kind="CustomResourceDefinition",
            namespaced=False,
            shortnames={"crd", "crds"},
            subresources={"status"},
            columns=[{"name": "Created At", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
        )
        for name in SEEDED_NAMESPACES:
            self.create_object(_NS_RESOURCE, {"metadata": {"name": name}})

    def register_crd(self, crd: Mapping[str, Any]) -> Obj:
        """Create (or replace) a CustomResourceDefinition as ``kubectl apply`` would; returns it."""
        name = crd.get("metadata", {}).get("name")
        if self.get_object(_CRD_RESOURCE, None, name) is None:
            return self.create_object(_CRD_RESOURCE, crd)
        return self._apply_patch(_CRD_RESOURCE, None, name, dict(crd), subresource=None)[1]

    def _install_crd(self, crd: Obj) -> None:
        """Register the resources a CRD declares and mark it Established (done by a controller)."""
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        group, plural = spec.get("group"), names.get("plural")
        if not group or not plural or not names.get("kind"):
            raise api_error(422, "Invalid", "CustomResourceDefinition needs spec.group, names.plural, names.kind")
        self._uninstall_crd(crd["metadata"]["name"], delete_objects=False)
        owned = []
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            columns = [
                {key: col[key] for key in ("name", "type", "jsonPath", "format", "description", "priority")
                 if key in col}
                for col in version.get("additionalPrinterColumns") or []
            ]
            res = self.register_resource(
                kmock.resource(group, version["name"], plural),
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                shortnames=names.get("shortNames") or (),
                categories=names.get("categories") or (),
                subresources=[key for key in (version.get("subresources") or {}) if key == "status"],
                columns=columns or None,
            )
            owned.append(res)
        self._crd_owned[crd["metadata"]["name"]] = owned
        # Keep the transition times of a re-applied CRD, so a no-op apply stays a no-op.
        stamp = now_rfc3339()
        known = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions", [])}

        def since(kind: str) -> str:
            return str(known.get(kind, {}).get("lastTransitionTime", stamp))

        crd["status"] = {
            "acceptedNames": dict(names),
            "storedVersions": [v["name"] for v in spec.get("versions", []) if v.get("storage")],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted")},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": since("Established")},
            ],
        }

    def _uninstall_crd(self, name: str, *, delete_objects: bool) -> None:
        for res in self._crd_owned.pop(name, []):
            if delete_objects:
                for (namespace, obj_name) in list(self._live.get(res, {})):
                    self._remove(res, namespace, obj_name)
                self._live.pop(res, None)
            self.resources.pop(res, None)
            self._columns.pop(res, None)

    # ---------------------------------------------------------------- state helpers (synchronous)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out."""
        return self._rv

    def get_object(self, resource: str | kmock.resource, namespace: str | None, name: str) -> Obj | None:
        """The live object, or None (soft-deleted objects stay visible in ``fake.objects``)."""
        res = resource if isinstance(resource, kmock.resource) else kmock.resource(resource)
        return self._live.get(res, {}).get((namespace, name))

    def list_objects(self, resource: str | kmock.resource, namespace: str | None = None) -> list[Obj]:
        """Live objects of a resource (all namespaces when ``namespace`` is None), sorted by key."""
        res = resource if isinstance(resource, kmock.resource) else kmock.resource(resource)
        objs = self._live.get(res, {})
        keys = sorted((k for k in objs if namespace is None or k[0] == namespace), key=lambda k: (k[0] or "", k[1]))
        return [objs[k] for k in keys]

    def _info(self, res: kmock.resource) -> kmock.ResourceInfo:
        if res not in self.resources:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        return self.resources[res]

    def _qualified(self, res: kmock.resource) -> str:
        return f"{res.plural}.{res.group}" if res.group else str(res.plural)

    def _publish(self, event: _Event) -> None:
        if len(self._log) == self._log.maxlen:
            self._log_floor = self._log[0].rv
        self._log.append(event)
        for watcher in self._watchers:
            if watcher.resource == event.resource:
                watcher.queue.put_nowait(event)

    def _store(self, res: kmock.resource, obj: Obj, *, created: bool) -> None:
        """Save a new version into kmock's object views (bounded) and the live index."""
        meta = obj["metadata"]
        key = (res, meta.get("namespace"), meta["name"])
        if key not in self._objects:
            self._objects[key] = obj
        elif created:
            self._objects[key].create(obj)
        else:
            self._objects[key].history.append(obj)
        history = self._objects[key].history
        if len(history) > self.object_history_limit:
            del history[: len(history) - self.object_history_limit]
        self._live.setdefault(res, {})[(meta.get("namespace"), meta["name"])] = obj

    def _remove(self, res: kmock.resource, namespace: str | None, name: str) -> Obj:
        """Really delete: DELETED event with a fresh resourceVersion, soft-delete in kmock's views."""
        obj = copy.deepcopy(self._live[res].pop((namespace, name)))
        obj["metadata"]["resourceVersion"] = self._next_rv()
        key = (res, namespace, name)
        self._objects[key].history.append(obj)
        self._objects[key].delete()
        history = self._objects[key].history
        if len(history) > 3:  # deleted objects keep only their last versions
            del history[: len(history) - 3]
        self._publish(_Event(self._rv, res, "DELETED", obj))
        if res == _CRD_RESOURCE:
            self._uninstall_crd(name, delete_objects=True)
        if res == _NS_RESOURCE:
            # A real namespace deletion empties the namespace (via the namespace controller).
            for other, objs in list(self._live.items()):
                for obj_ns, obj_name in [k for k in objs if k[0] == name]:
                    self._delete(other, obj_ns, obj_name, {})
        return obj

    def _require(self, res: kmock.resource, namespace: str | None, name: str) -> Obj:
        obj = self.get_object(res, namespace, name)
        if obj is None:
            raise api_error(
                404, "NotFound", f'{self._qualified(res)} "{name}" not found',
                name=name, group=res.group, kind=res.plural,
            )
        return obj

    def create_object(
        self, resource: str | kmock.resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> Obj:
        """Create an object as the API would (uid, rv, 201 semantics) without HTTP; returns it."""
        res = resource if isinstance(resource, kmock.resource) else kmock.resource(resource)
        namespace = namespace or body.get("metadata", {}).get("namespace")
        return self._create(res, namespace, copy.deepcopy(dict(body)))

    def _create(self, res: kmock.resource, namespace: str | None, body: Obj, *, dry_run: bool = False) -> Obj:
        info = self._info(res)
        if not isinstance(body, dict):
            raise api_error(400, "BadRequest", "the request body must be a JSON object")
        meta = body.get("metadata")
        meta = dict(meta) if isinstance(meta, dict) else {}
        api_version = f"{res.group}/{res.version}" if res.group else str(res.version)
        if body.get("kind", info.kind) != info.kind or body.get("apiVersion", api_version) != api_version:
            raise api_error(
                400, "BadRequest",
                f"the API version in the data ({body.get('apiVersion')}) and kind ({body.get('kind')}) "
                f"do not match the resource {api_version}, Kind={info.kind}",
            )
        if info.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise api_error(
                    400, "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            namespace = namespace or body_ns
            if not namespace:
                raise api_error(400, "BadRequest", "a namespaced object needs a namespace")
            if self.check_namespaces and self.get_object(_NS_RESOURCE, None, namespace) is None:
                raise api_error(404, "NotFound", f'namespaces "{namespace}" not found',
                                name=namespace, kind="namespaces")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = None
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise api_error(422, "Invalid", "metadata.name: Required value: name or generateName is required")
            for _ in range(100):
                name = prefix + "".join(random.choices(_NAME_ALPHABET, k=5))
                if self.get_object(res, namespace, name) is None:
                    break
        if self.get_object(res, namespace, name) is not None:
            raise api_error(
                409, "AlreadyExists", f'{self._qualified(res)} "{name}" already exists',
                name=name, group=res.group, kind=res.plural,
            )
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(key, None)
        meta.update(
            name=name,
            uid=str(uuid.uuid4()),
            creationTimestamp=now_rfc3339(),
            generation=1,
        )
        obj: Obj = {"apiVersion": api_version, "kind": info.kind, "metadata": meta}
        obj.update({k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata")})
        if "status" in info.subresources:
            obj.pop("status", None)  # with a status subresource, the main resource ignores .status
        if res == _NS_RESOURCE:
            obj["status"] = {"phase": "Active"}
        if info.kind == "Secret" and isinstance(obj.get("stringData"), dict):
            # The apiserver folds the write-only stringData into data.
            encoded = {k: base64.b64encode(str(v).encode()).decode() for k, v in obj.pop("stringData").items()}
            obj["data"] = {**(obj.get("data") or {}), **encoded}
        if res == _CRD_RESOURCE and not dry_run:
            self._install_crd(obj)
        if dry_run:
            return obj
        meta["resourceVersion"] = self._next_rv()
        self._store(res, obj, created=True)
        self._publish(_Event(self._rv, res, "ADDED", obj))
        return obj

    def _spec_part(self, info: kmock.ResourceInfo, obj: Obj) -> Obj:
        skip = {"metadata", "apiVersion", "kind"} | ({"status"} if "status" in info.subresources else set())
        return {k: v for k, v in obj.items() if k not in skip}

    def _commit(
        self,
        res: kmock.resource,
        old: Obj,
        candidate: Obj,
        *,
        subresource: str | None,
        dry_run: bool = False,
    ) -> Obj:
        """Apply the server-side write rules to a proposed new state and store it."""
        info = self._info(res)
        if not isinstance(candidate, dict):
            raise api_error(422, "Invalid", "the object must be a JSON object")
        has_status = "status" in info.subresources
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in candidate:
                new["status"] = copy.deepcopy(candidate["status"])
            else:
                new.pop("status", None)
        else:
            new = copy.deepcopy(candidate)
            if has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        old_meta = old["metadata"]
        meta = new.get("metadata")
        meta = dict(meta) if isinstance(meta, dict) else {}
        if meta.get("name", old_meta["name"]) != old_meta["name"]:
            raise api_error(
                400, "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({old_meta['name']})",
            )
        # Identity metadata belongs to the server: restore it whatever the client sent.
        for key in ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion",
                    "deletionTimestamp", "deletionGracePeriodSeconds"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.pop("managedFields", None)
        new["metadata"] = meta
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise api_error(
                    422, "Invalid",
                    f"metadata.finalizers: Forbidden: no new finalizers can be added if the object is being "
                    f"deleted, found new finalizers {sorted(added)}",
                )
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if self._spec_part(info, new) != self._spec_part(info, old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if res == _CRD_RESOURCE and subresource is None and not dry_run:
            self._install_crd(new)
        if new == old or dry_run:
            return old if new == old else new  # no-op writes bump nothing and emit no event
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._live[res][(meta.get("namespace"), meta["name"])] = new
            return self._remove(res, meta.get("namespace"), meta["name"])
        meta["resourceVersion"] = self._next_rv()
        self._store(res, new, created=False)
        self._publish(_Event(self._rv, res, "MODIFIED", new, old))
        return new

    def _check_rv(self, res: kmock.resource, old: Obj, wanted: Any) -> None:
        if wanted not in (None, "") and str(wanted) != old["metadata"]["resourceVersion"]:
            raise api_error(
                409, "Conflict",
                f'Operation cannot be fulfilled on {self._qualified(res)} "{old["metadata"]["name"]}": '
                "the object has been modified; please apply your changes to the latest version and try again",
                name=old["metadata"]["name"], group=res.group, kind=res.plural,
            )

    def _replace(
        self, res: kmock.resource, namespace: str | None, name: str, body: Any,
        *, subresource: str | None, dry_run: bool = False,
    ) -> Obj:
        old = self._require(res, namespace, name)
        if not isinstance(body, dict):
            raise api_error(400, "BadRequest", "the request body must be a JSON object")
        self._check_rv(res, old, (body.get("metadata") or {}).get("resourceVersion"))
        return self._commit(res, old, body, subresource=subresource, dry_run=dry_run)

    def patch_object(
        self,
        resource: str | kmock.resource,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        content_type: str = "application/merge-patch+json",
        subresource: str | None = None,
    ) -> Obj:
        """Patch an object without HTTP (same rules as PATCH); returns the new state."""
        res = resource if isinstance(resource, kmock.resource) else kmock.resource(resource)
        return self._patch(res, namespace, name, patch, content_type, subresource=subresource)[1]

    def _patch(
        self, res: kmock.resource, namespace: str | None, name: str, patch: Any, content_type: str,
        *, subresource: str | None, dry_run: bool = False,
    ) -> tuple[int, Obj]:
        if content_type == "application/apply-patch+yaml":
            return self._apply_patch(res, namespace, name, patch, subresource=subresource, dry_run=dry_run)
        old = self._require(res, namespace, name)
        if content_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise api_error(
                    400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
                )
            try:
                candidate = jsonpatch.apply_patch(copy.deepcopy(old), patch, in_place=False)
            except jsonpatch.JsonPatchTestFailed as exc:
                raise api_error(
                    422, "Invalid", f"the server rejected our request due to an error in our request: {exc}"
                ) from exc
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
                raise api_error(422, "Invalid", f"the server rejected our request: {exc}") from exc
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise api_error(400, "BadRequest", "a merge patch must be a JSON object")
            self._check_rv(res, old, (patch.get("metadata") or {}).get("resourceVersion"))
            candidate = merge_patch(old, patch)
        else:
            raise api_error(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
            )
        return 200, self._commit(res, old, candidate, subresource=subresource, dry_run=dry_run)

    def _apply_patch(
        self, res: kmock.resource, namespace: str | None, name: str, body: Any,
        *, subresource: str | None, dry_run: bool = False,
    ) -> tuple[int, Obj]:
        """Server-side apply, simplified: merge into the object, or create it (no managedFields)."""
        if not isinstance(body, dict):
            raise api_error(400, "BadRequest", "an apply patch must be an object")
        old = self.get_object(res, namespace, name)
        if old is None:
            if subresource:
                self._require(res, namespace, name)
            body = dict(body, metadata=dict(body.get("metadata") or {}, name=name))
            return 201, self._create(res, namespace, body, dry_run=dry_run)
        self._check_rv(res, old, (body.get("metadata") or {}).get("resourceVersion"))
        return 200, self._commit(res, old, merge_patch(old, body), subresource=subresource, dry_run=dry_run)

    def _delete(self, res: kmock.resource, namespace: str | None, name: str, options: Any) -> Obj:
        old = self._require(res, namespace, name)
        preconditions = (options or {}).get("preconditions") or {} if isinstance(options, dict) else {}
        if preconditions.get("uid") not in (None, old["metadata"]["uid"]):
            raise api_error(409, "Conflict", f"Precondition failed: UID in precondition: {preconditions['uid']}")
        self._check_rv(res, old, preconditions.get("resourceVersion"))
        if not old["metadata"].get("finalizers"):
            return self._remove(res, namespace, name)
        if old["metadata"].get("deletionTimestamp"):
            return old  # already terminating: waiting for its finalizers
        new = copy.deepcopy(old)
        new["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0)
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._store(res, new, created=False)
        self._publish(_Event(self._rv, res, "MODIFIED", new, old))
        return new

    # ---------------------------------------------------------------- HTTP plumbing

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Serve one HTTP request (aiohttp low-level handler), keeping only a bounded history."""
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            request = await self._parse_request(raw_request)
            self._served += 1
            self._count(request)
            self._requests.append(request)
            if len(self._requests) > self.history_limit:
                del self._requests[: len(self._requests) - self.history_limit]
            try:
                return await self._handle(request)
            except rendering.StreamingError as exc:
                raw_response = exc.args[0]
                raise exc.__cause__ or exc from None
            finally:
                self._trim_reaction_histories()
        except Exception as exc:
            if not isinstance(exc, kmock.KubernetesError):
                logger.exception("FakeKube failed on %s %s", raw_request.method, raw_request.path_qs)
            if self._errors and not isinstance(exc, kmock.KubernetesError):
                self._errors[-1].append(exc)
                del self._errors[-1][: -self.history_limit]
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(exc)
            await self._stream_error(exc, raw_response)
            return raw_response

    def _count(self, request: rendering.Request) -> None:
        if request.resource is None or not request.resource.plural:
            return
        if request.action == enums.action.WATCH:
            verb = "watch"
        else:
            method = str(getattr(request.method, "value", request.method)).upper()
            verb = {"GET": "list" if request.name is None else "get"}.get(method, method.lower())
        what = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        self.request_counts[f"{verb} {what}"] += 1

    def _trim_reaction_histories(self) -> None:
        for payload in self._payloads:
            reqs = payload._requests
            if len(reqs) > self.history_limit:
                del reqs[: len(reqs) - self.history_limit]

    async def _parse_request(self, raw_request: aiohttp.web.BaseRequest) -> rendering.Request:
        """Build kmock's Request ourselves: its parser crashes on ``/api/v1/namespaces`` (kmock 0.8),
        does not know ``watch=True``/``1``, and leaves PUT without an action."""
        body = await raw_request.read()
        text = body.decode("utf-8", errors="replace")
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError:
            data = None
        path = parse_api_path(raw_request.path)
        resource: kmock.resource | None = None
        action: enums.action | None = None
        method = enums.method(raw_request.method)
        query = dict(raw_request.query)
        if path.group is not None:
            resource = kmock.resource(path.group, path.version, path.plural) if path.plural else kmock.resource(
                group=path.group, version=path.version)
            if method == enums.method.GET and query.get("watch") in _TRUTHY:
                action = enums.action.WATCH
            elif path.plural and path.name is None:
                action = {enums.method.GET: enums.action.LIST, enums.method.POST: enums.action.CREATE}.get(method)
            elif path.name is not None:
                action = {
                    enums.method.GET: enums.action.FETCH,
                    enums.method.PATCH: enums.action.UPDATE,
                    enums.method.PUT: enums.action.UPDATE,
                    enums.method.DELETE: enums.action.DELETE,
                }.get(method)
        return rendering.Request(
            id=self._served, raw_request=raw_request, url=raw_request.url, method=raw_request.method,
            params=query, headers=dict(raw_request.headers), cookies=dict(raw_request.cookies),
            data=data, body=body, text=text, action=action, resource=resource,
            namespace=path.namespace, name=path.name, subresource=path.subresource,
        )

    def _request_counts(self, reset: bool) -> dict[str, int]:
        counts = dict(self.request_counts)
        if reset:
            self.request_counts.clear()
        return counts

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):
            body = {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": exc.message, "reason": exc.reason, "code": exc.status,
            }
            if exc.details:
                body["details"] = exc.details
            return aiohttp.web.json_response(body, status=exc.status)
        return await super()._render_error(exc)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # User-defined kmock reactions (fault injection in tests) answer first; if none matches,
        # RawHandler raises NotImplementedError and the emulator answers.
        if self._payloads:
            try:
                return await apps.RawHandler._handle(self, request)
            except NotImplementedError:
                pass
        return await self._route(request)

    async def _route(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        url_path = request.url.path.rstrip("/") or "/"
        if request.method == enums.method.GET:
            simple = {
                "/": self._root_paths,
                "/version": self._version_info,
                "/api": self._api_versions,
                "/apis": self._api_groups,
                "/openapi/v2": lambda: {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1"},
                                        "paths": {}, "definitions": {}},
                "/openapi/v3": lambda: {"paths": {}},
                "/healthz": lambda: "ok",
                "/readyz": lambda: "ok",
                "/livez": lambda: "ok",
                "/_standin/requests": lambda: self._request_counts(request.params.get("reset") in _TRUTHY),
            }
            if url_path in simple:
                result = simple[url_path]()
                if isinstance(result, str):
                    return aiohttp.web.Response(text=result)
                return aiohttp.web.json_response(result)
        parts = [part for part in url_path.split("/") if part]
        if len(parts) == 2 and parts[0] == "apis" and request.method == enums.method.GET:
            return aiohttp.web.json_response(self._api_group(parts[1]))
        path = parse_api_path(url_path)
        if path.group is None:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        if path.plural is None:
            if request.method != enums.method.GET:
                raise api_error(405, "MethodNotAllowed", "the server does not allow this method")
            return aiohttp.web.json_response(self._resource_list(path.group, path.version or ""))
        return await self._serve_resource(request, path)

    # ---------------------------------------------------------------- discovery

    def _root_paths(self) -> Obj:
        paths = {"/api", "/api/v1", "/apis", "/version", "/healthz", "/readyz", "/livez",
                 "/openapi/v2", "/openapi/v3"}
        for res in self.resources:
            if res.group:
                paths |= {f"/apis/{res.group}", f"/apis/{res.group}/{res.version}"}
        return {"paths": sorted(paths)}

    def _version_info(self) -> Obj:
        major, minor = self.server_version
        return {
            "major": str(major), "minor": str(minor), "gitVersion": f"v{major}.{minor}.0-fakekube",
            "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64",
        }

    def _api_versions(self) -> Obj:
        host = (self._base_url or "http://127.0.0.1").split("//", 1)[-1]
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]}

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for res in self.resources:
            if res.group and res.version not in groups.setdefault(res.group, []):
                groups[res.group].append(str(res.version))
        return groups

    def _group_doc(self, group: str, versions: list[str]) -> Obj:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _api_groups(self) -> Obj:
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [self._group_doc(g, vs) for g, vs in sorted(self._group_versions().items())]}

    def _api_group(self, group: str) -> Obj:
        versions = self._group_versions().get(group)
        if not versions:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group, versions)}

    def _resource_list(self, group: str, version: str) -> Obj:
        rows = []
        for res in self.resources:
            if res.group != group or res.version != version:
                continue
            info = self.resources[res]
            row: Obj = {
                "name": res.plural, "singularName": info.singular or "", "namespaced": bool(info.namespaced),
                "kind": info.kind, "verbs": sorted(info.verbs or ALL_VERBS),
            }
            if info.shortnames:
                row["shortNames"] = sorted(info.shortnames)
            if info.categories:
                row["categories"] = sorted(info.categories)
            rows.append(row)
            for sub in sorted(info.subresources):
                rows.append({"name": f"{res.plural}/{sub}", "singularName": "", "namespaced": bool(info.namespaced),
                             "kind": info.kind, "verbs": list(SUBRESOURCE_VERBS)})
        if not rows:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        group_version = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": rows}

    # ---------------------------------------------------------------- resources

    async def _serve_resource(self, request: rendering.Request, path: _Path) -> aiohttp.web.StreamResponse:
        res = kmock.resource(path.group, path.version, path.plural)
        info = self._info(res)
        if path.subresource is not None and path.subresource not in info.subresources:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        if info.namespaced is False and path.namespace is not None:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        if info.namespaced and path.name is not None and path.namespace is None:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        method, params = request.method, request.params
        dry_run = params.get("dryRun") == "All"
        table = "as=Table" in request.headers.get("Accept", "")
        if method == enums.method.GET and params.get("watch") in _TRUTHY:
            return await self._serve_watch(request, res, path, table=table)
        if method == enums.method.GET and path.name is None:
            return aiohttp.web.json_response(self._list_body(res, path.namespace, params, table=table))
        if method == enums.method.GET:
            obj = self._require(res, path.namespace, path.name)
            return aiohttp.web.json_response(self._table(res, [obj], params) if table else obj)
        if method == enums.method.POST and path.name is None:
            obj = self._create(res, path.namespace, self._body(request), dry_run=dry_run)
            return aiohttp.web.json_response(obj, status=201)
        if method == enums.method.DELETE and path.name is None:
            deleted = [
                self._delete(res, o["metadata"].get("namespace"), o["metadata"]["name"], self._body(request, {}))
                for o in self._select(res, path.namespace, params)
            ]
            return aiohttp.web.json_response(self._list_envelope(res, deleted))
        if path.name is None:
            raise api_error(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        sub = "status" if path.subresource == "status" else None
        if method == enums.method.PUT:
            obj = self._replace(res, path.namespace, path.name, self._body(request), subresource=sub, dry_run=dry_run)
            return aiohttp.web.json_response(obj)
        if method == enums.method.PATCH:
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            status, obj = self._patch(res, path.namespace, path.name, self._body(request, content_type=content_type),
                                      content_type, subresource=sub, dry_run=dry_run)
            return aiohttp.web.json_response(obj, status=status)
        if method == enums.method.DELETE:
            return aiohttp.web.json_response(self._delete(res, path.namespace, path.name, self._body(request, {})))
        raise api_error(405, "MethodNotAllowed", f"{method} is not allowed")

    def _body(self, request: rendering.Request, default: Any = ..., *, content_type: str = "") -> Any:
        sent_type = request.headers.get("Content-Type", "")
        if "protobuf" in sent_type:
            # kubectl's typed clients (`kubectl create namespace/configmap/secret`) send protobuf.
            return decode_protobuf_object(request.body)
        if "cbor" in sent_type:
            raise api_error(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {sent_type}"
            )
        if not request.body.strip():
            if default is ...:
                raise api_error(400, "BadRequest", "the request body is empty")
            return default
        if content_type == "application/apply-patch+yaml":
            try:
                return yaml.safe_load(request.text)
            except yaml.YAMLError as exc:
                raise api_error(400, "BadRequest", f"invalid YAML: {exc}") from exc
        try:
            return json.loads(request.body)
        except ValueError as exc:
            raise api_error(400, "BadRequest", f"invalid JSON: {exc}") from exc

    def _matcher(self, namespace: str | None, params: Mapping[str, str], name: str | None = None) -> Any:
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(params.get("fieldSelector"))

        def matches(obj: Obj | None) -> bool:
            if obj is None:
                return False
            meta = obj.get("metadata", {})
            if namespace is not None and meta.get("namespace") != namespace:
                return False
            if name is not None and meta.get("name") != name:
                return False
            obj_labels = meta.get("labels") or {}
            if not all(req.matches(obj_labels) for req in labels):
                return False
            return all((_field_value(obj, p) == v) == eq for p, eq, v in fields)

        return matches

    def _select(self, res: kmock.resource, namespace: str | None, params: Mapping[str, str]) -> list[Obj]:
        matches = self._matcher(namespace, params)
        return [obj for obj in self.list_objects(res, namespace) if matches(obj)]

    def _list_envelope(self, res: kmock.resource, items: list[Obj]) -> Obj:
        info = self._info(res)
        return {
            "kind": f"{info.kind}List",
            "apiVersion": f"{res.group}/{res.version}" if res.group else res.version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _list_body(self, res: kmock.resource, namespace: str | None, params: Mapping[str, str], *, table: bool) -> Obj:
        items = self._select(res, namespace, params)
        return self._table(res, items, params) if table else self._list_envelope(res, items)

    # ---------------------------------------------------------------- tables (kubectl get)

    def _table(
        self, res: kmock.resource, items: list[Obj], params: Mapping[str, str], *, with_columns: bool = True
    ) -> Obj:
        columns = self._columns.get(res) or [_AGE_COLUMN]
        include = params.get("includeObject", "Metadata")
        rows = []
        for obj in items:
            cells: list[Any] = [obj["metadata"]["name"]]
            cells.extend(self._cell(obj, col) for col in columns)
            row: Obj = {"cells": cells}
            if include == "Object":
                row["object"] = obj
            elif include != "None":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": obj["metadata"]}
            rows.append(row)
        table: Obj = {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "rows": rows,
        }
        if with_columns:
            name_col = {"name": "Name", "type": "string", "format": "name", "priority": 0,
                        "description": "Name must be unique within a namespace."}
            table["columnDefinitions"] = [name_col] + [
                {"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
                 "description": c.get("description", ""), "priority": int(c.get("priority", 0))}
                for c in columns
            ]
        return table

    @staticmethod
    def _cell(obj: Obj, column: Mapping[str, Any]) -> Any:
        try:
            found = jsonpath_find(obj, column.get("jsonPath", ""))
        except ValueError:
            return None
        if not found or found[0] is None:
            return None
        kind = column.get("type", "string")
        if len(found) > 1:
            return ",".join(json.dumps(v) if isinstance(v, (dict, list)) else str(v) for v in found)
        value = found[0]
        if kind == "date":
            return human_age(str(value))
        if kind == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
        if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return value if math.isfinite(value) else str(value)
        if kind == "boolean" and isinstance(value, bool):
            return value
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"))
        return value if isinstance(value, str) else json.dumps(value)

    # ---------------------------------------------------------------- watch

    async def _serve_watch(
        self, request: rendering.Request, res: kmock.resource, path: _Path, *, table: bool
    ) -> aiohttp.web.StreamResponse:
        params = request.params
        matches = self._matcher(path.namespace, params, name=path.name)
        try:
            timeout = float(params.get("timeoutSeconds") or 1800)
        except ValueError as exc:
            raise api_error(400, "BadRequest", "timeoutSeconds must be a number") from exc
        since = params.get("resourceVersion") or ""
        if since not in ("", "0") and not since.isdigit():
            raise api_error(400, "BadRequest", f"invalid resourceVersion {since!r}")
        # Subscribe and take the snapshot with no await in between: nothing can slip through.
        watcher = _Watcher(res)
        self._watchers.add(watcher)
        initial: list[tuple[str, Obj]] = []
        gone = False
        if since in ("", "0"):
            initial = [("ADDED", obj) for obj in self.list_objects(res, path.namespace) if matches(obj)]
        elif int(since) < self._log_floor:
            gone = True
        else:
            for event in self._log:
                if event.resource == res and event.rv > int(since):
                    view = self._watch_view(event, matches)
                    if view:
                        initial.append(view)

        raw = request._raw_request
        assert raw is not None
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        first = True

        async def send(kind: str, obj: Obj) -> None:
            nonlocal first
            if table:
                obj = self._table(res, [obj], params, with_columns=first)
            first = False
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        try:
            await response.prepare(raw)
            if gone:
                status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": f"too old resource version: {since} ({self._log_floor + 1})",
                          "reason": "Expired", "code": 410}
                await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                return response
            for kind, obj in initial:
                await send(kind, obj)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while (remaining := deadline - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), timeout=min(remaining, 5.0))
                except TimeoutError:
                    if raw.transport is None or raw.transport.is_closing():
                        break  # the client went away: stop holding the watcher
                    continue
                if event is None:  # the server is shutting down
                    break
                view = self._watch_view(event, matches)
                if view:
                    await send(*view)
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the client disconnected mid-stream; nothing to tell it
        finally:
            self._watchers.discard(watcher)
        return response

    @staticmethod
    def _watch_view(event: _Event, matches: Any) -> tuple[str, Obj] | None:
        """How one event looks through a selector: leaving it is DELETED, entering it ADDED."""
        now_in = matches(event.obj)
        if event.type != "MODIFIED":
            return (event.type, event.obj) if now_in else None
        was_in = matches(event.old)
        if now_in and was_in:
            return ("MODIFIED", event.obj)
        if now_in:
            return ("ADDED", event.obj)
        if was_in:
            return ("DELETED", event.obj)
        return None

    def stop_watches(self) -> None:
        """End every open watch stream (clients see a normal end and re-watch elsewhere)."""
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)

    # ---------------------------------------------------------------- serving

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` while :meth:`serve` is active."""
        if self._base_url is None:
            raise RuntimeError("FakeKube is not serving; use `async with fake.serve():`")
        return self._base_url

    def kubeconfig(self, url: str | None = None, *, namespace: str = "default") -> str:
        """A kubeconfig (YAML) pointing at the server with a dummy bearer token."""
        return render_kubeconfig(url or self.base_url, namespace=namespace)

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Listen on a loopback port; yields the base URL. The handler must be entered too."""
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"FakeKube only listens on loopback addresses, not {host}")
        # handler_cancellation: a client that hangs up a watch cancels its handler right away.
        server = aiohttp.web.Server(self, handler_cancellation=True, access_log=None)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, host, port)
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
        actual_port = sockets[0].getsockname()[1]
        self._base_url = f"http://{host}:{actual_port}"
        try:
            yield self._base_url
        finally:
            self.stop_watches()
            await asyncio.sleep(0)
            await runner.cleanup()
            self._base_url = None


def render_kubeconfig(url: str, *, namespace: str = "default", token: str = FAKE_TOKEN) -> str:
    """Kubeconfig YAML for ``url`` (kubectl, kopf and the Python clients all read it)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fakekube", "cluster": {"server": url}}],
        "users": [{"name": "fakekube", "user": {"token": token}}],
        "contexts": [{"name": "fakekube", "context": {"cluster": "fakekube", "user": "fakekube",
                                                      "namespace": namespace}}],
        "current-context": "fakekube",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def load_manifests(path: str | Path) -> list[Obj]:
    """All non-empty YAML documents of a file."""
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


# --------------------------------------------------------------------------------------------------
# Standalone server.
# --------------------------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


async def _amain(args: argparse.Namespace) -> int:
    fake = FakeKube(history_limit=args.history, check_namespaces=not args.no_namespace_check)
    for crd_path in args.crd or []:
        for doc in load_manifests(crd_path):
            if doc.get("kind") == "CustomResourceDefinition":
                fake.register_crd(doc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with fake, fake.serve(args.host, args.port) as url:
        if args.kubeconfig_out:
            _write_text(Path(args.kubeconfig_out), fake.kubeconfig(url))
        print(f"READY {url}", flush=True)
        await stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tests.standins.kube``."""
    parser = argparse.ArgumentParser(prog="python -m tests.standins.kube", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (see the READY line)")
    parser.add_argument("--crd", action="append", help="YAML file with CRDs to register (repeatable)")
    parser.add_argument("--kubeconfig-out", help="write a kubeconfig for the server here")
    parser.add_argument("--history", type=int, default=50, help="requests kept for assertions")
    parser.add_argument("--no-namespace-check", action="store_true", help="allow objects in missing namespaces")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.verbose:
        logging.getLogger("aiohttp.access").setLevel(logging.INFO)
    return asyncio.run(_amain(args))


if __name__ == "__main__":
    sys.exit(main())
