"""Who may do what: allow-lists, limits, the prompt deny-list and the NSFW rule. Pure functions.

Discord's own command permissions are only a hint an administrator can
change, so every rule here is enforced by the bot on every interaction. Each
refusal has a stable `reason` (for metrics and logs) and a `message` written
for the person who was refused (sent ephemerally).

Rules, in the order `/imagine` applies them:

1. access: DMs only with `BOT_ALLOW_DMS`; the guild, channel and role
   allow-lists (empty = no restriction; the role list applies in guilds only,
   DMs have no roles);
2. the prompt deny-list (regular expressions, case-insensitive, matched
   against the prompt, not the negative prompt: "no blood" is not a request);
3. NSFW-capable models (names or globs) only in channels marked NSFW;
4. the cooldown since the user's last job;
5. the user's active jobs (counted from ImageJobs) and the global queue cap.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from comfykube_bot.markdown import code, escape, fold
from comfykube_bot.settings import BotSettings


@dataclass(frozen=True)
class Refusal:
    """Why something is not allowed: `reason` for machines, `message` for the user."""

    reason: str
    message: str


@dataclass(frozen=True)
class Caller:
    """The facts about an interaction that the rules look at."""

    user_id: int
    guild_id: int | None
    channel_id: int
    role_ids: frozenset[int] = field(default_factory=frozenset)
    channel_nsfw: bool = False
    manage_messages: bool = False

    @property
    def in_dm(self) -> bool:
        """True for direct messages and group DMs (no guild)."""
        return self.guild_id is None


def _format_duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


class Policy:
    """The configured rules; construct once from settings."""

    def __init__(self, settings: BotSettings) -> None:
        self.allowed_guilds = frozenset(settings.bot_allowed_guilds)
        self.allowed_channels = frozenset(settings.bot_allowed_channels)
        self.allowed_roles = frozenset(settings.bot_allowed_roles)
        self.moderator_roles = frozenset(settings.bot_moderator_roles)
        self.allow_dms = settings.bot_allow_dms
        self.max_active = settings.bot_max_active_jobs
        self.cooldown = settings.bot_cooldown_seconds
        self.queue_cap = settings.bot_queue_cap
        self.deny = [re.compile(p, re.IGNORECASE) for p in settings.bot_deny_patterns]
        self.nsfw_models = [p.lower() for p in settings.bot_nsfw_models]

    # ------------------------------------------------------------------ access

    def check_access(self, caller: Caller) -> Refusal | None:
        """Guild, channel, role and DM rules; None when the caller may use the bot here."""
        if caller.in_dm:
            if not self.allow_dms:
                return Refusal("DirectMessagesOff", "I don't take requests in direct messages; use me in a server.")
            return None
        if self.allowed_guilds and caller.guild_id not in self.allowed_guilds:
            return Refusal("GuildNotAllowed", "I'm not enabled in this server.")
        if self.allowed_channels and caller.channel_id not in self.allowed_channels:
            where = ", ".join(f"<#{c}>" for c in sorted(self.allowed_channels)[:5])
            return Refusal("ChannelNotAllowed", f"I don't render in this channel. Try {where}.")
        if self.allowed_roles and not (caller.role_ids & self.allowed_roles) and not self.is_moderator(caller):
            roles = ", ".join(f"<@&{r}>" for r in sorted(self.allowed_roles)[:5])
            return Refusal("RoleNotAllowed", f"You need one of these roles to use me: {roles}.")
        return None

    def is_moderator(self, caller: Caller) -> bool:
        """Moderator roles from config, or Manage Messages in the channel (Discord's own moderator right)."""
        return bool(caller.role_ids & self.moderator_roles) or caller.manage_messages

    def may_cancel(self, caller: Caller, owner_id: int | None) -> Refusal | None:
        """Only the person who asked may cancel a job."""
        if owner_id is not None and caller.user_id == owner_id:
            return None
        return Refusal("NotOwner", "Only the person who asked for this picture can cancel it.")

    def may_delete(self, caller: Caller, owner_id: int | None) -> Refusal | None:
        """The owner or a moderator may delete a job and its message."""
        if (owner_id is not None and caller.user_id == owner_id) or self.is_moderator(caller):
            return None
        return Refusal("NotOwner", "Only the person who asked for this picture or a moderator can delete it.")

    # ------------------------------------------------------------------ content

    def check_prompt(self, prompt: str) -> Refusal | None:
        """The deny-list: a clear refusal naming the term, never silent stripping."""
        # Matched as people read it: full-width or styled letters and zero-width characters
        # must not walk around a pattern.
        folded = fold(prompt)
        for pattern in self.deny:
            match = pattern.search(folded)
            if match is not None:
                term = match.group(0).strip() or pattern.pattern
                return Refusal("PromptDenied", f"I can't draw that: “{escape(term[:60])}” is not allowed here.")
        return None

    def is_nsfw_model(self, model: str | None) -> bool:
        """True when `model` matches a configured NSFW name or glob (case-insensitive)."""
        if not model:
            return False
        name = model.lower()
        base = name.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(base, p) for p in self.nsfw_models)

    def check_model(self, model: str | None, caller: Caller) -> Refusal | None:
        """NSFW-capable models only where the channel is marked NSFW (age-restricted)."""
        if self.is_nsfw_model(model) and not caller.channel_nsfw:
            return Refusal(
                "NsfwModel", f"The model {code(model or '')} may only be used in channels marked NSFW (age-restricted)."
            )
        return None

    def check_notify(
        self, *, guild_id: int | None, channel_id: int, channel_nsfw: bool, prompt: str, model: str | None
    ) -> Refusal | None:
        """The rules for a job made outside the chat that asks for a post (`spec.notify.discord`).

        The same guild and channel allow-lists, deny-list and NSFW rule as `/imagine`; the role
        list does not apply (nobody in Discord asked). Only guild channels: kubectl cannot DM people.
        """
        if guild_id is None:
            return Refusal("NotifyNotAGuildChannel", f"channel {channel_id} is not a server channel")
        if self.allowed_guilds and guild_id not in self.allowed_guilds:
            return Refusal("GuildNotAllowed", f"the bot is not enabled in server {guild_id}")
        if self.allowed_channels and channel_id not in self.allowed_channels:
            return Refusal("ChannelNotAllowed", f"the bot does not post in channel {channel_id}")
        caller = Caller(user_id=0, guild_id=guild_id, channel_id=channel_id, channel_nsfw=channel_nsfw)
        return self.check_prompt(prompt) or self.check_model(model, caller)

    def visible_models(self, models: Iterable[str], caller: Caller) -> list[str]:
        """Models to suggest in autocomplete here: NSFW ones only in NSFW channels."""
        return [m for m in models if caller.channel_nsfw or not self.is_nsfw_model(m)]

    # ------------------------------------------------------------------ limits

    def check_cooldown(self, seconds_since_last: float | None) -> Refusal | None:
        """Too soon after the user's previous job."""
        if seconds_since_last is None or self.cooldown <= 0 or seconds_since_last >= self.cooldown:
            return None
        wait = self.cooldown - seconds_since_last
        return Refusal("Cooldown", f"Slow down a little: you can ask again in {_format_duration(wait)}.")

    def check_quota(self, active_for_user: int, waiting_total: int) -> Refusal | None:
        """The per-user active-job cap, then the global queue cap."""
        if active_for_user >= self.max_active:
            plural = "job" if self.max_active == 1 else "jobs"
            return Refusal(
                "TooManyActiveJobs",
                f"You already have {active_for_user} {plural} in progress (limit {self.max_active}). "
                "Wait for one to finish or cancel it.",
            )
        if waiting_total >= self.queue_cap:
            return Refusal(
                "QueueFull", f"The queue is full ({waiting_total} jobs waiting). Please try again in a few minutes."
            )
        return None


__all__ = ["Caller", "Policy", "Refusal"]
