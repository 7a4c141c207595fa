"""ImageJob events → Discord: progress edits, and each terminal result shown exactly once.

`Deliverer.on_event` gets every ADDED/MODIFIED/DELETED of the namespace (from
the catch-up list at start and from the watch). Jobs the bot is not
responsible for (no job message, no `spec.notify.discord`) are ignored.

- Unfinished jobs with a job message: the rendered state goes to the updater,
  which throttles and coalesces (identical states are not re-sent).
- Finished jobs whose delivery is not recorded: claim → show → record, as
  described in `jobs.py`. The result edits the job message (the bot token
  after 15 minutes or a restart), or is posted as a new message for jobs
  created with kubectl (`spec.notify.discord.channelId`), or when the job
  message was deleted.
- Private jobs (`comfykube.dev/discord-private`, signed): the job message is
  ephemeral, so only the interaction token reaches it. Progress and the result
  go there while the token works; after it expired, after a restart, or when
  the message is gone, the result is posted in the requester's DMs (`POST
  /users/@me/channels`, then a message) and never in the channel. A user whose
  DMs are closed to the bot gets nothing posted: the record says
  `refused=DirectMessagesClosed` and `/jobs` still lists the job.
- A claim that never became a record (left by a process that died, or by an
  API error in this one) is checked against Discord before anything is
  posted: a job message (or a recent message in the channel) whose embed
  footer is `ns/name · <Phase>` is a result that was already posted.
  Kill-between-post-and-record therefore costs a read, not a duplicate.
  Being wrong the other way (never posting) would be worse than a rare
  duplicate, so when nothing is found the result is posted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import replace as dc_replace
from typing import Any

import aiohttp
import discord
from kubernetes_asyncio.client.exceptions import ApiException

from comfykube.errors import JobError
from comfykube.types import Phase
from comfykube.workflows import WorkflowLibrary
from comfykube_bot.grid import grid_file, with_derive_buttons
from comfykube_bot.images import DEFAULT_UPLOAD_LIMIT, ImageSource, prepare_images
from comfykube_bot.jobs import JobInfo, JobStore
from comfykube_bot.metrics import BotMetrics
from comfykube_bot.policy import Caller, Policy, Refusal
from comfykube_bot.previews import LivePreviews
from comfykube_bot.render import (
    MessagePayload,
    final_marker,
    render_deleted,
    render_final,
    render_progress,
    render_withheld,
)
from comfykube_bot.updater import MessageUpdater, Outcome, Target

log = logging.getLogger(__name__)

#: How many recent channel messages to look through when checking an interrupted notify delivery.
HISTORY_SCAN = 50
#: Results shown at the same time. A catch-up after a long outage may find hundreds: posting them
#: all at once would only meet Discord's rate limits (and read every image into memory at once).
MAX_PARALLEL_DELIVERIES = 4


class Deliverer:
    """Turns job events into message edits and result posts.

    `client` is the Discord side: channel facts, the bot user, message history of a channel.
    """

    def __init__(
        self,
        client: discord.Client,
        *,
        holder: str,
        jobs: JobStore,
        policy: Policy,
        updater: MessageUpdater,
        workflows: WorkflowLibrary,
        image_source: ImageSource,
        metrics: BotMetrics,
        previews: LivePreviews,
    ) -> None:
        self.client = client
        self.holder = holder
        self.jobs = jobs
        self.policy = policy
        self.updater = updater
        self.workflows = workflows
        self.image_source = image_source
        self.metrics = metrics
        self.previews = previews  # live previews of running jobs (previews.py)
        self._inflight: set[str] = set()
        self._cancelled_by_owner: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_PARALLEL_DELIVERIES)
        self.delivered: list[tuple[str, int | None]] = []  # (job key, message id): for tests

    # ------------------------------------------------------------------ events

    def target(self, job: JobInfo) -> Target | None:
        """Where the job message is (None for jobs without one)."""
        if job.message_id is None or job.channel_id is None:
            return None
        return Target(job.channel_id, job.message_id, job.guild_id, private=job.private)

    def mark_cancelled_by_owner(self, job: JobInfo) -> None:
        """The owner cancelled: the DELETED event must not overwrite the "cancelled" text."""
        self._cancelled_by_owner.add(job.key)

    async def on_event(self, kind: str, job: JobInfo) -> None:
        """Handle one event; never raises (one bad job must not stop the watch)."""
        try:
            await self._on_event(kind, job)
        except Exception:
            log.exception("[%s] handling %s failed", job.key, kind)

    async def _on_event(self, kind: str, job: JobInfo) -> None:
        self.metrics.watch_restarts.labels(type=kind).inc()
        if not job.wants_discord:
            return
        target = self.target(job)
        # Running jobs with a job message get their live preview polled; anything else stops it.
        self.previews.follow(job, target if kind != "DELETED" else None)
        if kind == "DELETED":
            if target is not None and not job.terminal and job.key not in self._cancelled_by_owner:
                self.updater.update(target, render_deleted(job))
            self._cancelled_by_owner.discard(job.key)
            return
        if job.terminal:
            if job.delivery.state == "done" or job.key in self._inflight:
                return
            self._spawn(self.deliver(job))
            return
        if target is not None and not job.deleting:
            self.updater.update(target, render_progress(job))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Cancel deliveries in progress (their claims are recovered by the next start)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------ delivery

    async def deliver(self, job: JobInfo) -> None:
        """Show a terminal job's result once (claim → show → record); see the module docstring."""
        if job.key in self._inflight:
            return
        self._inflight.add(job.key)
        try:
            for _ in range(3):  # a conflicting write (the operator refreshing URLs) means: read again
                if job.delivery.state == "done" or not job.terminal:
                    return
                delivery = job.delivery
                if delivery.state == "claimed":
                    # A claim without a record: its delivery died (another process, or an API error in
                    # this one). The result may be in Discord already; look before posting again.
                    found = await self.find_posted(job, since=delivery.at)
                    if found is not None:
                        log.info("[%s] result was already posted (message %s); recording it", job.key, found)
                        await self.jobs.record_delivery(job, found)
                        self._delivered(job.key, found)
                        return
                claimed = await self.jobs.claim_delivery(job, self.holder)
                if claimed is not None:
                    async with self._slots:
                        await self._show(claimed)
                    return
                fresh = await self.jobs.get(job.name, job.namespace)
                if fresh is None:
                    return
                job = fresh
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("[%s] delivery interrupted (%s); it is retried on the next event or start", job.key, exc)
        finally:
            self._inflight.discard(job.key)

    def _delivered(self, key: str, message_id: int | None) -> None:
        self.delivered.append((key, message_id))
        if len(self.delivered) > 1000:
            del self.delivered[:500]

    def upload_limit(self, job: JobInfo) -> int:
        """The smaller of what the interaction allowed and what the guild allows."""
        limits = [job.upload_limit] if job.upload_limit else []
        if job.guild_id is not None:
            guild = self.client.get_guild(job.guild_id)
            if guild is not None:
                limits.append(guild.filesize_limit)
        return min(limits) if limits else DEFAULT_UPLOAD_LIMIT

    async def final_payload(self, job: JobInfo, limit: int) -> MessagePayload:
        """The result message (images fitted under `limit`), or the failure/cancel text."""
        if job.phase is not Phase.SUCCEEDED:
            return render_final(job)
        if len(job.status.images) > 1:  # one 2×2 grid with U/V buttons (grid.py)
            grid, note = await grid_file(job, self.image_source, limit)
            if grid is not None:
                payload = render_final(job, (grid,), note=note)
                return dc_replace(payload, buttons=with_derive_buttons(payload.buttons, job))
        prepared = await prepare_images(job, self.image_source, limit)
        payload = render_final(job, prepared.files, note=prepared.note)
        return dc_replace(payload, buttons=with_derive_buttons(payload.buttons, job))

    def effective_model(self, job: JobInfo) -> str | None:
        """The checkpoint the job ran with: status.model, else the spec's, else the workflow's default."""
        if job.model_used:
            return job.model_used
        try:
            return self.workflows.get(job.spec.workflow).default("model")
        except JobError:
            return None

    async def channel_facts(self, channel_id: int) -> tuple[int | None, bool] | None:
        """(guild id, marked NSFW) of a channel, from the cache or Discord; None when the bot cannot see it."""
        channel: Any = self.client.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.client.fetch_channel(channel_id)
            except (discord.NotFound, discord.Forbidden):
                return None
        guild = getattr(channel, "guild", None)
        is_nsfw = getattr(channel, "is_nsfw", None)
        return (guild.id if guild is not None else None), bool(is_nsfw()) if callable(is_nsfw) else False

    async def admission(self, job: JobInfo) -> Refusal | None:
        """The rules a result must pass before it is shown (see docs/bot.md).

        A kubectl job (no bot signature) is posted only where `/imagine` could have been used,
        under the deny-list and the NSFW rule. A bot job is checked again against the model the
        operator actually used: a fallback checkpoint may be NSFW where the default was not.
        """
        if job.phase is not Phase.SUCCEEDED and job.created_by_bot:
            return None  # a failure text shows no picture
        channel_id = job.channel_id
        if channel_id is None:
            return None
        facts = await self.channel_facts(channel_id)
        if job.from_notify:
            if facts is None:
                return Refusal("NotifyChannelUnknown", f"the bot cannot see channel {channel_id}")
            guild_id, nsfw = facts
            return self.policy.check_notify(
                guild_id=guild_id, channel_id=channel_id, channel_nsfw=nsfw,
                prompt=job.spec.prompt, model=self.effective_model(job),
            )
        nsfw = facts[1] if facts is not None else False
        caller = Caller(user_id=job.requester or 0, guild_id=job.guild_id, channel_id=channel_id, channel_nsfw=nsfw)
        return self.policy.check_model(self.effective_model(job), caller)

    async def preview_allowed(self, job: JobInfo) -> bool:
        """A running job's live preview may be shown where its result could be (the model rule)."""
        channel_id = job.channel_id
        if channel_id is None:
            return False  # no job message: nothing to show it in
        facts = await self.channel_facts(channel_id)
        nsfw = facts[1] if facts is not None else False
        caller = Caller(user_id=job.requester or 0, guild_id=job.guild_id, channel_id=channel_id, channel_nsfw=nsfw)
        return self.policy.check_model(self.effective_model(job), caller) is None

    async def _show(self, job: JobInfo) -> None:
        refusal = await self.admission(job)
        if refusal is not None and job.from_notify:
            log.warning("[%s] not posting to channel %s: %s (%s)", job.key, job.channel_id, refusal.reason,
                        refusal.message)
            await self.jobs.record_delivery(job, None, refused=refusal.reason)
            self.metrics.refusals.labels(reason=refusal.reason).inc()
            self._delivered(job.key, None)
            return
        limit = self.upload_limit(job)
        if refusal is not None:
            log.info("[%s] result withheld from channel %s: %s", job.key, job.channel_id, refusal.reason)
            payload = render_withheld(job, refusal.message)
        else:
            payload = await self.final_payload(job, limit)
        target = self.target(job)
        message_id: int | None = None
        outcome = Outcome.GONE
        if target is not None:
            outcome = await self.updater.update(target, payload)
            for _ in range(4):
                if outcome is not Outcome.TOO_LARGE or not payload.files:
                    break
                # Discord's limit is lower than we knew (413): shrink below the largest file we sent.
                limit = min(limit, max(len(f.data) for f in payload.files)) // 2
                log.info("[%s] result too large for the channel; retrying with a %d-byte limit", job.key, limit)
                payload = await self.final_payload(job, limit)
                outcome = await self.updater.update(target, payload)
            message_id = target.message_id if outcome is Outcome.SENT else None
        if job.private and outcome in (Outcome.GONE, Outcome.NO_TOKEN):
            # The ephemeral job message is out of reach (token expired, a restart, or it is gone): the
            # requester's DMs, never the channel. A DM's upload limit is Discord's default, not the guild's.
            dm_limit = min(limit, DEFAULT_UPLOAD_LIMIT)
            if dm_limit < limit and payload.files:
                payload = await self.final_payload(job, dm_limit)
            outcome, message_id = await self._post_dm(job, payload, dm_limit)
            if outcome is Outcome.CLOSED:
                log.warning("[%s] private result not delivered: the requester's DMs are closed to the bot", job.key)
                await self.jobs.record_delivery(job, None, refused="DirectMessagesClosed")
                self.metrics.refusals.labels(reason="DirectMessagesClosed").inc()
                self._delivered(job.key, None)
                return
        elif outcome is Outcome.GONE:
            # No job message (kubectl job with notify), or it was deleted: post a new one.
            channel_id = job.channel_id
            if channel_id is not None:
                outcome, message_id = await self._post_fitting(job, channel_id, job.guild_id, payload, limit)
        if outcome in (Outcome.SENT, Outcome.GONE):
            # GONE here means there is nowhere left to show it: record that too, or every start would retry.
            await self.jobs.record_delivery(job, message_id)
            self.metrics.deliveries.labels(phase=job.phase.value).inc()
            self._delivered(job.key, message_id)
            log.info("[%s] %s delivered (message %s)", job.key, job.phase.value, message_id)
        else:
            # The claim stays: the next start checks Discord and finishes the delivery.
            log.warning("[%s] result could not be shown (%s); will retry on restart", job.key, outcome.value)

    async def _post_fitting(
        self, job: JobInfo, channel_id: int, guild_id: int | None, payload: MessagePayload, limit: int
    ) -> tuple[Outcome, int | None]:
        """Post the result, shrinking the images while Discord answers 413."""
        outcome, message_id = await self.updater.post(channel_id, payload, guild_id=guild_id)
        for _ in range(4):
            if outcome is not Outcome.TOO_LARGE or not payload.files:
                break
            limit = min(limit, max(len(f.data) for f in payload.files)) // 2
            payload = await self.final_payload(job, limit)
            outcome, message_id = await self.updater.post(channel_id, payload, guild_id=guild_id)
        return outcome, message_id

    async def dm_channel(self, job: JobInfo) -> int | None:
        """The requester's DM channel with the bot (`POST /users/@me/channels`; discord.py caches it)."""
        if job.requester is None:
            return None
        channel = await self.client.create_dm(discord.Object(job.requester))
        return channel.id

    async def _post_dm(self, job: JobInfo, payload: MessagePayload, limit: int) -> tuple[Outcome, int | None]:
        """A private job's result as a DM to its requester."""
        try:
            channel_id = await self.dm_channel(job)
        except discord.HTTPException as exc:
            log.warning("[%s] could not open a DM with the requester: %s %s", job.key, exc.status, exc.code)
            # A refusal (4xx) will not change on a retry; a rate limit or a server error may.
            return (Outcome.FAILED if exc.status == 429 or exc.status >= 500 else Outcome.CLOSED), None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("[%s] could not open a DM with the requester: %s", job.key, exc)
            return Outcome.FAILED, None
        if channel_id is None:
            return Outcome.GONE, None
        return await self._post_fitting(job, channel_id, None, payload, limit)

    # ------------------------------------------------------------------ recovery

    async def find_posted(self, job: JobInfo, since: float | None) -> int | None:
        """The id of a message that already shows this job's result, if Discord has one."""
        marker = final_marker(job)
        target = self.target(job)
        try:
            # An ephemeral (private) job message cannot be read with the bot token; its DMs can.
            if target is not None and not job.private:
                channel = self.client.get_partial_messageable(target.channel_id)
                try:
                    message = await channel.fetch_message(target.message_id)
                except discord.NotFound:
                    message = None
                if message is not None and _has_marker(message, marker):
                    return message.id
            channel_id = await self.dm_channel(job) if job.private else job.channel_id
            if channel_id is None:
                return None
            after = None
            if since is not None:
                after = discord.Object(discord.utils.time_snowflake(_utc(since - 120)))
            channel = self.client.get_partial_messageable(channel_id)
            async for message in channel.history(limit=HISTORY_SCAN, after=after, oldest_first=False):
                me = self.client.user
                if me is not None and message.author.id == me.id and _has_marker(message, marker):
                    return message.id
        except discord.HTTPException as exc:
            log.info("[%s] could not check Discord for an earlier delivery: %s", job.key, exc)
        return None


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(max(timestamp, 1_420_070_400), dt.UTC)


def _has_marker(message: discord.Message, marker: str) -> bool:
    return any((embed.footer.text or "") == marker for embed in message.embeds)


__all__ = ["Deliverer"]
