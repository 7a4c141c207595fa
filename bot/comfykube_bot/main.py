"""The bot process: `ComfyBot` (a discord.py Client) and `run_bot` for `comfykube bot`.

`ComfyBot._wire` builds the parts (submit, delivery, actions, derive, the
settings panel) and hands each what it uses; none of them imports this module,
so each can be read, and built in a test, on its own.

`setup_hook` (before the gateway connects) registers the persistent buttons,
the slash commands and syncs them, and starts two background tasks: the
checkpoint cache refresh and the ImageJob loop. That loop waits until the
client is ready, then catches up (lists every job and handles it as if it had
just changed: results that finished while the bot was down get posted, job
messages of running jobs get their current state), then follows the watch.

Only `discord.Intents.default()`: slash commands and button clicks arrive as
INTERACTION_CREATE, which needs no privileged intent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import uuid
from typing import Any

import discord
from pydantic import ValidationError

from comfykube import logsafe
from comfykube.kube import KubeApi
from comfykube.settings import Settings
from comfykube.workflows import WorkflowLibrary
from comfykube_bot.actions import Actions
from comfykube_bot.checkpoints import CheckpointCache
from comfykube_bot.commands import ComfyTree, register_commands
from comfykube_bot.delivery import Deliverer
from comfykube_bot.derive import Derivations, DeriveButton, parse_remix_modal_id
from comfykube_bot.health import HealthServer
from comfykube_bot.images import ImageSource, StoreReader
from comfykube_bot.jobs import JobStore
from comfykube_bot.metrics import BotMetrics, RateLimitLogCounter
from comfykube_bot.modals import submitted_values
from comfykube_bot.policy import Policy
from comfykube_bot.prefs import PrefsStore
from comfykube_bot.previews import LivePreviews
from comfykube_bot.settings import BotSettings
from comfykube_bot.settings_panel import NEGATIVE_MODAL_ID, SettingItem, SettingsPanel
from comfykube_bot.signing import Signer
from comfykube_bot.submit import Submitter
from comfykube_bot.updater import MessageUpdater
from comfykube_bot.uploads import Uploads
from comfykube_bot.views import JobButton

log = logging.getLogger("comfykube_bot")

EXIT_OK, EXIT_CONFIG, EXIT_LOGIN = 0, 2, 3


class ComfyBot(discord.Client):
    """The Discord side of comfykube. All job state lives in ImageJobs; see the package modules."""

    def __init__(
        self,
        settings: BotSettings,
        core: Settings | None = None,
        *,
        kube: KubeApi | None = None,
        image_source: ImageSource | None = None,
        checkpoints: CheckpointCache | None = None,
        workflows: WorkflowLibrary | None = None,
        holder: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        client_kwargs.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(intents=discord.Intents.default(), **client_kwargs)
        self.log = log
        self.settings = settings
        self.core = core or Settings()
        self.metrics = BotMetrics()
        self.policy = Policy(settings)
        self.workflows = workflows or WorkflowLibrary.from_settings(self.core)
        self.checkpoints = checkpoints or CheckpointCache(
            self.core.comfyui_urls, refresh_seconds=settings.bot_checkpoint_refresh_seconds
        )
        self.image_source: ImageSource = image_source or StoreReader(self.core)
        # `/imagine image:` pictures: checked like the operator checks inputs, stored in the bucket.
        self.uploads = Uploads(self.core, self.workflows, cdn_base=settings.discord_cdn_base)
        self._kube = kube
        self._owns_kube = kube is None
        signing_key = settings.bot_signing_key.get_secret_value() if settings.bot_signing_key else None
        self.signer = Signer.from_secrets(signing_key, settings.discord_token.get_secret_value())
        # Identifies this process in delivery claims: a claim with another holder is a leftover.
        self.holder = holder or f"{os.uname().nodename[:40]}-{uuid.uuid4().hex[:8]}"
        self.tree = ComfyTree(self)
        self.updater = MessageUpdater(self, interval=settings.bot_edit_interval_seconds, metrics=self.metrics)
        # The parts that need the Kubernetes API (set by `_wire`, here or in setup_hook).
        self._jobs: JobStore | None = None
        self.prefs: PrefsStore  # users' /settings, in ConfigMaps
        self.submitter: Submitter
        self.deliverer: Deliverer
        self.actions: Actions
        self.derivations: Derivations  # Upscale / Vary / Remix buttons (derive.py)
        self.settings_panel: SettingsPanel
        # Live previews of running jobs, read from the bucket (previews.py; docs/bot.md "Live previews").
        # Whether one may be shown is the deliverer's model rule, looked up when asked (it is wired later).
        self.previews = LivePreviews(
            self.updater, self.image_source, self.metrics,
            interval=settings.bot_edit_interval_seconds, allowed=lambda job: self.deliverer.preview_allowed(job),
        )
        self.watch_ready = False
        self._tasks: list[asyncio.Task[None]] = []
        self._rate_log = RateLimitLogCounter(self.metrics)
        if kube is not None:
            self._wire(kube)
        # Without an injected client, setup_hook connects (that needs the running event loop) and wires.

    def _wire(self, kube: KubeApi) -> None:
        """Build the parts, each given what it uses (the one place that knows how they fit together)."""
        settings, metrics = self.settings, self.metrics
        jobs = self._jobs = JobStore(kube, settings.bot_namespace, signer=self.signer)
        self.prefs = PrefsStore(kube.core, settings.bot_namespace)
        self.submitter = Submitter(
            self, settings=settings, policy=self.policy, jobs=jobs, prefs=self.prefs, workflows=self.workflows,
            checkpoints=self.checkpoints, updater=self.updater, metrics=metrics, signer=self.signer,
            uploads=self.uploads,
        )
        self.deliverer = Deliverer(
            self, holder=self.holder, jobs=jobs, policy=self.policy, updater=self.updater, workflows=self.workflows,
            image_source=self.image_source, metrics=metrics, previews=self.previews,
        )
        self.actions = Actions(
            self, core=self.core, jobs=jobs, policy=self.policy, submitter=self.submitter, deliverer=self.deliverer,
            updater=self.updater, metrics=metrics, queue_cap=settings.bot_queue_cap,
        )
        self.derivations = Derivations(
            jobs=jobs, policy=self.policy, submitter=self.submitter, workflows=self.workflows, metrics=metrics
        )
        self.settings_panel = SettingsPanel(
            prefs=self.prefs, policy=self.policy, checkpoints=self.checkpoints, submitter=self.submitter,
            metrics=metrics,
        )

    @property
    def jobs(self) -> JobStore:
        """ImageJobs in the bot's namespace (available from `setup_hook` on)."""
        if self._jobs is None:
            raise RuntimeError("not connected to the Kubernetes API yet (setup_hook has not run)")
        return self._jobs

    # ------------------------------------------------------------------ lifecycle

    async def setup_hook(self) -> None:
        """Buttons, commands, sync, background tasks (runs once, before the gateway connects)."""
        if self._kube is None:
            self._kube = await KubeApi.connect()
            self._wire(self._kube)
        for name in ("discord.http", "discord.webhook.async_"):
            logging.getLogger(name).addHandler(self._rate_log)
        self.add_dynamic_items(JobButton, SettingItem, DeriveButton)
        register_commands(
            self.tree, workflows=self.workflows, policy=self.policy, checkpoints=self.checkpoints,
            metrics=self.metrics, submitter=self.submitter, actions=self.actions, settings_panel=self.settings_panel,
        )
        if self.settings.discord_sync_commands:
            await self.sync_commands()
        self.checkpoints.start()
        self._tasks.append(asyncio.create_task(self._job_loop(), name="imagejob-loop"))

    async def sync_commands(self) -> None:
        """Guild sync (instant) for DISCORD_GUILD_SYNC guilds, else one global sync."""
        if self.settings.discord_guild_sync:
            for guild_id in self.settings.discord_guild_sync:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    async def close(self) -> None:
        """Stop background work, then the gateway and HTTP sessions."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._jobs is not None:  # wired (a bot that never connected has no deliveries)
            await self.deliverer.aclose()
        await self.previews.aclose()
        await self.updater.aclose()
        await self.checkpoints.stop()
        for name in ("discord.http", "discord.webhook.async_"):
            logging.getLogger(name).removeHandler(self._rate_log)
        await super().close()
        if self._owns_kube and self._kube is not None:
            await self._kube.close()
            self._kube = None

    # ------------------------------------------------------------------ the ImageJob loop

    async def catch_up(self) -> int:
        """Handle every existing job once (results that finished while the bot was down); returns how many."""
        jobs = await self.jobs.list_jobs()
        for job in reversed(jobs):  # oldest first: earlier results are posted first
            await self.deliverer.on_event("ADDED", job)
        return len(jobs)

    async def _job_loop(self) -> None:
        await self.wait_until_ready()
        backoff = 1.0
        while not self.is_closed():
            try:
                count = await self.catch_up()
                log.info("caught up with %d ImageJobs in namespace %s", count, self.settings.bot_namespace)
                self.watch_ready = True
                backoff = 1.0
                async for kind, job in self.jobs.watch():
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        await self.deliverer.on_event(kind, job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server went away: list again, then watch again
                self.watch_ready = False
                log.warning("ImageJob watch failed (%s); retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    # ------------------------------------------------------------------ buttons and modals

    async def handle_job_button(
        self, interaction: discord.Interaction[Any], action: str, namespace: str, name: str
    ) -> None:
        """Called by `views.JobButton` for every click."""
        try:
            await self.actions.button(interaction, action, namespace, name)
        except Exception:
            log.exception("button %s on %s/%s failed", action, namespace, name)
            await _answer_failure(interaction)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Modal submissions, routed by custom id: the modals are sent stopped, so discord.py holds none (modals.py).

        Slash commands and buttons are dispatched by discord.py itself (the tree, the dynamic items). An unknown
        id is only logged: answering it could pre-empt a handler that discord.py does hold.
        """
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data: Any = interaction.data or {}
        custom_id = data.get("custom_id") if isinstance(data, dict) else None
        values = submitted_values(data)
        try:
            remix = parse_remix_modal_id(custom_id)
            if remix is not None:
                await self.derivations.submit_remix(interaction, remix[0], remix[1], values)
            elif custom_id == NEGATIVE_MODAL_ID:
                await self.settings_panel.submit_negative(interaction, values)
            else:
                log.info("modal submission with an unknown custom id from user %s", interaction.user.id)
        except Exception:
            log.exception("modal submission %.40r failed", custom_id)
            await _answer_failure(interaction)


