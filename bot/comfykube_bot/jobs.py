"""ImageJobs as the bot sees them: create, list, delete, watch, and the delivery record.

All state the bot needs lives in the ImageJob (labels say who and where,
annotations say which message shows it and whether its result was delivered),
so a restarted bot — or a second one — knows everything without a database.

Delivery record (`comfykube.dev/discord-delivered`), written with merge patches:

1. **claim** `claimed;holder=<process id>;at=<unix>`, sent with the object's
   `metadata.resourceVersion`, so the API server refuses it (409) if anything
   changed since we read the job — two deliveries cannot both claim;
2. post or edit the result in Discord;
3. **record** `message=<id>;at=<unix>` (or `gone;...` when there is nowhere to post).

A claim by another process that never turned into a record means that process
died between 1 and 3. The result may or may not be in Discord, so the next
bot looks (`delivery.py`): the final message carries the job's key in its
embed footer; found → record it; not found → claim again and post. That makes
"kill between post and record" cost one Discord read, not a duplicate post.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes_asyncio.client.exceptions import ApiException

from comfykube.kube import KubeApi
from comfykube.names import (
    ANN_CHANNEL,
    ANN_DELIVERED,
    ANN_MESSAGE,
    ANN_PRIVATE,
    ANN_SIGNATURE,
    ANN_SPOILER,
    ANN_UPLOAD_LIMIT,
    LABEL_CHANNEL,
    LABEL_GUILD,
    LABEL_MANAGED_BY,
    LABEL_REQUESTER,
    MANAGED_BY_BOT,
)
from comfykube.readback import read_spec, read_status
from comfykube.types import ImageJobSpec, ImageJobStatus, Phase
from comfykube_bot.signing import SIGNED_ANNOTATIONS, SIGNED_LABELS, Signer

log = logging.getLogger(__name__)

T = TypeVar("T")

WAITING_PHASES = frozenset({Phase.PENDING, Phase.QUEUED})


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def parse_time(value: Any) -> dt.datetime | None:
    """RFC 3339 → aware datetime (None when absent or unreadable)."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Delivery:
    """The parsed `discord-delivered` annotation."""

    state: str  # "none", "claimed", "done"
    holder: str | None = None
    at: float | None = None
    message_id: int | None = None
    #: Why the result was not posted (a kubectl job whose notify target the rules refuse).
    refused: str | None = None

    @classmethod
    def parse(cls, value: str | None) -> Delivery:
        """Parse the annotation value; anything unreadable counts as done (never post twice)."""
        if not value:
            return cls("none")
        head, *rest = value.split(";")
        fields = dict(part.split("=", 1) for part in rest if "=" in part)
        at = float(fields["at"]) if fields.get("at", "").replace(".", "", 1).isdigit() else None
        if head == "claimed":
            return cls("claimed", holder=fields.get("holder"), at=at)
        if head.startswith("message="):
            return cls("done", at=at, message_id=_int(head.split("=", 1)[1]))
        if head.startswith("refused="):
            return cls("done", at=at, refused=head.split("=", 1)[1])
        return cls("done", at=at)

    @staticmethod
    def claim_value(holder: str, now: float | None = None) -> str:
        """The annotation value of a claim."""
        return f"claimed;holder={holder};at={int(now if now is not None else time.time())}"

    @staticmethod
    def record_value(message_id: int | None, now: float | None = None, *, refused: str | None = None) -> str:
        """The annotation value of a finished delivery (or of one the rules refused)."""
        head = f"refused={refused}" if refused else f"message={message_id}" if message_id else "gone"
        return f"{head};at={int(now if now is not None else time.time())}"


