"""What the job buttons and the list commands do. Every answer is ephemeral.

All state comes from the ImageJob named in the button's custom id, so these
work the same before and after a restart. Each handler acknowledges first
(Discord's 3 s), then reads the job from the Kubernetes API.

- Reroll: the same spec with a new seed, admitted like a new `/imagine` for
  whoever clicked (their limits, their channel's rules);
- Cancel: the owner only, while the job is unfinished: deleting the ImageJob
  makes the operator cancel the prompt in ComfyUI;
- Delete: the owner or a moderator: the message and the job go;
- Fresh link: anyone who can see the message gets new presigned URLs.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import discord
from kubernetes_asyncio.client.exceptions import ApiException

from comfykube.errors import JobError
from comfykube.settings import Settings
from comfykube.storage import make_store
from comfykube.types import Phase
from comfykube_bot.delivery import Deliverer
from comfykube_bot.jobs import JobInfo, JobStore
from comfykube_bot.metrics import BotMetrics
from comfykube_bot.policy import Policy
from comfykube_bot.render import render_deleted, render_job_list, render_queue
from comfykube_bot.specs import OptionError, reroll_spec
from comfykube_bot.submit import Submitter, caller_of, reply
from comfykube_bot.updater import MessageUpdater

log = logging.getLogger(__name__)


class Actions:
    """Button and list-command handlers for one bot.

    `client` deletes job messages (Delete); `core` is where the images are stored (Fresh link).
    """

    def __init__(
        self,
        client: discord.Client,
        *,
        core: Settings,
        jobs: JobStore,
        policy: Policy,
        submitter: Submitter,
        deliverer: Deliverer,
        updater: MessageUpdater,
        metrics: BotMetrics,
        queue_cap: int,
    ) -> None:
        self.client = client
        self.core = core
        self.jobs = jobs
        self.policy = policy
        self.submitter = submitter
        self.deliverer = deliverer
        self.updater = updater
        self.metrics = metrics
        self.queue_cap = queue_cap

    def _count(self, kind: str, name: str, outcome: str) -> None:
        self.metrics.interactions.labels(kind=kind, name=name, outcome=outcome).inc()

    async def button(self, interaction: discord.Interaction[Any], action: str, namespace: str, name: str) -> None:
        """Dispatch one click (see the module docstring)."""
        received = time.perf_counter()
        if not await self.submitter.defer(interaction, received):
            return
        if namespace != self.jobs.namespace:
            await reply(interaction, "That job belongs to another deployment of this bot.")
            self._count("button", action, "foreign")
            return
        try:
            job = await self.jobs.get(name, namespace)
        except (ApiException, OSError, TimeoutError) as exc:
            log.error("reading ImageJob %s/%s failed: %s", namespace, name, exc)
            await reply(interaction, "⚠️ I can't reach the render queue right now. Please try again in a minute.")
            self._count("button", action, "error")
            return
        handler = {"reroll": self.reroll, "cancel": self.cancel, "delete": self.delete, "link": self.fresh_link}[action]
        await handler(interaction, job)

    async def reroll(self, interaction: discord.Interaction[Any], job: JobInfo | None) -> None:
        """Same spec, new seed."""
        if job is None:
            await reply(interaction, "That job no longer exists, so I can't reroll it.")
            self._count("button", "reroll", "missing")
            return
        try:
            spec = reroll_spec(job.spec)
        except OptionError as exc:
            await reply(interaction, f"⚠️ This job can't be rerolled: {exc.message}")
            return
        await self.submitter.reroll(interaction, job, spec)

    async def cancel(self, interaction: discord.Interaction[Any], job: JobInfo | None) -> None:
        """Owner only; deleting the ImageJob makes the operator cancel it in ComfyUI."""
        if job is None:
            await reply(interaction, "That job no longer exists.")
            self._count("button", "cancel", "missing")
            return
        refusal = self.policy.may_cancel(caller_of(interaction), job.requester)
        if refusal is not None:
            self.metrics.refusals.labels(reason=refusal.reason).inc()
            self._count("button", "cancel", "refused")
            await reply(interaction, refusal.message)
            return
        if job.terminal:
            await reply(interaction, f"That job has already finished ({job.phase.value}).")
            return
        self.deliverer.mark_cancelled_by_owner(job)
        await self.jobs.delete(job.name, job.namespace)
        target = self.deliverer.target(job)
        if target is not None:
            self.updater.update(target, render_deleted(job, by_owner=True))
        log.info("[%s] cancelled by its owner %s", job.key, interaction.user.id)
        self._count("button", "cancel", "ok")
        await reply(interaction, f"✖ Cancelled `{job.name}`.")

    async def delete(self, interaction: discord.Interaction[Any], job: JobInfo | None) -> None:
        """Owner or moderator: delete the message and the job."""
        owner = job.requester if job is not None else None
        refusal = self.policy.may_delete(caller_of(interaction), owner)
        if refusal is not None and not (job is None and self.policy.is_moderator(caller_of(interaction))):
            self.metrics.refusals.labels(reason=refusal.reason).inc()
            self._count("button", "delete", "refused")
            await reply(interaction, refusal.message)
            return
        if job is not None:
            self.deliverer.mark_cancelled_by_owner(job)
            await self.jobs.delete(job.name, job.namespace)
        message = interaction.message
        if message is not None:
            self.updater.forget(message.id)
            try:
                await self.client.get_partial_messageable(message.channel.id).get_partial_message(message.id).delete()
            except discord.NotFound:
                pass
            except discord.HTTPException as exc:
                log.warning("could not delete message %s: %s", message.id, exc)
                await reply(interaction, "I deleted the job but couldn't delete the message (missing permission?).")
                return
        self._count("button", "delete", "ok")
        await reply(interaction, "🗑️ Deleted.")

    async def fresh_link(self, interaction: discord.Interaction[Any], job: JobInfo | None) -> None:
        """New presigned URLs for the job's images (ephemeral)."""
        if job is None or job.phase is not Phase.SUCCEEDED or not job.status.images:
            await reply(interaction, "There is no stored image for this job (any more).")
            self._count("button", "link", "missing")
            return
        store = make_store(self.core)
        expiry = self.core.presign_expiry_seconds
        lines: list[str] = []
        expires_at: dt.datetime | None = None
        try:
            for index, image in enumerate(job.status.images):
                url, expires_at = await store.presign(image.key, expiry)
                lines.append(f"[Image {index + 1}]({url})")
        except (JobError, ValueError) as exc:
            log.warning("[%s] presigning failed: %s", job.key, exc)
            await reply(interaction, "⚠️ The image store did not answer; please try again in a minute.")
            self._count("button", "link", "error")
            return
        when = f" · expires <t:{int(expires_at.timestamp())}:R>" if expires_at else ""
        self._count("button", "link", "ok")
        await reply(interaction, f"🔗 Fresh link{'s' if len(lines) > 1 else ''}{when}\n" + "\n".join(lines))

    # ------------------------------------------------------------------ list commands

    async def jobs_command(self, interaction: discord.Interaction[Any]) -> None:
        """`/jobs`: the caller's recent jobs, by the requester label."""
        if not await self.submitter.defer(interaction, time.perf_counter()):
            return
        caller = caller_of(interaction)
        refusal = self.policy.check_access(caller)
        if refusal is not None:
            await self.submitter.refuse(interaction, refusal, "jobs")
            return
        try:
            jobs = await self.jobs.list_for_user(caller.user_id)
        except (ApiException, OSError, TimeoutError) as exc:
            log.error("listing jobs failed: %s", exc)
            await reply(interaction, "⚠️ I can't reach the render queue right now.")
            return
        self._count("command", "jobs", "ok")
        await reply(
            interaction,
            render_job_list(jobs[:10], caller.guild_id, title="**Your recent jobs**", empty="You have no jobs yet."),
        )

    async def queue_command(self, interaction: discord.Interaction[Any]) -> None:
        """`/queue`: what is rendering and waiting, oldest first."""
        if not await self.submitter.defer(interaction, time.perf_counter()):
            return
        caller = caller_of(interaction)
        refusal = self.policy.check_access(caller)
        if refusal is not None:
            await self.submitter.refuse(interaction, refusal, "queue")
            return
        try:
            jobs = [j for j in await self.jobs.list_jobs() if j.active]
        except (ApiException, OSError, TimeoutError) as exc:
            log.error("listing jobs failed: %s", exc)
            await reply(interaction, "⚠️ I can't reach the render queue right now.")
            return
        jobs.reverse()  # list() is newest first; the queue reads oldest first
        self._count("command", "queue", "ok")
        await reply(interaction, render_queue(jobs, cap=self.queue_cap))


__all__ = ["Actions"]