async def _answer_failure(interaction: discord.Interaction[Any]) -> None:
    """Tell the user only that it failed (the traceback is in the log)."""
    with contextlib.suppress(discord.HTTPException):
        text = "⚠️ Something went wrong on my side. The details are in my logs."
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)


def apply_discord_endpoints(settings: BotSettings) -> None:
    """Point discord.py at DISCORD_API_BASE / DISCORD_GATEWAY_URL / DISCORD_CDN_BASE when set (tests)."""
    import yarl
    from discord.asset import Asset
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    if settings.discord_api_base:
        Route.BASE = settings.discord_api_base
    if settings.discord_gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)
    if settings.discord_cdn_base:
        Asset.BASE = settings.discord_cdn_base


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ())).upper() or "configuration"
        lines.append(f"  {where}: {item.get('msg')}")
    return "\n".join(lines)


async def _amain(settings: BotSettings, core: Settings, health_port: int, metrics_port: int) -> int:
    bot = ComfyBot(settings, core)
    health = HealthServer(bot, bot.metrics, host=settings.bot_listen_host)
    await health.start(health_port, metrics_port)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        if not stopping:  # keep a reference: an unreferenced task may be garbage-collected mid-close
            stopping.append(loop.create_task(bot.close()))

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop)
    try:
        await bot.start(settings.discord_token.get_secret_value())
    except discord.LoginFailure:
        log.error("Discord refused the token (DISCORD_TOKEN)")
        return EXIT_LOGIN
    finally:
        if not bot.is_closed():
            await bot.close()
        await health.stop()
    return EXIT_OK


def run_bot(health_port: int = 8081, metrics_port: int = 9091) -> int:
    """Entry point of `comfykube bot`: configuration from the environment, run until SIGTERM."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logsafe.install()  # no presigned URL in any log line (discord.py's debug lines carry link buttons)
    try:
        settings = BotSettings()  # type: ignore[call-arg]  # values come from the environment
        core = Settings()
    except ValidationError as exc:
        print(f"comfykube bot: invalid configuration:\n{_describe(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    apply_discord_endpoints(settings)
    return asyncio.run(_amain(settings, core, health_port, metrics_port))


__all__ = ["ComfyBot", "apply_discord_endpoints", "run_bot"]
