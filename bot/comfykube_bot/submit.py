"""From an interaction to an ImageJob: defer, check, post the job message, create the job.

Used by `/imagine` and by the Reroll button; both go through `Submitter.submit`.

Order of work, and why:

1. **defer** (ephemeral "thinking…") before anything else: Discord drops an
   interaction that is not answered within 3 s, and the checks below call the
   Kubernetes API. The deferral is ephemeral so that any refusal that follows
   is seen by the requester only;
2. checks that need nothing but memory (access, options, deny-list, NSFW
   model), then the ones that need the cluster (the user's active jobs by
   label, the queue), under a per-user lock so two quick clicks cannot both
   slip under the limit;
3. fill the ephemeral reply, then post the **public job message** as a
   followup (a second followup is a new message; it can be edited through
   the interaction token for 15 minutes and through the bot token after). With
   private replies (`/settings`, or a job derived from a private one) that
   followup is **ephemeral** instead: only the token reaches it, and a result
   that comes later goes by DM (`delivery.py`);
4. create the ImageJob with that message's id in its annotations, so the
   job knows its message from its very first version (a bot restarted at any
   later moment finds it). The job's name derives from the interaction id, so
   a replayed interaction finds the existing job instead of creating a second.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

import discord
from kubernetes_asyncio.client.exceptions import ApiException

from comfykube.errors import JobError
from comfykube.names import (
    LABEL_CHANNEL,
    LABEL_GUILD,
    LABEL_MANAGED_BY,
    LABEL_REQUESTER,
    MANAGED_BY_BOT,
)
from comfykube.types import ImageJobSpec
from comfykube.workflows import WorkflowLibrary
from comfykube_bot.checkpoints import CheckpointCache
from comfykube_bot.flags import FlagError, parse_inline_flags
from comfykube_bot.jobs import JobInfo, JobStore
from comfykube_bot.markdown import code
from comfykube_bot.metrics import BotMetrics
from comfykube_bot.policy import Caller, Policy, Refusal
from comfykube_bot.prefs import PrefsStore, UserPrefs, apply_prefs
from comfykube_bot.render import render_progress, truncate
from comfykube_bot.settings import BotSettings
from comfykube_bot.signing import Signer
from comfykube_bot.specs import (
    ImagineOptions,
    OptionError,
    Origin,
    build_manifest,
    build_spec,
    job_name,
)
from comfykube_bot.updater import MessageUpdater, message_kwargs
from comfykube_bot.uploads import Uploads

log = logging.getLogger(__name__)


def caller_of(interaction: discord.Interaction[Any]) -> Caller:
    """The policy-relevant facts of an interaction."""
    user = interaction.user
    role_ids: set[int] = set()
    for role in getattr(user, "roles", None) or ():
        role_ids.add(role.id)
    # Roles of a member whose guild is not cached are only in the raw id list.
    role_ids.update(int(r) for r in getattr(user, "_roles", None) or ())
    role_ids.discard(interaction.guild_id or 0)  # @everyone is not a role anyone "has"
    channel = interaction.channel
    is_nsfw = getattr(channel, "is_nsfw", None)
    return Caller(
        user_id=user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id or 0,
        role_ids=frozenset(role_ids),
        channel_nsfw=bool(is_nsfw()) if callable(is_nsfw) else False,
        manage_messages=bool(interaction.permissions.manage_messages) if interaction.guild_id else False,
    )


async def reply(interaction: discord.Interaction[Any], text: str) -> None:
    """An ephemeral answer, whether or not the interaction was deferred already."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(truncate(text, 2000), ephemeral=True)
        else:
            await interaction.response.send_message(truncate(text, 2000), ephemeral=True)
    except discord.HTTPException as exc:
        log.info("could not answer interaction %s: %s", interaction.id, exc)