@dataclass
class JobInfo:
    """A read-only view of one ImageJob, read through the types, with the bot's labels and annotations decoded.

    `labels` and `annotations` hold only what may be trusted: the values the bot signs
    (requester, guild, channel, message, ...) are kept only when the bot's signature over
    them matches (`verified`); a job made with kubectl keeps its other metadata.
    """

    namespace: str
    name: str
    uid: str
    resource_version: str | None
    spec: ImageJobSpec
    status: ImageJobStatus = field(default_factory=ImageJobStatus)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    deleting: bool = False
    created_at: dt.datetime | None = None
    #: The bot's own signature over its labels and annotations matched.
    verified: bool = False

    @classmethod
    def from_obj(cls, obj: dict[str, Any], signer: Signer | None = None) -> JobInfo:
        """Decode an ImageJob dict as the API returns it (tolerantly: an older operator's status reads fine)."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        verified = signer is not None and signer.verify(
            namespace, name, labels, annotations, annotations.get(ANN_SIGNATURE)
        )
        if not verified:
            # Claims anyone could have written: who to ping, which message to edit.
            labels = {k: v for k, v in labels.items() if k not in SIGNED_LABELS}
            annotations = {k: v for k, v in annotations.items() if k not in SIGNED_ANNOTATIONS}
        return cls(
            namespace=namespace,
            name=name,
            uid=str(meta.get("uid") or ""),
            resource_version=meta.get("resourceVersion"),
            spec=read_spec(obj.get("spec")),
            status=read_status(obj.get("status")),
            labels=labels,
            annotations=annotations,
            deleting=bool(meta.get("deletionTimestamp")),
            created_at=parse_time(meta.get("creationTimestamp")),
            verified=verified,
        )

    @property
    def key(self) -> str:
        """`namespace/name`: the job's identity in custom ids, logs and embed footers."""
        return f"{self.namespace}/{self.name}"

    @property
    def phase(self) -> Phase:
        """The status phase (Pending when the operator has not written one yet)."""
        return self.status.phase

    @property
    def terminal(self) -> bool:
        """Succeeded, Failed or Cancelled."""
        return self.phase.terminal

    @property
    def active(self) -> bool:
        """Counts against the user's limit: not finished and not being deleted."""
        return not self.terminal and not self.deleting

    @property
    def waiting(self) -> bool:
        """Counts against the queue cap: waiting for a ComfyUI slot."""
        return self.phase in WAITING_PHASES and not self.deleting

    @property
    def requester(self) -> int | None:
        """Discord user id of the person who asked (signed label; None for kubectl jobs)."""
        return _int(self.labels.get(LABEL_REQUESTER))

    @property
    def created_by_bot(self) -> bool:
        """True for jobs the bot created (they have a job message to edit)."""
        return self.labels.get(LABEL_MANAGED_BY) == MANAGED_BY_BOT

    @property
    def guild_id(self) -> int | None:
        """The guild the job was asked from (signed label)."""
        return _int(self.labels.get(LABEL_GUILD))

    @property
    def message_id(self) -> int | None:
        """The job message the bot edits (signed annotation)."""
        return _int(self.annotations.get(ANN_MESSAGE))

    @property
    def notify_channel(self) -> int | None:
        """`spec.notify.discord.channelId` (jobs created outside the chat)."""
        notify = self.spec.notify.discord if self.spec.notify is not None else None
        return _int(notify.channel_id) if notify is not None else None

    @property
    def channel_id(self) -> int | None:
        """Where the job's message lives or its result goes."""
        return (
            _int(self.annotations.get(ANN_CHANNEL)) or self.notify_channel or _int(self.labels.get(LABEL_CHANNEL))
        )

    @property
    def from_notify(self) -> bool:
        """True when the result goes only where `spec.notify` says (a job the bot did not create)."""
        return not self.created_by_bot

    @property
    def upload_limit(self) -> int | None:
        """The upload limit Discord gave the interaction that created the job."""
        return _int(self.annotations.get(ANN_UPLOAD_LIMIT))

    @property
    def spoiler(self) -> bool:
        """Attach images as spoilers (honoured from anyone: it only hides more)."""
        return self.annotations.get(ANN_SPOILER) == "true"

    @property
    def private(self) -> bool:
        """Private replies (signed annotation): shown only to the requester, never in the channel."""
        return self.annotations.get(ANN_PRIVATE) == "true"

    @property
    def delivery(self) -> Delivery:
        """The delivery record."""
        return Delivery.parse(self.annotations.get(ANN_DELIVERED))

    @property
    def model_used(self) -> str | None:
        """The checkpoint the operator recorded, else the one the spec names."""
        return self.status.model or self.spec.model

    @property
    def wants_discord(self) -> bool:
        """True when the bot is responsible for showing this job in Discord."""
        return self.message_id is not None or self.notify_channel is not None or (
            self.created_by_bot and self.channel_id is not None
        )


