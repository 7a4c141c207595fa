"""Per-user `/settings` defaults, stored in the cluster: one ConfigMap per guild.

`comfykube-bot-settings-<guild id>` (`-dm` for direct messages) in the bot's
namespace holds one key per user id, whose value is the user's defaults as
JSON. Nothing is kept in process memory between interactions, so a restarted
bot (or a second replica) reads the same settings.

Writes are read-modify-write with optimistic concurrency: the replace carries
the `metadata.resourceVersion` that was read, the API server refuses it (409)
when another write came first, and the change is applied again on the fresh
object. Two users of one guild saving at the same moment therefore both keep
their change.

Values read back are checked again (`UserPrefs.from_json`): the ConfigMap is
writable by whoever may edit ConfigMaps in the namespace, so what it holds is
data, not trusted input — an unknown key or an out-of-range value is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from comfykube.types import MAX_PROMPT_LENGTH, MODEL_NAME_PATTERN
from comfykube_bot.specs import ASPECTS, ImagineOptions

log = logging.getLogger(__name__)

#: Name prefix of the per-guild ConfigMaps (the chart's RBAC lets the bot edit ConfigMaps in its namespace).
CONFIGMAP_PREFIX = "comfykube-bot-settings-"
#: Images per job a user may pick as a default (what a grid shows).
COUNTS = (1, 2, 3, 4)
#: Step counts offered in the panel (a select shows at most 25 options).
STEP_CHOICES = (10, 15, 20, 25, 30, 40, 50, 75, 100)
#: Attempts of one read-modify-write when others write the same ConfigMap meanwhile.
MAX_ATTEMPTS = 10
CALL_TIMEOUT = 15.0


@dataclass(frozen=True)
class UserPrefs:
    """One user's defaults; None means "not set" (the bot's own default applies)."""

    aspect: str | None = None
    count: int | None = None
    model: str | None = None
    negative: str | None = None
    steps: int | None = None
    private: bool = False

    @property
    def empty(self) -> bool:
        """True when nothing is set."""
        return self == UserPrefs()

    def to_json(self) -> str:
        """Compact JSON of the set values."""
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (None, False)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> UserPrefs:
        """Parse what a ConfigMap holds; anything malformed or out of range is dropped, never raised."""
        if not text:
            return cls()
        try:
            raw = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(raw, dict):
            return cls()
        out: dict[str, Any] = {}
        aspect = raw.get("aspect")
        if isinstance(aspect, str) and aspect in ASPECTS:
            out["aspect"] = aspect
        count = raw.get("count")
        if isinstance(count, int) and not isinstance(count, bool) and count in COUNTS:
            out["count"] = count
        model = raw.get("model")
        if isinstance(model, str) and len(model) <= 255 and _MODEL.fullmatch(model):
            out["model"] = model
        negative = raw.get("negative")
        if isinstance(negative, str) and 0 < len(negative) <= MAX_PROMPT_LENGTH:
            out["negative"] = negative
        steps = raw.get("steps")
        if isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= 150:
            out["steps"] = steps
        if raw.get("private") is True:
            out["private"] = True
        return cls(**out)

    def changed(self, **values: Any) -> UserPrefs:
        """A copy with `values` set (unknown names refused)."""
        known = {f.name for f in fields(self)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **values)


_MODEL = re.compile(MODEL_NAME_PATTERN.removeprefix("^").removesuffix("$"))


def apply_prefs(options: ImagineOptions, prefs: UserPrefs) -> ImagineOptions:
    """`options` (typed options and inline flags merged) with the user's defaults where nothing was given.

    An explicit width or height also counts as "given" for the aspect.
    """
    out = replace(options)
    if out.aspect is None and out.width is None and out.height is None and prefs.aspect is not None:
        out.aspect = prefs.aspect
    if out.count is None and prefs.count is not None:
        out.count = prefs.count
    if out.model is None and prefs.model is not None:
        out.model = prefs.model
    if out.negative is None and prefs.negative is not None:
        out.negative = prefs.negative
    if out.steps is None and prefs.steps is not None:
        out.steps = prefs.steps
    return out


def configmap_name(guild_id: int | None) -> str:
    """`comfykube-bot-settings-<guild>` (or `-dm`)."""
    return f"{CONFIGMAP_PREFIX}{guild_id if guild_id else 'dm'}"


class PrefsStore:
    """Read and write users' defaults in the per-guild ConfigMaps of one namespace.

    `core` is a kubernetes_asyncio `CoreV1Api` (the bot's `KubeApi.core`).
    """

    def __init__(self, core: Any, namespace: str, *, timeout: float = CALL_TIMEOUT) -> None:
        self.core = core
        self.namespace = namespace
        self.timeout = timeout
        self.writes = 0
        self.conflicts = 0

    async def _read(self, name: str) -> Any | None:
        try:
            return await asyncio.wait_for(self.core.read_namespaced_config_map(name, self.namespace), self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def get(self, guild_id: int | None, user_id: int) -> UserPrefs:
        """The user's defaults in that guild (empty when none are stored)."""
        cm = await self._read(configmap_name(guild_id))
        data = (cm.data or {}) if cm is not None else {}
        return UserPrefs.from_json(data.get(str(user_id)))

    async def update(
        self, guild_id: int | None, user_id: int, change: Callable[[UserPrefs], UserPrefs]
    ) -> UserPrefs:
        """Apply `change` to the stored defaults and write them back (retried on conflicts); returns the result."""
        name = configmap_name(guild_id)
        key = str(user_id)
        for _attempt in range(MAX_ATTEMPTS):
            cm = await self._read(name)
            data = dict((cm.data or {}) if cm is not None else {})
            new = change(UserPrefs.from_json(data.get(key)))
            if new.empty:
                data.pop(key, None)
            else:
                data[key] = new.to_json()
            try:
                if cm is None:
                    body = {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": name,
                            "labels": {"app.kubernetes.io/managed-by": "comfykube-bot",
                                       "app.kubernetes.io/component": "bot-settings"},
                        },
                        "data": data,
                    }
                    await asyncio.wait_for(self.core.create_namespaced_config_map(self.namespace, body), self.timeout)
                else:
                    body = {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": name,
                            "resourceVersion": cm.metadata.resource_version,
                            "labels": cm.metadata.labels or {},
                        },
                        "data": data,
                    }
                    await asyncio.wait_for(
                        self.core.replace_namespaced_config_map(name, self.namespace, body), self.timeout
                    )
            except ApiException as exc:
                if exc.status == 409:  # someone wrote first (or created it first): read again
                    self.conflicts += 1
                    # A short random pause: writers that met each other do not meet again in lockstep.
                    await asyncio.sleep(random.uniform(0.005, 0.05) * (_attempt + 1))
                    continue
                raise
            self.writes += 1
            return new
        raise RuntimeError(f"ConfigMap {self.namespace}/{name} kept changing; settings not saved")

    async def reset(self, guild_id: int | None, user_id: int) -> None:
        """Forget the user's defaults in that guild."""
        await self.update(guild_id, user_id, lambda _old: UserPrefs())


__all__ = ["CONFIGMAP_PREFIX", "COUNTS", "STEP_CHOICES", "PrefsStore", "UserPrefs", "apply_prefs", "configmap_name"]