class Submitter:
    """Admission and creation of ImageJobs for one bot.

    `client` posts the job messages that reply to a grid (a channel message, not a followup).
    """

    def __init__(
        self,
        client: discord.Client,
        *,
        settings: BotSettings,
        policy: Policy,
        jobs: JobStore,
        prefs: PrefsStore,
        workflows: WorkflowLibrary,
        checkpoints: CheckpointCache,
        updater: MessageUpdater,
        metrics: BotMetrics,
        signer: Signer,
        uploads: Uploads | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.policy = policy
        self.jobs = jobs
        self.prefs = prefs
        self.workflows = workflows
        self.checkpoints = checkpoints
        self.updater = updater
        self.metrics = metrics
        self.signer = signer
        #: `/imagine image:` (uploads.py); None: the option is refused as not set up.
        self.uploads = uploads
        self._last_submit: dict[int, float] = {}
        self._user_locks: dict[int, asyncio.Lock] = {}

    # ------------------------------------------------------------------ entry points

    async def defer(self, interaction: discord.Interaction[Any], received: float) -> bool:
        """Acknowledge within Discord's 3 s (ephemeral "thinking…"); False if Discord no longer takes it."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException as exc:  # 10062: too late, or already answered
            log.warning("could not defer interaction %s: %s", interaction.id, exc)
            return False
        self.metrics.defer_seconds.observe(time.perf_counter() - received)
        return True

    async def imagine(self, interaction: discord.Interaction[Any], options: ImagineOptions, received: float) -> None:
        """`/imagine`: the whole flow, see the module docstring."""
        if not await self.defer(interaction, received):
            return
        caller = caller_of(interaction)
        refusal = self.policy.check_access(caller)
        if refusal is not None:
            await self.refuse(interaction, refusal, "imagine")
            return
        try:
            parsed = parse_inline_flags(options.prompt)
            prefs = await self.prefs_of(caller)
            typed = options.merged_with_flags(parsed.options, parsed.text)
            merged = apply_prefs(typed, prefs)
            spec = build_spec(
                merged, base_size=self.settings.bot_base_size, ttl_seconds=self.settings.bot_job_ttl_seconds
            )
        except FlagError as exc:
            await self.refuse(interaction, Refusal("InvalidFlag", f"⚠️ {exc.message}"), "imagine")
            return
        except OptionError as exc:
            await self.refuse(interaction, Refusal("InvalidOption", f"⚠️ {exc.message}"), "imagine")
            return
        if options.image is not None or options.strength is not None:
            # A picture to start from: checked, stored and made an img2img job there (uploads.py).
            if self.uploads is None:
                await self.refuse(interaction, Refusal("UploadsUnavailable", "⚠️ `image` is not set up here."),
                                  "imagine")
                return
            await self.uploads.imagine(self, interaction, caller, options, typed, spec, private=prefs.private)
            return
        await self.submit(interaction, caller, spec, spoiler=options.spoiler, command="imagine", private=prefs.private)

    async def reroll(self, interaction: discord.Interaction[Any], source: JobInfo, spec: ImageJobSpec) -> None:
        """The Reroll button (already deferred): the same spec with a new seed, for whoever clicked."""
        caller = caller_of(interaction)
        refusal = self.policy.check_access(caller)
        if refusal is not None:
            await self.refuse(interaction, refusal, "reroll")
            return
        await self.submit(interaction, caller, spec, spoiler=source.spoiler, command="reroll", reroll_of=source.key,
                          private=True if source.private else None)

    # ------------------------------------------------------------------ shared

    async def prefs_of(self, caller: Caller) -> UserPrefs:
        """The caller's /settings (the defaults when the ConfigMap cannot be read: the request still goes through).

        The defaults then include private replies: not knowing whether the user asked for privacy must not
        put their prompt in the channel (a private reply to someone who did not ask costs nothing).
        """
        try:
            return await self.prefs.get(caller.guild_id, caller.user_id)
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("reading /settings of user %s failed (%s); using the defaults, privately", caller.user_id,
                        exc)
            return UserPrefs(private=True)

    async def refuse(self, interaction: discord.Interaction[Any], refusal: Refusal, command: str) -> None:
        """Count and answer a refusal (ephemeral)."""
        self.metrics.refusals.labels(reason=refusal.reason).inc()
        self.metrics.interactions.labels(kind="command", name=command, outcome="refused").inc()
        log.info("refused %s for user %s: %s", command, interaction.user.id, refusal.reason)
        await reply(interaction, refusal.message)

    async def check_content(self, spec: ImageJobSpec, caller: Caller) -> Refusal | None:
        """Deny-list, NSFW model rule, checkpoint offered, workflow accepts the spec."""
        refusal = self.policy.check_prompt(spec.prompt)
        if refusal is not None:
            return refusal
        library = self.workflows
        try:
            workflow = library.get(spec.workflow)
            # Input images are fetched by the operator; here only their names matter (required ones given).
            names = {image.name: "admission-check.png" for image in spec.images or ()}
            workflow.render(spec, seed=0, output_prefix="admission-check", images=names)
        except JobError as exc:
            text = exc.message.replace("spec.negativePrompt", "`negative`").replace("spec.", "")
            return Refusal("InvalidOption", f"⚠️ {text}")
        model = spec.model or workflow.default("model")
        refusal = self.policy.check_model(model, caller)
        if refusal is not None:
            return refusal
        if spec.model:
            offered = await self.checkpoints.check(spec.model)
            if offered is not None:
                shown = ", ".join(code(m) for m in self.policy.visible_models(offered, caller)[:15]) or "none"
                text = f"⚠️ `model`: {code(spec.model)} is not installed on the renderer. Available: {shown}"
                return Refusal("UnknownModel", text)
        return None

    def _seconds_since_last(self, user_id: int, user_jobs: list[JobInfo]) -> float | None:
        """Since the user's last job: this process's memory, or the newest ImageJob (survives restarts)."""
        candidates: list[float] = []
        last = self._last_submit.get(user_id)
        if last is not None:
            candidates.append(time.monotonic() - last)
        created = [j.created_at for j in user_jobs if j.created_at is not None and j.created_by_bot]
        if created:
            candidates.append((dt.datetime.now(dt.UTC) - max(created)).total_seconds())
        return min(candidates) if candidates else None

    async def submit(
        self,
        interaction: discord.Interaction[Any],
        caller: Caller,
        spec: ImageJobSpec,
        *,
        spoiler: bool,
        command: str,
        reroll_of: str | None = None,
        reply_to: int | None = None,
        private: bool | None = None,
    ) -> None:
        """Checks that need I/O, then message + ImageJob (the interaction is deferred already).

        `reply_to`: post the job message as a reply to that message (Upscale/Vary of a grid; not for
        private jobs, whose message is ephemeral). `private`: private replies; None reads the caller's
        `/settings` (a job derived from a private job passes True: it stays private whoever clicked).
        """
        refusal = await self.check_content(spec, caller)
        if refusal is not None:
            await self.refuse(interaction, refusal, command)
            return
        if private is None:
            private = (await self.prefs_of(caller)).private
        lock = self._user_locks.setdefault(caller.user_id, asyncio.Lock())
        async with lock:
            try:
                user_jobs, all_jobs = await asyncio.gather(
                    self.jobs.list_for_user(caller.user_id), self.jobs.list_jobs()
                )
            except (ApiException, OSError, TimeoutError) as exc:
                log.error("listing ImageJobs failed: %s", exc)
                await reply(interaction, "⚠️ I can't reach the render queue right now. Please try again in a minute.")
                self.metrics.interactions.labels(kind="command", name=command, outcome="error").inc()
                return
            refusal = self.policy.check_cooldown(self._seconds_since_last(caller.user_id, user_jobs))
            active = sum(1 for j in user_jobs if j.active)
            waiting = sum(1 for j in all_jobs if j.waiting)
            refusal = refusal or self.policy.check_quota(active, waiting)
            if refusal is not None:
                await self.refuse(interaction, refusal, command)
                return
            self._last_submit[caller.user_id] = time.monotonic()
            await self._create(interaction, caller, spec, spoiler=spoiler, command=command, reroll_of=reroll_of,
                               active=active, reply_to=None if private else reply_to, private=private)

    async def _create(
        self,
        interaction: discord.Interaction[Any],
        caller: Caller,
        spec: ImageJobSpec,
        *,
        spoiler: bool,
        command: str,
        reroll_of: str | None,
        active: int,
        reply_to: int | None = None,
        private: bool = False,
    ) -> None:
        namespace = self.jobs.namespace
        name = job_name(interaction.id)
        provisional = JobInfo(
            namespace=namespace,
            name=name,
            uid="",
            resource_version=None,
            spec=spec,
            labels={
                LABEL_REQUESTER: str(caller.user_id),
                LABEL_GUILD: str(caller.guild_id or "dm"),
                LABEL_CHANNEL: str(caller.channel_id),
                LABEL_MANAGED_BY: MANAGED_BY_BOT,
            },
        )
        try:
            # The ephemeral "thinking…" message must be filled first: the first followup after a
            # deferral replaces it (and would inherit its ephemerality).
            await interaction.edit_original_response(content=f"🎨 Submitting `{name}`…")
            first = render_progress(provisional)
            if reply_to is not None:
                # A reply needs a channel message (a followup cannot reference one); edited with the bot token.
                reference = discord.MessageReference(
                    message_id=reply_to, channel_id=caller.channel_id, fail_if_not_exists=False
                )
                channel = self.client.get_partial_messageable(caller.channel_id, guild_id=caller.guild_id)
                message = await channel.send(**message_kwargs(first, for_new=True), reference=reference)
                self.metrics.posts.labels(outcome="ok").inc()
                self.updater.remember(message.id, first)
            else:
                # Private: an ephemeral followup, seen by the requester only and reachable by the token only.
                message = await interaction.followup.send(
                    **message_kwargs(first, for_new=True), ephemeral=private, wait=True
                )
                self.updater.remember(message.id, first)
                # Before the job exists: its first status change may arrive right after the create.
                self.updater.register_token(message.id, interaction.followup, interaction.expires_at)
        except discord.HTTPException as exc:
            log.error("could not post the job message for %s: %s", name, exc)
            self.metrics.interactions.labels(kind="command", name=command, outcome="error").inc()
            await reply(interaction, "⚠️ I couldn't post in this channel. Check my permissions here.")
            return
        origin = Origin(
            user_id=caller.user_id,
            guild_id=caller.guild_id,
            channel_id=caller.channel_id,
            message_id=message.id,
            interaction_id=interaction.id,
            upload_limit=interaction.filesize_limit,
            spoiler=spoiler,
            reroll_of=reroll_of,
            private=private,
        )
        try:
            manifest = build_manifest(spec, name, origin, namespace=namespace, signer=self.signer)
            job = await self.jobs.create(manifest)
        except (ApiException, OSError, TimeoutError) as exc:
            detail = exc.reason if isinstance(exc, ApiException) else type(exc).__name__
            log.error("creating ImageJob %s/%s failed: %s", namespace, name, exc)
            self.metrics.interactions.labels(kind="command", name=command, outcome="error").inc()
            try:
                await interaction.followup.edit_message(
                    message.id, content=f"❌ **Could not submit** — the render queue refused it ({detail}).",
                    embeds=[], view=None,
                )
                await interaction.edit_original_response(content="⚠️ Submitting failed; please try again later.")
            except discord.HTTPException:
                pass
            return
        self.metrics.jobs_created.inc()
        self.metrics.interactions.labels(kind="command", name=command, outcome="created").inc()
        log.info("[%s] created for user %s in channel %s (message %s)", job.key, caller.user_id, caller.channel_id,
                 message.id)
        limit = self.settings.bot_max_active_jobs
        text = f"✅ Queued as `{name}` · {active + 1} of {limit} active job{'s' if limit != 1 else ''}."
        if private:
            text += "\n🔒 Private: only you see it here. A result after about 15 minutes comes by DM."
        try:
            await interaction.edit_original_response(content=text)
        except discord.HTTPException as exc:
            log.info("could not confirm %s to the user: %s", name, exc)


__all__ = ["Submitter", "caller_of", "reply"]
