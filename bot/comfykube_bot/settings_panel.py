"""`/settings` and `/settings reset`: the panel of a user's defaults (selects and a toggle).

The toggle is "Private replies": `/imagine` then answers ephemerally and a
late result comes by DM (`submit.py`, `delivery.py`).

The panel is an ephemeral message; its components carry only which setting
they change (`ks:<setting>`), and the user is whoever clicks, so the panel
keeps working after a restart (the values live in the ConfigMap, `prefs.py`).
Each change is acknowledged first (a deferred update, inside Discord's 3 s),
then written, then the panel is redrawn with what was stored.

The negative prompt is free text: its button opens a modal prefilled with the
stored value (an empty submission clears it). The modal is sent stopped and its
submission is routed by its custom id (`modals.py`), so it still saves after a
restart.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import discord
from kubernetes_asyncio.client.exceptions import ApiException

from comfykube.types import MAX_PROMPT_LENGTH
from comfykube_bot.checkpoints import CheckpointCache
from comfykube_bot.markdown import code, escape
from comfykube_bot.metrics import BotMetrics
from comfykube_bot.modals import send_stopped
from comfykube_bot.policy import Policy
from comfykube_bot.prefs import COUNTS, STEP_CHOICES, PrefsStore, UserPrefs
from comfykube_bot.render import truncate
from comfykube_bot.specs import ASPECTS
from comfykube_bot.submit import Submitter, caller_of, reply

T = TypeVar("T")

log = logging.getLogger(__name__)

SETTING_ID_PATTERN = r"ks:(?P<setting>aspect|count|steps|model|private|negative|reset)"
DEFAULT_VALUE = "-"
#: Discord's limit on a modal text input.
NEGATIVE_MAX = min(MAX_PROMPT_LENGTH, 4000)
#: The negative-prompt modal's custom id (the user is whoever submits it).
NEGATIVE_MODAL_ID = "ks-negative-modal"


def panel_text(prefs: UserPrefs) -> str:
    """The panel's summary of what is set."""

    def show(value: Any) -> str:
        return "default" if value is None else code(str(value))

    negative = escape(truncate(prefs.negative, 200)) if prefs.negative else "none"
    return "\n".join([
        "**Your /imagine defaults** (an option you type always wins)",
        f"Aspect: {show(prefs.aspect)} · Images: {show(prefs.count)} · Steps: {show(prefs.steps)}",
        f"Model: {show(prefs.model)}",
        f"Negative prompt: {negative}",
        "Private replies: **on** — only you see your jobs here; a result after about 15 minutes comes by DM"
        if prefs.private else "Private replies: off — job messages are posted in the channel",
    ])


def _select(setting: str, placeholder: str, choices: list[str], current: Any) -> discord.ui.Select[Any]:
    options = [discord.SelectOption(label="Default", value=DEFAULT_VALUE, default=current is None)]
    for choice in choices[:24]:
        options.append(discord.SelectOption(label=truncate(choice, 100), value=choice, default=str(current) == choice))
    return discord.ui.Select(custom_id=f"ks:{setting}", placeholder=placeholder, options=options)


def build_panel(prefs: UserPrefs, models: list[str]) -> discord.ui.View:
    """Four selects and a row of buttons: private replies, negative prompt, reset (a stopped view; `SettingItem`
    routes clicks)."""
    view = discord.ui.View(timeout=None)
    rows: list[discord.ui.Item[Any]] = [
        _select("aspect", "Aspect ratio", list(ASPECTS), prefs.aspect),
        _select("count", "Images per job (4: a grid)", [str(c) for c in COUNTS], prefs.count),
        _select("steps", "Sampling steps", [str(s) for s in STEP_CHOICES], prefs.steps),
        _select("model", "Model", [m for m in models if len(m) <= 100], prefs.model),
    ]
    for row, item in enumerate(rows):
        item.row = row
        view.add_item(item)
    buttons: list[discord.ui.Button[Any]] = [
        # A toggle: the label says what is set now, a click flips it (the stored value, not the label, decides).
        discord.ui.Button(label=f"Private replies: {'on' if prefs.private else 'off'}", custom_id="ks:private",
                          style=discord.ButtonStyle.success if prefs.private else discord.ButtonStyle.secondary,
                          emoji="🔒", row=4),
        discord.ui.Button(label="Negative prompt…", custom_id="ks:negative", style=discord.ButtonStyle.secondary,
                          row=4),
        discord.ui.Button(label="Reset", custom_id="ks:reset", style=discord.ButtonStyle.danger, row=4),
    ]
    for button in buttons:
        view.add_item(button)
    view.stop()
    return view


