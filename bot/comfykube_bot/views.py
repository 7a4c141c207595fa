"""Persistent job buttons: one `DynamicItem` whose custom id carries the whole state.

`ij:<action>:<namespace>/<name>` names the ImageJob; everything else (owner,
spec, images) is read from the ImageJob when the button is clicked. Nothing
lives in the View, so buttons keep working after a restart: discord.py routes
a click to `JobButton.from_custom_id` by regex as soon as the class is
registered with `client.add_dynamic_items(JobButton)`.

Views built here are stopped before they are sent. A live view would also be
stored in discord.py's ViewStore, which would dispatch each click a second
time (the dynamic-item registry already handles it) and keep one view per job
message in memory forever.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import discord

from comfykube_bot.grid import GRID_ID_PATTERN
from comfykube_bot.render import CUSTOM_ID_PATTERN, ButtonSpec, custom_id

_STYLES = {
    "primary": discord.ButtonStyle.primary,
    "secondary": discord.ButtonStyle.secondary,
    "success": discord.ButtonStyle.success,
    "danger": discord.ButtonStyle.danger,
    "link": discord.ButtonStyle.link,
}


class ButtonHandler(Protocol):
    """What the client must offer for JobButton clicks (implemented by `main.ComfyBot`)."""

    async def handle_job_button(
        self, interaction: discord.Interaction[Any], action: str, namespace: str, name: str
    ) -> None:
        """Answer one click on a job button."""
        ...


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=re.compile(CUSTOM_ID_PATTERN)):
    """A Reroll / Cancel / Delete / Fresh link button for one ImageJob."""

    def __init__(
        self,
        action: str,
        namespace: str,
        name: str,
        *,
        label: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        emoji: str | discord.PartialEmoji | None = None,
    ) -> None:
        cid = custom_id(action, namespace, name)
        if cid is None:
            raise ValueError(f"custom id for {action} {namespace}/{name} would exceed 100 characters")
        super().__init__(discord.ui.Button(label=label or action.title(), style=style, custom_id=cid, emoji=emoji))
        self.action = action
        self.namespace = namespace
        self.job_name = name

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        """Rebuild the button from a click: no I/O here (it runs inside Discord's 3 s window)."""
        label = getattr(item, "label", None)
        style = getattr(item, "style", discord.ButtonStyle.secondary)
        emoji = getattr(item, "emoji", None)
        return cls(match["action"], match["namespace"], match["name"], label=label, style=style, emoji=emoji)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Hand the click to the client, which owns the Kubernetes and Discord logic."""
        client = interaction.client
        handler = getattr(client, "handle_job_button", None)
        if handler is None:  # not our client: nothing sensible to do
            return
        await handler(interaction, self.action, self.namespace, self.job_name)


def build_view(buttons: Sequence[ButtonSpec]) -> discord.ui.View | None:
    """A stopped View with the buttons (None when there are none: that clears the components)."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for spec in buttons:
        if spec.url:
            view.add_item(
                discord.ui.Button(
                    label=spec.label, style=discord.ButtonStyle.link, url=spec.url, emoji=spec.emoji, row=spec.row
                )
            )
            continue
        assert spec.custom_id is not None
        match = re.fullmatch(CUSTOM_ID_PATTERN, spec.custom_id)
        style = _STYLES.get(spec.style, discord.ButtonStyle.secondary)
        if match is None:
            # Grid buttons (`grid.py`) are routed by `derive.DeriveButton`; a plain button is enough here.
            if re.fullmatch(GRID_ID_PATTERN, spec.custom_id):
                view.add_item(discord.ui.Button(label=spec.label, style=style, custom_id=spec.custom_id,
                                                emoji=spec.emoji, row=spec.row))
            continue
        item = JobButton(
            match["action"], match["namespace"], match["name"], label=spec.label, style=style, emoji=spec.emoji
        )
        item.item.row = spec.row
        view.add_item(item)
    view.stop()
    return view


__all__ = ["ButtonHandler", "JobButton", "build_view"]
