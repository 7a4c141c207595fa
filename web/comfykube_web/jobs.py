"""ImageJobs as the gallery sees them: typed, tolerant views of the API's objects.

Spec and status are read through the project's models (`ImageJobSpec`,
`ImageJobStatus`). Those refuse unknown fields (as the CRD does); a viewer must not
break on an object written by a newer operator, or on a field someone broke by hand,
so `lenient()` keeps what the model knows and can validate, and drops the rest —
field by field, list item by list item.

Everything here is data from outside: it is shown escaped, never trusted.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from comfykube.names import LABEL_REQUESTER
from comfykube.types import API_GROUP, API_VERSION, KIND, ImageJobSpec, ImageJobStatus, Phase

M = TypeVar("M", bound=BaseModel)

#: Longest prompt shown on a grid card (the job page shows all of it).
CARD_PROMPT = 300


def _models_in(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """("one", Model) for `Model | None`, ("list", Model) for `list[Model]`, else None."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "one", annotation
    if origin is list:
        (item,) = typing.get_args(annotation) or (None,)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return "list", item
        return None
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _models_in(arg)
            if found:
                return found
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    return None


def lenient(model: type[M], data: Any) -> M:
    """`model` from `data`, dropping unknown keys and fields that do not validate.

    Raises ValidationError only when a required field is missing or bad (a spec
    without a usable prompt, for example).
    """
    source: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
    kept: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key not in source:
            continue
        value = source[key]
        nested = _models_in(info.annotation)
        if nested is not None:
            kind, sub = nested
            if kind == "list" and isinstance(value, list):
                value = [item for item in (_or_none(sub, v) for v in value) if item is not None]
            elif kind == "one" and isinstance(value, Mapping):
                value = _or_none(sub, value)
                if value is None:
                    continue
        kept[name] = value
    for _ in range(len(kept) + 1):
        try:
            return model.model_validate(kept)
        except ValidationError as exc:
            bad = {str(err["loc"][0]) for err in exc.errors() if err.get("loc")}
            drop = {name for name in kept if name in bad or (model.model_fields[name].alias or name) in bad}
            if not drop:
                raise
            kept = {k: v for k, v in kept.items() if k not in drop}
    return model.model_validate(kept)


def _or_none(model: type[M], data: Mapping[str, Any]) -> M | None:
    try:
        return lenient(model, data)
    except ValidationError:
        return None


def parse_time(value: Any) -> dt.datetime | None:
    """RFC 3339 → aware datetime; None when absent or unreadable."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Requester:
    """Who asked for a job: a Discord user (the bot's label) or someone with kubectl / the API."""

    key: str  # filter value: "discord:<id>", "kubectl" or "api:<manager>"
    label: str


def requester_of(meta: Mapping[str, Any]) -> Requester:
    """Read the requester from the bot's label, else from the field manager that created the object.

    Anyone who may create an ImageJob can set the label: it is shown as what it is, a claim.
    """
    labels = meta.get("labels") or {}
    user = str(labels.get(LABEL_REQUESTER) or "") if isinstance(labels, Mapping) else ""
    if user.isdigit():
        return Requester(f"discord:{user}", f"Discord user {user}")
    managers = meta.get("managedFields") or []
    manager = ""
    if isinstance(managers, list) and managers and isinstance(managers[0], Mapping):
        manager = str(managers[0].get("manager") or "")
    if not manager or manager.startswith("kubectl"):
        return Requester("kubectl", "kubectl")
    clean = "".join(c for c in manager[:40] if c.isalnum() or c in "-_.")
    return Requester(f"api:{clean}", clean or "API")


@dataclass
class JobView:
    """One ImageJob, decoded once when it arrives from the API (list or watch)."""

    namespace: str
    name: str
    uid: str
    created: dt.datetime
    raw_spec: dict[str, Any]
    spec: ImageJobSpec | None
    status: ImageJobStatus
    requester: Requester
    labels: dict[str, str] = field(default_factory=dict)
    deleting: bool = False
    resource_version: str = ""

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> JobView:
        """Decode an ImageJob dict as the API returns it (never raises for bad spec or status)."""
        meta = obj.get("metadata") or {}
        raw_spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        try:
            spec: ImageJobSpec | None = lenient(ImageJobSpec, raw_spec)
        except ValidationError:
            spec = None
        status = lenient(ImageJobStatus, obj.get("status"))
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            created=parse_time(meta.get("creationTimestamp")) or dt.datetime.fromtimestamp(0, dt.UTC),
            raw_spec=dict(raw_spec or {}),
            spec=spec,
            status=status,
            requester=requester_of(meta),
            labels={str(k): str(v) for k, v in (labels or {}).items()},
            deleting=bool(meta.get("deletionTimestamp")),
            resource_version=str(meta.get("resourceVersion") or ""),
        )

    @property
    def key(self) -> str:
        """`namespace/name`."""
        return f"{self.namespace}/{self.name}"

    @property
    def path(self) -> str:
        """The job page's path (names are DNS labels/subdomains: nothing to escape in a path)."""
        return f"/jobs/{self.namespace}/{self.name}"

    @property
    def prompt(self) -> str:
        """The prompt (from the raw spec when the spec does not validate)."""
        if self.spec is not None:
            return self.spec.prompt
        value = self.raw_spec.get("prompt")
        return value if isinstance(value, str) else ""

    @property
    def workflow(self) -> str:
        """The workflow name."""
        if self.spec is not None:
            return self.spec.workflow
        value = self.raw_spec.get("workflow")
        return value if isinstance(value, str) else ImageJobSpec.model_fields["workflow"].default

    @property
    def phase(self) -> Phase:
        """The phase from status (Pending before the operator wrote one)."""
        return self.status.phase

    @property
    def percent(self) -> int:
        """Progress in percent: 100 when succeeded, steps done otherwise."""
        if self.phase is Phase.SUCCEEDED:
            return 100
        progress = self.status.progress
        if progress is None or not progress.max:
            return 0
        return max(0, min(100, round(100 * progress.value / progress.max)))

    @property
    def sort_key(self) -> tuple[float, str, str]:
        """Ascending order of this key is newest first."""
        return (-self.created.timestamp(), self.namespace, self.name)

    def short_prompt(self) -> str:
        """The prompt cut for a card."""
        text = self.prompt
        return text if len(text) <= CARD_PROMPT else text[: CARD_PROMPT - 1] + "…"

    def again_manifest(self) -> str:
        """YAML of an ImageJob that renders the same picture: this spec with the seed used; no status."""
        spec: dict[str, Any]
        if self.spec is not None:
            seed = self.status.seed if self.status.seed is not None else self.spec.seed
            spec = self.spec.model_copy(update={"seed": seed}).wire()
        else:
            spec = dict(self.raw_spec)
        manifest = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"generateName": f"{self.name[:50]}-", "namespace": self.namespace},
            "spec": spec,
        }
        return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)


__all__ = ["JobView", "Requester", "lenient", "parse_time", "requester_of"]