def _parse(setting: str, value: str) -> dict[str, Any]:
    if value == DEFAULT_VALUE:
        return {setting: None}
    if setting in ("count", "steps"):
        number = int(value)
        allowed = COUNTS if setting == "count" else STEP_CHOICES
        if number not in allowed:
            raise ValueError(f"{setting} {number} is not offered")
        return {setting: number}
    if setting == "aspect" and value not in ASPECTS:
        raise ValueError(f"aspect {value!r} is not offered")
    return {setting: value}


class SettingsPanel:
    """The `/settings` handlers of one bot."""

    def __init__(
        self, *, prefs: PrefsStore, policy: Policy, checkpoints: CheckpointCache, submitter: Submitter,
        metrics: BotMetrics,
    ) -> None:
        self.prefs = prefs
        self.policy = policy
        self.checkpoints = checkpoints
        self.submitter = submitter
        self.metrics = metrics

    def _models(self, interaction: discord.Interaction[Any]) -> list[str]:
        return self.policy.visible_models(self.checkpoints.suggest("", limit=100), caller_of(interaction))

    def _count(self, name: str, outcome: str) -> None:
        self.metrics.interactions.labels(kind="settings", name=name, outcome=outcome).inc()

    async def _allowed(self, interaction: discord.Interaction[Any]) -> bool:
        refusal = self.policy.check_access(caller_of(interaction))
        if refusal is not None:
            await self.submitter.refuse(interaction, refusal, "settings")
            return False
        return True

    async def show(self, interaction: discord.Interaction[Any]) -> None:
        """`/settings`: the panel, ephemeral."""
        if not await self.submitter.defer(interaction, time.perf_counter()):
            return
        if not await self._allowed(interaction):
            return
        try:
            prefs = await self.prefs.get(interaction.guild_id, interaction.user.id)
        except (ApiException, OSError, TimeoutError) as exc:
            log.error("reading settings failed: %s", exc)
            await reply(interaction, "⚠️ I can't read your settings right now. Please try again in a minute.")
            self._count("show", "error")
            return
        view = build_panel(prefs, self._models(interaction))
        await interaction.edit_original_response(content=panel_text(prefs), view=view)
        self._count("show", "ok")

    async def reset(self, interaction: discord.Interaction[Any]) -> None:
        """`/settings reset`: forget the user's defaults in this server."""
        if not await self.submitter.defer(interaction, time.perf_counter()):
            return
        if not await self._allowed(interaction):
            return
        async def clear() -> bool:
            await self.prefs.reset(interaction.guild_id, interaction.user.id)
            return True

        if await self._stored(interaction, "reset", clear()):
            await reply(interaction, "♻️ Your settings are back to the defaults.")

    async def component(self, interaction: discord.Interaction[Any], setting: str) -> None:
        """A select choice or a button on the panel."""
        if setting == "negative":
            await self._open_negative(interaction)
            return
        try:
            await interaction.response.defer()  # a deferred update of the panel itself
        except discord.HTTPException as exc:
            log.warning("could not acknowledge settings change: %s", exc)
            return
        if not await self._allowed(interaction):
            return
        data: Any = interaction.data or {}
        values = data.get("values") or []
        change: Callable[[UserPrefs], UserPrefs]
        try:
            if setting == "reset":
                change = lambda _old: UserPrefs()  # noqa: E731
            elif setting == "private":
                change = lambda old: old.changed(private=not old.private)  # noqa: E731
            else:
                parsed = _parse(setting, str(values[0]) if values else DEFAULT_VALUE)
                change = lambda old: old.changed(**parsed)  # noqa: E731
        except (ValueError, IndexError) as exc:
            await reply(interaction, f"⚠️ {exc}")
            self._count(setting, "invalid")
            return
        await self._save(interaction, setting, change)

    async def _stored(self, interaction: discord.Interaction[Any], setting: str, write: Awaitable[T]) -> T | None:
        """Await a write of the user's settings; on failure say so, count it and return None."""
        try:
            result = await write
        except (ApiException, OSError, TimeoutError, RuntimeError) as exc:
            log.error("storing settings (%s) failed: %s", setting, exc)
            await reply(interaction, "⚠️ I couldn't save that right now. Please try again in a minute.")
            self._count(setting, "error")
            return None
        self._count(setting, "ok")
        return result

    async def _save(self, interaction: discord.Interaction[Any], setting: str, change: Any) -> None:
        prefs = await self._stored(
            interaction, setting, self.prefs.update(interaction.guild_id, interaction.user.id, change)
        )
        if prefs is None:
            return
        try:
            await interaction.edit_original_response(
                content=panel_text(prefs), view=build_panel(prefs, self._models(interaction))
            )
        except discord.HTTPException as exc:
            log.info("could not redraw the settings panel: %s", exc)

    async def _open_negative(self, interaction: discord.Interaction[Any]) -> None:
        try:
            prefs = await self.prefs.get(interaction.guild_id, interaction.user.id)
        except (ApiException, OSError, TimeoutError) as exc:
            log.error("reading settings failed: %s", exc)
            await reply(interaction, "⚠️ I can't read your settings right now.")
            return
        await send_stopped(interaction, negative_modal(prefs))

    async def submit_negative(self, interaction: discord.Interaction[Any], values: dict[str, str]) -> None:
        """The negative-prompt modal was submitted (maybe to an earlier process): store the value."""
        value = values.get("negative", "").strip() or None
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException as exc:
            log.warning("could not acknowledge the negative prompt: %s", exc)
            return
        if not await self._allowed(interaction):
            return
        if value is not None and len(value) > NEGATIVE_MAX:  # the modal caps it; a forged submission may not
            await reply(interaction, f"⚠️ The negative prompt can be at most {NEGATIVE_MAX} characters.")
            self._count("negative", "invalid")
            return

        def change(old: UserPrefs) -> UserPrefs:
            return old.changed(negative=value)

        saved = await self._stored(
            interaction, "negative", self.prefs.update(interaction.guild_id, interaction.user.id, change)
        )
        if saved is not None:
            await reply(interaction, "Saved.\n" + panel_text(saved))


