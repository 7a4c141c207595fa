"""The slash commands: option declarations only; the work happens in `submit.py` and `actions.py`.

Option ranges are read from the CRD's types (`specs.field_bounds`), so
Discord's client refuses out-of-range numbers before sending them, and the
bot checks them again anyway (clients can be bypassed, and inline flags
never go through Discord's checks).

No `from __future__ import annotations` here: discord.py reads the option
types from the annotations at definition time.
"""

import time
from typing import Any

import discord
from discord import app_commands

from comfykube.types import MAX_PROMPT_LENGTH
from comfykube.workflows import WorkflowLibrary
from comfykube_bot.actions import Actions
from comfykube_bot.checkpoints import CheckpointCache
from comfykube_bot.metrics import BotMetrics
from comfykube_bot.policy import Caller, Policy
from comfykube_bot.render import truncate
from comfykube_bot.settings_panel import SettingsPanel
from comfykube_bot.specs import ASPECTS, DISCORD_MAX_INT, ImagineOptions, field_bounds
from comfykube_bot.submit import Submitter, caller_of

_W = field_bounds("width")
_S = field_bounds("steps")
_C = field_bounds("cfg")
MIN_SIZE, MAX_SIZE = int(_W["ge"]), int(_W["le"])
MIN_STEPS, MAX_STEPS = int(_S["ge"]), int(_S["le"])
MIN_CFG, MAX_CFG = float(_C["ge"]), float(_C["le"])
#: Images per job offered in Discord (the CRD allows more; four is what a chat message shows well).
MAX_COUNT = 4
#: Discord caps string options at 6000 characters; the CRD caps prompts lower.
PROMPT_MAX = min(MAX_PROMPT_LENGTH, 6000)


class ComfyTree(app_commands.CommandTree):
    """A command tree whose errors become a short ephemeral sentence (details go to the log)."""

    async def on_error(self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError) -> None:
        """Log the failure with its traceback; tell the user only that it failed."""
        command = interaction.command.name if interaction.command else "?"
        self.client.log.error("command %s failed", command, exc_info=error)  # type: ignore[attr-defined]
        text = "⚠️ Something went wrong on my side. The details are in my logs."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            pass


def register_commands(
    tree: app_commands.CommandTree[Any],
    *,
    workflows: WorkflowLibrary,
    policy: Policy,
    checkpoints: CheckpointCache,
    metrics: BotMetrics,
    submitter: Submitter,
    actions: Actions,
    settings_panel: SettingsPanel,
) -> None:
    """Add /imagine, /settings, /jobs and /queue to `tree`; each command hands its interaction to one part."""
    workflow_choices = [app_commands.Choice(name=name, value=name) for name in workflows.names()[:25]]
    aspect_choices = [app_commands.Choice(name=a, value=a) for a in ASPECTS]

    @app_commands.command(name="imagine", description="Render a picture from a prompt")
    @app_commands.describe(
        prompt="What the picture shows; inline flags work too: --ar 16:9 --seed 42 --no text --steps 30 --cfg 6",
        negative="What the picture must not show",
        aspect="Aspect ratio (ignored where width/height are given)",
        width=f"Width in pixels, a multiple of 8 ({MIN_SIZE}-{MAX_SIZE})",
        height=f"Height in pixels, a multiple of 8 ({MIN_SIZE}-{MAX_SIZE})",
        steps=f"Sampling steps ({MIN_STEPS}-{MAX_STEPS})",
        cfg=f"Guidance scale ({MIN_CFG:g}-{MAX_CFG:g})",
        seed="Noise seed (random when empty)",
        model="Checkpoint to use",
        workflow="Workflow template",
        count=f"How many images (1-{MAX_COUNT})",
        spoiler="Hide the result behind a spoiler",
        image="A picture to start from (img2img; the result has its size)",
        strength="How far to move away from the picture: 0 keeps it, 1 ignores it (default 0.6)",
    )
    @app_commands.choices(aspect=aspect_choices, workflow=workflow_choices)
    async def imagine(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        negative: app_commands.Range[str, 1, PROMPT_MAX] | None = None,
        aspect: str | None = None,
        width: app_commands.Range[int, MIN_SIZE, MAX_SIZE] | None = None,
        height: app_commands.Range[int, MIN_SIZE, MAX_SIZE] | None = None,
        steps: app_commands.Range[int, MIN_STEPS, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, MIN_CFG, MAX_CFG] | None = None,
        seed: app_commands.Range[int, 0, DISCORD_MAX_INT] | None = None,
        model: str | None = None,
        workflow: str | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
        spoiler: bool | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, 0.0, 1.0] | None = None,
    ) -> None:
        received = time.perf_counter()
        options = ImagineOptions(
            prompt=prompt, negative=negative, aspect=aspect, width=width, height=height, steps=steps, cfg=cfg,
            seed=seed, model=model, workflow=workflow, count=count, spoiler=bool(spoiler),
            image=image, strength=strength,
        )
        await submitter.imagine(interaction, options, received)

    @imagine.autocomplete("model")
    async def model_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        # Memory only: autocomplete has the same 3 s deadline. NSFW models are offered only where allowed.
        caller: Caller = caller_of(interaction)
        names = policy.visible_models(checkpoints.suggest(current, limit=100), caller)[:25]
        metrics.interactions.labels(kind="autocomplete", name="model", outcome="ok").inc()
        return [app_commands.Choice(name=truncate(n, 100), value=n) for n in names if len(n) <= 100]

    @app_commands.command(name="jobs", description="Your recent image jobs")
    async def jobs(interaction: discord.Interaction) -> None:
        await actions.jobs_command(interaction)

    @app_commands.command(name="queue", description="What is rendering and waiting")
    async def queue(interaction: discord.Interaction) -> None:
        await actions.queue_command(interaction)

    settings = app_commands.Group(name="settings", description="Your /imagine defaults in this server")

    @settings.command(name="show", description="Show and change your /imagine defaults")
    async def settings_show(interaction: discord.Interaction) -> None:
        await settings_panel.show(interaction)

    @settings.command(name="reset", description="Forget your /imagine defaults in this server")
    async def settings_reset(interaction: discord.Interaction) -> None:
        await settings_panel.reset(interaction)

    tree.add_command(imagine)
    tree.add_command(settings)
    tree.add_command(jobs)
    tree.add_command(queue)


__all__ = ["ComfyTree", "register_commands"]
