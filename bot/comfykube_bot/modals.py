"""Modals that survive a restart: the custom id names what a modal is about, nothing is kept in memory.

discord.py keeps a sent modal in its in-memory store until it is submitted or
times out, and hands the submission to that object's `on_submit`. A bot that
restarted in between has no such object, and the submission was dropped. So
the bot's modals are stopped before they are sent (discord.py then does not
store them), their custom id carries what identifies them (the Remix modal's
names the source ImageJob), and the client's `on_interaction` routes every
MODAL_SUBMIT by that id; the handler reads everything else from the cluster.

A submission is untrusted input like any other interaction: its custom id is
matched in full against a pattern, and its values are only the strings found
where Discord puts text inputs.
"""

from __future__ import annotations

from typing import Any

import discord

#: Discord's limit on a modal's and a text input's custom id.
MAX_MODAL_ID = 100


async def send_stopped(interaction: discord.Interaction[Any], modal: discord.ui.Modal) -> None:
    """Answer `interaction` with `modal`, stopped first so discord.py keeps no copy (see the module docstring)."""
    modal.stop()
    await interaction.response.send_modal(modal)


def submitted_values(data: Any) -> dict[str, str]:
    """The text inputs of a MODAL_SUBMIT payload as `{custom_id: value}`; anything malformed is skipped.

    Text inputs come inside action rows (`{"type": 1, "components": [...]}`) or, in newer modals, inside labels
    (`{"type": 18, "component": {...}}`).
    """
    values: dict[str, str] = {}
    rows = data.get("components") if isinstance(data, dict) else None
    for row in rows if isinstance(rows, list) else ():
        if not isinstance(row, dict):
            continue
        children = row.get("components")
        inner = [*children] if isinstance(children, list) else []
        if isinstance(row.get("component"), dict):
            inner.append(row["component"])
        for item in inner:
            if not isinstance(item, dict):
                continue
            custom_id, value = item.get("custom_id"), item.get("value")
            if isinstance(custom_id, str) and len(custom_id) <= MAX_MODAL_ID and isinstance(value, str):
                values.setdefault(custom_id, value)
    return values


__all__ = ["MAX_MODAL_ID", "send_stopped", "submitted_values"]
