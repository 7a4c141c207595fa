"""Tests of the fake Discord API with a REAL discord.py 2.7.1 client (nothing monkeypatched).

Each test starts a ``commands.Bot`` defined here against the ``fake_discord`` fixture, so what is
checked is the wire contract discord.py actually speaks: login, gateway READY, command sync,
interaction callbacks, webhooks, bot-token edits, multipart uploads, 401/404/413/429 handling.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.standins.discord import (
    ALICE_ID,
    ARTIST_ROLE_ID,
    BOB_ID,
    CB_AUTOCOMPLETE,
    CB_DEFERRED,
    CB_DEFERRED_UPDATE,
    CB_MESSAGE,
    CB_MODAL,
    FakeDiscord,
    make_png,
)

RunBot = Callable[..., AbstractAsyncContextManager[Any]]
MODELS = ["sdxl-base", "sd15-anime", "flux-dev"]


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"ij:(?P<action>reroll|delete):(?P<ns>[a-z0-9-]+)/(?P<name>[a-z0-9-]+)",
):
    """Persistent per-job button: all state lives in the custom_id, so it works after a restart."""

    def __init__(self, action: str, ns: str, name: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=action.title(), custom_id=f"ij:{action}:{ns}/{name}", style=discord.ButtonStyle.secondary
            )
        )
        self.action, self.ns, self.name = action, ns, name

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(match["action"], match["ns"], match["name"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: TestBot = interaction.client  # type: ignore[assignment]
        bot.clicks.append((self.action, self.ns, self.name, interaction.user.id))
        if self.action == "delete":
            # Silent ack (type 6), then edit the message the button is on through @original.
            await interaction.response.defer()
            await interaction.edit_original_response(content=f"deleted {self.ns}/{self.name}", view=None)
            return
        await interaction.response.send_message(f"{self.action} {self.ns}/{self.name}", ephemeral=True)


class RemixModal(discord.ui.Modal, title="Remix"):
    """Edit the prompt before a reroll (the modal round trip)."""

    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(label="Prompt", custom_id="remix-prompt", max_length=1500)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"remix: {self.prompt.value}", ephemeral=True)


class TestBot(commands.Bot):
    """A small bot with the comfykube command shapes: /imagine (defer+followup+edit), /jobs, /slow."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        # guild_ready_timeout: skip discord.py's 2 s wait after the last GUILD_CREATE.
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.1)
        self.seen: list[discord.Interaction] = []
        self.errors: list[BaseException] = []
        self.done = asyncio.Event()
        self.release = asyncio.Event()
        self.clicks: list[tuple[str, str, str, int]] = []
        self.add_dynamic_items(JobButton)
        self._add_commands()

    def _add_commands(self) -> None:
        @self.tree.command(name="imagine", description="Render an image")
        @app_commands.describe(prompt="What to draw", model="Checkpoint", aspect="Aspect ratio")
        async def imagine(
            interaction: discord.Interaction,
            prompt: app_commands.Range[str, 1, 1500],
            model: str | None = None,
            aspect: Literal["1:1", "16:9", "9:16"] = "1:1",
        ) -> None:
            self.seen.append(interaction)
            await interaction.response.defer(thinking=True)
            view = discord.ui.View(timeout=None)
            view.add_item(JobButton("reroll", "default", "job-1"))
            await interaction.followup.send(f"queued: {prompt} ({model}, {aspect})", view=view, wait=True)
            await interaction.edit_original_response(content=f"done: {prompt}")
            self.done.set()

        @imagine.autocomplete("model")
        async def model_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=m, value=m) for m in MODELS if current in m][:25]

        @self.tree.command(name="jobs", description="List my jobs")
        async def jobs(interaction: discord.Interaction) -> None:
            self.seen.append(interaction)
            await interaction.response.send_message("no jobs", ephemeral=True)
            self.done.set()

        @self.tree.command(name="describe", description="Describe an uploaded image")
        async def describe(interaction: discord.Interaction, image: discord.Attachment) -> None:
            data = await image.read()  # downloaded from the fake's attachment URL
            self.seen.append(interaction)
            await interaction.response.send_message(
                f"{image.filename}: {len(data)} bytes, {image.width}x{image.height}"
            )

        @self.tree.command(name="remix", description="Open the remix modal")
        async def remix(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(RemixModal())

        @self.tree.command(name="slow", description="Answers only when the test says so")
        async def slow(interaction: discord.Interaction) -> None:
            self.seen.append(interaction)
            await self.release.wait()
            try:
                await interaction.response.send_message("finally")
            except discord.HTTPException as exc:
                self.errors.append(exc)
            self.done.set()


async def _started(run_discord_bot: RunBot, fake: FakeDiscord) -> tuple[TestBot, AbstractAsyncContextManager[Any]]:
    bot = TestBot()
    return bot, run_discord_bot(bot)


async def test_login_gateway_ready_and_guild_create(fake_discord: FakeDiscord, run_discord_bot: RunBot) -> None:
    bot = TestBot()
    async with run_discord_bot(bot):
        assert bot.user is not None and bot.user.id == fake_discord.bot_user_id
        assert bot.application_id == fake_discord.application_id
        guild = bot.get_guild(fake_discord.guild_id)
        assert guild is not None
        assert [c.is_nsfw() for c in guild.text_channels] == [False, True]
        assert {r.name for r in guild.roles} >= {"@everyone", "artist", "moderator"}
        assert guild.member_count == len(fake_discord.guild.members) + 1  # + the bot
        session = fake_discord.sessions[-1]
        assert session.intents == discord.Intents.default().value
        assert session.compressed  # discord.py asked for zlib-stream and decoded our frames
        await fake_discord.wait_for(lambda: session.heartbeats >= 1, what="first heartbeat")
    assert [r.path for r in fake_discord.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    assert not fake_discord.unhandled


async def test_command_sync_records_and_enforces_limits(fake_discord: FakeDiscord, run_discord_bot: RunBot) -> None:
    bot = TestBot()
    async with run_discord_bot(bot):
        synced = await bot.tree.sync()
        assert {c.name for c in synced} == {"imagine", "jobs", "describe", "remix", "slow"}
        guild = discord.Object(fake_discord.guild_id)
        bot.tree.copy_global_to(guild=guild)
        await bot.tree.sync(guild=guild)
        imagine = fake_discord.command("imagine", fake_discord.guild_id)
        assert imagine is not None
        opts = {o["name"]: o for o in imagine["options"]}
        assert opts["prompt"]["required"] and opts["prompt"]["max_length"] == 1500
        assert opts["model"]["autocomplete"] is True
        assert [c["value"] for c in opts["aspect"]["choices"]] == ["1:1", "16:9", "9:16"]

        # Discord refuses more than 25 static choices (aiyabot #159); discord.py surfaces it.
        too_many = [app_commands.Choice(name=f"w{i}", value=i) for i in range(26)]

        @app_commands.command(name="size", description="Too many choices")
        @app_commands.choices(width=too_many)
        async def size(interaction: discord.Interaction, width: int) -> None:
            raise AssertionError("never runs")

        bot.tree.add_command(size)
        with pytest.raises(app_commands.CommandSyncFailure) as err:
            await bot.tree.sync()
        assert err.value.code == 50035
        assert "size" not in {c["name"] for c in fake_discord.commands()}  # nothing half-applied


async def test_slash_command_defer_followup_then_edit_original(
    fake_discord: FakeDiscord, run_discord_bot: RunBot
) -> None:
    bot = TestBot()
    async with run_discord_bot(bot):
        await bot.tree.sync()
        handle = await fake_discord.slash_command(
            "imagine", {"prompt": "a cat", "aspect": "16:9"}, user_id=ALICE_ID, attachment_size_limit=8_000_000
        )
        response = await handle.wait_response()
        assert response.type == CB_DEFERRED
        await asyncio.wait_for(bot.done.wait(), 5)
        fetched = await bot.seen[0].original_response()  # GET .../messages/@original
        assert fetched.content == "done: a cat"

    interaction = bot.seen[0]
    assert interaction.filesize_limit == 8_000_000
    assert interaction.namespace.aspect == "16:9"
    original = handle.original
    assert original is not None and not original.loading and not original.ephemeral
    # Deferred "thinking" message → filled by the first followup → edited via @original.
    assert original.contents == ["", "queued: a cat (None, 16:9)", "done: a cat"]
    assert original.custom_ids() == ["ij:reroll:default/job-1"]
    assert fake_discord.messages_in(fake_discord.channel_id) == [original]
    token_paths = [r.path for r in fake_discord.requests if r.token == handle.token]
    assert [p.split("/")[1] for p in token_paths] == ["interactions", "webhooks", "webhooks", "webhooks"]


async def test_autocomplete_returns_choices(fake_discord: FakeDiscord, run_discord_bot: RunBot) -> None:
    async with run_discord_bot(TestBot()) as bot:
        await bot.tree.sync()
        handle = await fake_discord.autocomplete("imagine", "model", "sd", {"prompt": "x"})
        response = await handle.wait_response()
        assert response.type == CB_AUTOCOMPLETE
        assert [c["value"] for c in handle.choices] == ["sdxl-base", "sd15-anime"]


async def test_nsfw_channel_roles_and_dm_reach_the_bot(fake_discord: FakeDiscord, run_discord_bot: RunBot) -> None:
    async with run_discord_bot(TestBot()) as bot:
        await bot.tree.sync()
        handle = await fake_discord.slash_command("jobs", nsfw_channel=True, user_id=BOB_ID, roles=["artist"])
        assert (await handle.wait_response()).type == CB_MESSAGE
        dm = await fake_discord.slash_command("jobs", dm=True)
        await dm.wait_response()
    in_guild, in_dm = bot.seen
    assert in_guild.channel is not None and in_guild.channel.is_nsfw()  # type: ignore[union-attr]
    assert isinstance(in_guild.user, discord.Member) and [r.id for r in in_guild.user.roles[1:]] == [ARTIST_ROLE_ID]
    assert in_guild.app_permissions.send_messages and in_guild.permissions.attach_files
    assert in_dm.guild is None and isinstance(in_dm.channel, discord.DMChannel)
    assert handle.original is not None and handle.original.ephemeral


async def test_dynamic_button_works_after_restart(fake_discord: FakeDiscord, run_discord_bot: RunBot) -> None:
    first = TestBot()
    async with run_discord_bot(first):
        channel = first.get_partial_messageable(fake_discord.channel_id)
        view = discord.ui.View(timeout=None)
        view.add_item(JobButton("reroll", "team-a", "job-42"))
        message = await channel.send("job-42 done", view=view)
    # A brand-new process: nothing from the first client survives except the message on Discord.
    second = TestBot()
    async with run_discord_bot(second):
        handle = await fake_discord.click("ij:reroll:team-a/job-42", message_id=message.id, user_id=BOB_ID)
        response = await handle.wait_response()
    assert response.type == CB_MESSAGE and response.data is not None
    assert response.data["content"] == "reroll team-a/job-42"
    assert second.clicks == [("reroll", "team-a", "job-42", BOB_ID)] and first.clicks == []
    assert handle.original is not None and handle.original.ephemeral
    assert len(fake_discord.sessions) == 2 and not fake_discord.sessions[0].connected


async def test_button_defer_update_edits_the_clicked_message(
    fake_discord: FakeDiscord, run_discord_bot: RunBot
) -> None:
    async with run_discord_bot(TestBot()):
        message = fake_discord.post_message(
            fake_discord.channel_id,
            "job-7 running",
            components=[
                {
                    "type": 1,
                    "components": [{"type": 2, "style": 4, "label": "Delete", "custom_id": "ij:delete:default/job-7"}],
                }
            ],
        )
        handle = await fake_discord.click("ij:delete:default/job-7", message_id=message.id, roles=["moderator"])
        assert (await handle.wait_response()).type == CB_DEFERRED_UPDATE
        await fake_discord.wait_for(lambda: len(message.history) == 1, what="the edit")
    assert message.contents == ["job-7 running", "deleted default/job-7"]
    assert message.components == [] and handle.original_message_id == message.id
    with pytest.raises(ValueError, match="no component"):
        await fake_discord.click("ij:reroll:default/job-7", message_id=message.id)


async def test_attachment_option_is_downloadable(fake_discord: FakeDiscord, run_discord_bot: RunBot) -> None:
    png = make_png(3, 2)
    async with run_discord_bot(TestBot()) as bot:
        await bot.tree.sync()
        handle = await fake_discord.slash_command("describe", {"image": ("in.png", png, "image/png")})
        response = await handle.wait_response()
    assert response.data is not None and response.data["content"] == f"in.png: {len(png)} bytes, 3x2"


async def test_webhook_token_expires_but_bot_token_edit_works(
    fake_discord: FakeDiscord, run_discord_bot: RunBot
) -> None:
    async with run_discord_bot(TestBot()) as bot:
        await bot.tree.sync()
        handle = await fake_discord.slash_command("imagine", {"prompt": "long job"})
        await asyncio.wait_for(bot.done.wait(), 5)
        interaction = bot.seen[0]
        fake_discord.advance(15 * 60 + 1)
        with pytest.raises(discord.HTTPException) as err:
            await interaction.edit_original_response(content="too late")
        assert (err.value.status, err.value.code) == (401, 50027)
        assert handle.original_message_id is not None
        partial = bot.get_partial_messageable(fake_discord.channel_id).get_partial_message(handle.original_message_id)
        edited = await partial.edit(content="finished via bot token")
        assert edited.content == "finished via bot token"
    assert fake_discord.message(handle.original_message_id).contents[-1] == "finished via bot token"


async def test_429_is_retried_by_discord_py(fake_discord: FakeDiscord, run_discord_bot: RunBot) -> None:
    async with run_discord_bot(TestBot()) as bot:
        await bot.tree.sync()
        channel = bot.get_partial_messageable(fake_discord.channel_id)
        fake_discord.fail_next("POST", r"^/channels/\d+/messages$", 429, retry_after=0.2)
        started = time.monotonic()
        message = await channel.send("progress 10%")
        assert time.monotonic() - started >= 0.2
        posts = fake_discord.requests_to("POST", r"^/channels/\d+/messages$")
        assert [(r.status, r.injected) for r in posts] == [(429, True), (200, False)]
        assert fake_discord.message(message.id).content == "progress 10%"

        # The interaction webhook path (a different code path in discord.py) retries too.
        fake_discord.fail_next("PATCH", r"/messages/@original$", 429, retry_after=0.05)
        await fake_discord.slash_command("imagine", {"prompt": "rl"})
        await asyncio.wait_for(bot.done.wait(), 5)
        patches = fake_discord.requests_to("PATCH", r"/messages/@original$")
        assert [r.status for r in patches] == [429, 200]


async def test_deleted_message_is_not_found(fake_discord: FakeDiscord, run_discord_bot: RunBot) -> None:
    async with run_discord_bot(TestBot()) as bot:
        channel = bot.get_partial_messageable(fake_discord.channel_id)
        message = await channel.send("job message")
        await message.delete()
        with pytest.raises(discord.NotFound) as err:
            await channel.get_partial_message(message.id).edit(content="progress")
        assert err.value.code == 10008
        assert fake_discord.message(message.id).deleted

        # Injected: the same answer for a message that exists.
        other = await channel.send("still here")
        fake_discord.fail_next("GET", rf"/messages/{other.id}$", 404, 10008)
        with pytest.raises(discord.NotFound):
            await channel.fetch_message(other.id)
        assert (await channel.fetch_message(other.id)).content == "still here"


async def test_create_dm_returns_one_dm_channel_per_user_and_closed_dms_are_403(
    fake_discord: FakeDiscord, run_discord_bot: RunBot
) -> None:
    fake_discord.guild.members[1].accepts_dms = False  # bob
    async with run_discord_bot(TestBot()) as bot:
        raw = await bot.http.start_private_message(ALICE_ID)
        assert raw["type"] == 1 and [u["id"] for u in raw["recipients"]] == [str(ALICE_ID)]
        assert (await bot.http.start_private_message(ALICE_ID))["id"] == raw["id"], "one DM channel per user"
        # The same channel Alice's DM interactions come from.
        await bot.tree.sync()
        dm = await fake_discord.slash_command("jobs", dm=True, user_id=ALICE_ID)
        await dm.wait_response()
        assert fake_discord.dm_channel_id(ALICE_ID) == int(raw["id"]) == int(dm.payload["channel_id"])
        channel = await bot.create_dm(discord.Object(ALICE_ID))
        assert isinstance(channel, discord.DMChannel)
        message = await channel.send("your picture")
        stored = fake_discord.message(message.id)
        assert stored.channel_id == int(raw["id"]) and stored.guild_id is None and not stored.ephemeral
        with pytest.raises(discord.NotFound) as unknown:
            await bot.http.start_private_message(42)
        assert unknown.value.code == 10013
        closed = await bot.create_dm(discord.Object(BOB_ID))  # opening works; sending is refused
        with pytest.raises(discord.Forbidden) as refused:
            await closed.send("your picture")
        assert refused.value.code == 50007
        assert fake_discord.messages_in(closed.id) == []


async def test_upload_over_limit_is_413(fake_discord: FakeDiscord, run_discord_bot: RunBot) -> None:
    fake_discord.upload_limit = 64 * 1024
    async with run_discord_bot(TestBot()) as bot:
        channel = bot.get_partial_messageable(fake_discord.channel_id)
        big = discord.File(io.BytesIO(b"\0" * (64 * 1024 + 1)), "big.png")
        with pytest.raises(discord.HTTPException) as err:
            await channel.send("result", file=big)
        assert (err.value.status, err.value.code) == (413, 40005)
        assert fake_discord.messages_in(fake_discord.channel_id) == []


async def test_multipart_attachment_bytes_recorded_and_served(
    fake_discord: FakeDiscord, run_discord_bot: RunBot
) -> None:
    png = make_png(8, 4, pad_to=5000)
    async with run_discord_bot(TestBot()) as bot:
        channel = bot.get_partial_messageable(fake_discord.channel_id)
        message = await channel.send("result", file=discord.File(io.BytesIO(png), "job.png", description="a cat"))
        request = fake_discord.requests_to("POST", r"/messages$")[-1]
        assert [(f.field, f.filename, f.data) for f in request.files] == [("files[0]", "job.png", png)]
        assert request.json["attachments"] == [{"id": 0, "filename": "job.png", "description": "a cat"}]
        attachment = message.attachments[0]
        assert (attachment.size, attachment.width, attachment.height) == (len(png), 8, 4)
        assert await attachment.read() == png  # served back by the fake, a bot may re-download

        # Replace the preview with the final image: the edit keeps history.
        final = make_png(16, 16)
        edited = await message.edit(content="final", attachments=[discord.File(io.BytesIO(final), "final.png")])
        assert [a.filename for a in edited.attachments] == ["final.png"]
    stored = fake_discord.message(message.id)
    assert stored.attachments[0].data == final
    assert [v["attachments"] for v in stored.versions] == [["job.png"], ["final.png"]]


async def test_interaction_rules_deadline_double_ack_and_early_followup(
    fake_discord: FakeDiscord, run_discord_bot: RunBot
) -> None:
    async with run_discord_bot(TestBot()) as bot, aiohttp.ClientSession() as http:
        await bot.tree.sync()
        slow = await fake_discord.slash_command("slow")
        await fake_discord.wait_for(lambda: bot.seen, what="the bot to receive /slow")
        followup_url = f"{fake_discord.api_base}/webhooks/{fake_discord.application_id}/{slow.token}"
        async with http.post(followup_url, json={"content": "too early"}) as resp:
            assert (resp.status, (await resp.json())["code"]) == (404, 10015)  # not acknowledged yet
        fake_discord.advance(3.5)  # the bot missed Discord's 3 s window
        bot.release.set()
        await asyncio.wait_for(bot.done.wait(), 5)
        assert isinstance(bot.errors[0], discord.NotFound) and bot.errors[0].code == 10062
        assert slow.response is None and slow.rejected == [(404, 10062)]

        bot.done.clear()
        jobs = await fake_discord.slash_command("jobs")
        await jobs.wait_response()
        callback_url = f"{fake_discord.api_base}/interactions/{jobs.id}/{jobs.token}/callback"
        async with http.post(callback_url, json={"type": 4, "data": {"content": "again"}}) as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, 40060)
            assert resp.headers["Content-Type"] == "application/json"


async def test_message_limits_are_enforced(fake_discord: FakeDiscord) -> None:
    url = f"{fake_discord.api_base}/channels/{fake_discord.channel_id}/messages"
    headers = {"Authorization": f"Bot {fake_discord.token}"}

    def button(custom_id: str) -> dict[str, Any]:
        return {"type": 2, "style": 2, "label": "x", "custom_id": custom_id}

    bad_bodies: dict[str, dict[str, Any]] = {
        "content": {"content": "x" * 2001},
        "embeds": {"embeds": [{"title": "t"}] * 11},
        "components": {"components": [{"type": 1, "components": [button(f"b{i}")]} for i in range(6)]},
        "custom_id": {"components": [{"type": 1, "components": [button("c" * 101)]}]},
        "row width": {"components": [{"type": 1, "components": [button(f"w{i}") for i in range(6)]}]},
    }
    async with aiohttp.ClientSession(headers=headers) as http:
        for label, body in bad_bodies.items():
            async with http.post(url, json=body) as resp:
                payload = await resp.json()
                assert (resp.status, payload["code"]) == (400, 50035), label
                assert payload["errors"], label
        async with http.post(url, json={"content": "x" * 2000}) as resp:
            assert resp.status == 200
        async with http.post(url, json={"content": ""}) as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, 50006)
        async with http.post(url, json={"content": "x"}, headers={"Authorization": "Bot wrong"}) as resp:
            assert resp.status == 401


async def test_gateway_resume_replays_and_keeps_working(fake_discord: FakeDiscord, run_discord_bot: RunBot) -> None:
    async with run_discord_bot(TestBot()) as bot:
        await bot.tree.sync()
        session = fake_discord.sessions[-1]
        await fake_discord.request_reconnect()
        await fake_discord.wait_for(lambda: session.resumes == 1 and session.connected, what="RESUME")
        handle = await fake_discord.slash_command("jobs")
        assert (await handle.wait_response()).type == CB_MESSAGE
        assert len(fake_discord.sessions) == 1  # resumed, not re-identified


async def test_modal_round_trip(fake_discord: FakeDiscord, run_discord_bot: RunBot) -> None:
    async with run_discord_bot(TestBot()) as bot:
        await bot.tree.sync()
        opened = await fake_discord.slash_command("remix")
        response = await opened.wait_response()
        assert response.type == CB_MODAL and response.data is not None
        assert response.data["title"] == "Remix"
        submitted = await fake_discord.submit_modal(response.data["custom_id"], {"remix-prompt": "a dog"})
        reply = await submitted.wait_response()
    assert reply.type == CB_MESSAGE and reply.data is not None and reply.data["content"] == "remix: a dog"