#: Seconds for one Kubernetes call (the watch excepted): a hung API server must not leave a user
#: looking at "thinking…" for the interaction's whole 15 minutes.
CALL_TIMEOUT = 15.0


class JobStore:
    """ImageJob calls in the bot's namespace, on top of `comfykube.kube.KubeApi` (async, non-blocking).

    Every call but the watch is bounded by `CALL_TIMEOUT` (TimeoutError).
    """

    def __init__(
        self, kube: KubeApi, namespace: str, *, signer: Signer | None = None, timeout: float = CALL_TIMEOUT
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.signer = signer
        self.timeout = timeout

    def _info(self, obj: dict[str, Any]) -> JobInfo:
        return JobInfo.from_obj(obj, self.signer)

    async def _call(self, coro: Awaitable[T]) -> T:
        return await asyncio.wait_for(coro, self.timeout)

    async def create(self, manifest: dict[str, Any]) -> JobInfo:
        """Create the job; if it already exists (Discord delivered the interaction twice) return that one."""
        try:
            obj = await self._call(self.kube.create(self.namespace, manifest))
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = await self._call(self.kube.get(self.namespace, manifest["metadata"]["name"]))
            if existing is None:
                raise
            return self._info(existing)
        return self._info(obj)

    async def get(self, name: str, namespace: str | None = None) -> JobInfo | None:
        """The job, or None when it does not exist."""
        obj = await self._call(self.kube.get(namespace or self.namespace, name))
        return self._info(obj) if obj is not None else None

    async def list_jobs(self, label_selector: str | None = None) -> list[JobInfo]:
        """Jobs in the namespace, newest first."""
        objs = await self._call(self.kube.list(self.namespace, label_selector=label_selector))
        jobs = [self._info(o) for o in objs]
        epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
        jobs.sort(key=lambda j: (j.created_at or epoch, j.name), reverse=True)
        return jobs

    async def list_for_user(self, user_id: int) -> list[JobInfo]:
        """The user's jobs, selected by the requester label (newest first)."""
        # The label selects; only jobs whose label the bot signed are really the user's.
        return [j for j in await self.list_jobs(f"{LABEL_REQUESTER}={user_id}") if j.requester == user_id]

    async def delete(self, name: str, namespace: str | None = None) -> bool:
        """Delete the job (the operator then cancels it in ComfyUI); False if it was gone."""
        return await self._call(self.kube.delete(namespace or self.namespace, name))

    async def claim_delivery(self, job: JobInfo, holder: str) -> JobInfo | None:
        """Claim the right to post the result; None when someone changed the job first (409)."""
        patch = {
            "metadata": {
                "resourceVersion": job.resource_version,
                "annotations": {ANN_DELIVERED: Delivery.claim_value(holder)},
            }
        }
        try:
            obj = await self._call(self.kube.patch(job.namespace, job.name, patch))
        except ApiException as exc:
            if exc.status in (404, 409):
                return None
            raise
        return self._info(obj)

    async def record_delivery(self, job: JobInfo, message_id: int | None, *, refused: str | None = None) -> None:
        """Record where the result went (or that it could not go anywhere, or why it was not posted)."""
        patch = {"metadata": {"annotations": {ANN_DELIVERED: Delivery.record_value(message_id, refused=refused)}}}
        try:
            await self._call(self.kube.patch(job.namespace, job.name, patch))
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing left to record on
                raise

    async def watch(self) -> AsyncIterator[tuple[str, JobInfo]]:
        """(event type, job) for every change in the namespace, forever (re-watches on its own)."""
        async for kind, obj in self.kube.watch(self.namespace):
            yield kind, self._info(obj)


__all__ = ["Delivery", "JobInfo", "JobStore"]