def negative_modal(prefs: UserPrefs) -> discord.ui.Modal:
    """The default-negative-prompt form, prefilled (submissions go to `SettingsPanel.submit_negative`)."""
    modal = discord.ui.Modal(title="Default negative prompt", custom_id=NEGATIVE_MODAL_ID, timeout=None)
    modal.add_item(discord.ui.TextInput(
        label="Negative prompt (empty: none)", style=discord.TextStyle.paragraph, required=False,
        max_length=NEGATIVE_MAX, default=(prefs.negative or "")[:NEGATIVE_MAX], custom_id="negative",
    ))
    return modal


class SettingItem(discord.ui.DynamicItem[discord.ui.Button[Any]], template=re.compile(SETTING_ID_PATTERN)):
    """Routes every click or choice on a settings panel (also on panels posted before a restart)."""

    def __init__(self, setting: str) -> None:
        super().__init__(discord.ui.Button(label=setting, custom_id=f"ks:{setting}"))
        self.setting = setting

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> SettingItem:
        """No I/O here: only which setting."""
        return cls(match["setting"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Hand the interaction to the bot's panel."""
        panel = getattr(interaction.client, "settings_panel", None)
        if panel is not None:
            await panel.component(interaction, self.setting)


__all__ = [
    "NEGATIVE_MODAL_ID",
    "SETTING_ID_PATTERN",
    "SettingItem",
    "SettingsPanel",
    "build_panel",
    "negative_modal",
    "panel_text",
]
