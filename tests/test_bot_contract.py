"""Contract tests: the real discord.py bot against the fake Discord and the Kubernetes API stand-in.

The tests play the operator by writing `status` into the stand-in; images are real
objects in nanio, and checkpoints come from the ComfyUI stand-in.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfykube.settings import Settings
from comfykube_bot.jobs import Delivery
from tests.standins.discord import (
    ARTIST_ROLE_ID,
    CB_DEFERRED,
    EVERYONE_PERMISSIONS,
    F_EPHEMERAL,
    ChannelSpec,
    FakeDiscord,
    GuildSpec,
    InteractionHandle,
    MemberSpec,
    RoleSpec,
    default_guild,
    make_png,
)
from tests.test_bot_support import BotWorld, bot_world, ephemeral_text, wait_for

OTHER_GUILD = 1200000000000000099
OTHER_CHANNEL = 1300000000000000099


@pytest.fixture
def core(tmp_path: Path, s3_server: Any, s3_bucket: str, comfyui: Any) -> Settings:
    """comfykube settings: nanio for images, the ComfyUI stand-in for checkpoints."""
    return s3_server.settings(s3_bucket, comfyui_url=comfyui.url, output_dir=tmp_path / "out")


async def imagine(world: BotWorld, options: dict[str, Any], **kw: Any) -> tuple[InteractionHandle, str]:
    """Run /imagine and wait until the bot's ephemeral reply is final; returns (handle, job name)."""
    handle = await world.fake.slash_command("imagine", options, **kw)
    await handle.wait_response()
    await wait_for(lambda: ephemeral_text(handle) and "Submitting" not in ephemeral_text(handle), what="reply text")
    return handle, f"ij-{handle.id}"


def message_of(world: BotWorld, name: str) -> Any:
    job = world.job(name)
    assert job is not None
    return world.fake.message(int(job["metadata"]["annotations"]["comfykube.dev/discord-message"]))


def result_versions(msg: Any) -> list[dict[str, Any]]:
    """Versions of a message that carry attachments (the result edit)."""
    return [v for v in msg.versions if v["attachments"]]


async def no_more_requests(world: BotWorld, settle: float = 0.6) -> int:
    """Wait until the bot has been quiet for `settle` seconds; return the request count."""
    count = -1
    while count != len(world.fake.requests):
        count = len(world.fake.requests)
        await asyncio.sleep(settle)
    return count


# ----------------------------------------------------------------------------- /imagine


async def test_imagine_defers_in_time_and_creates_the_imagejob(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running():
        fake = world.fake
        cmd = fake.command("imagine")
        assert cmd is not None
        options = {o["name"]: o for o in cmd["options"]}
        assert options["steps"]["min_value"] == 1 and options["steps"]["max_value"] == 150
        assert options["model"]["autocomplete"] is True and len(options["aspect"]["choices"]) <= 25

        handle, name = await imagine(world, {"prompt": "a lighthouse at dusk --ar 16:9 --no text", "steps": 25,
                                              "seed": 42, "count": 2, "spoiler": True})
        response = handle.response
        assert response is not None and response.type == CB_DEFERRED
        assert response.at - handle.created_at < 1.0, "deferral must come well within Discord's 3 s"
        assert response.data and response.data["flags"] & F_EPHEMERAL

        job = world.job(name)
        assert job is not None
        spec, meta = job["spec"], job["metadata"]
        assert spec["prompt"] == "a lighthouse at dusk" and spec["negativePrompt"] == "text"
        assert (spec["width"], spec["height"], spec["steps"], spec["seed"], spec["batchSize"]) == (704, 384, 25, 42, 2)
        assert meta["labels"] == {
            "comfykube.dev/requester": str(fake.user_ids["alice"]),
            "comfykube.dev/guild": str(fake.guild_id),
            "comfykube.dev/channel": str(fake.channel_id),
            "app.kubernetes.io/managed-by": "comfykube-bot",
        }
        ann = meta["annotations"]
        assert ann["comfykube.dev/discord-channel"] == str(fake.channel_id)
        assert ann["comfykube.dev/discord-spoiler"] == "true"
        msg = fake.message(int(ann["comfykube.dev/discord-message"]))
        assert not msg.ephemeral and msg.channel_id == fake.channel_id
        assert msg.custom_ids() == [f"ij:cancel:default/{name}"]
        assert "Waiting" in msg.content
        assert f"Queued as `{name}`" in ephemeral_text(handle) and handle.original and handle.original.ephemeral


async def test_bad_option_gets_an_ephemeral_reply_naming_the_field(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running():
        handle, _ = await imagine(world, {"prompt": "a cat --steps 500"})
        assert "`steps` must be between 1 and 150 (got 500)" in ephemeral_text(handle)
        handle, _ = await imagine(world, {"prompt": "a cat", "width": 513})
        assert "`width` must be a multiple of 8 from 64 to 2048 (got 513)" in ephemeral_text(handle)
        handle, _ = await imagine(world, {"prompt": "a cat --sed 4"})
        assert "unknown flag --sed" in ephemeral_text(handle)
        handle, _ = await imagine(world, {"prompt": "a cat", "model": "missing.safetensors"})
        text = ephemeral_text(handle)
        assert "`model`: `missing.safetensors` is not installed" in text and "sd15-base.safetensors" in text
        assert handle.original and handle.original.ephemeral
        assert world.jobs() == []
        assert [m for m in world.fake.messages_in(world.fake.channel_id) if not m.ephemeral] == []


async def test_model_autocomplete_comes_from_comfyui_checkpoints(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running(bot_nsfw_models="random*") as bot:
        await wait_for(lambda: bot.checkpoints.names, what="checkpoint cache")
        handle = await world.fake.autocomplete("imagine", "model", "sd")
        await handle.wait_response()
        assert [c["value"] for c in handle.choices] == ["sd15-base.safetensors"]
        handle = await world.fake.autocomplete("imagine", "model", "")
        await handle.wait_response()
        assert "random-sd15.safetensors" not in [c["value"] for c in handle.choices]  # NSFW: not in #general
        handle = await world.fake.autocomplete("imagine", "model", "", channel_id=world.fake.nsfw_channel_id)
        await handle.wait_response()
        assert "random-sd15.safetensors" in [c["value"] for c in handle.choices]


# ----------------------------------------------------------------------------- policies


def two_guilds() -> FakeDiscord:
    other = GuildSpec(OTHER_GUILD, "elsewhere", channels=[ChannelSpec(OTHER_CHANNEL, "other-general")],
                      roles=[RoleSpec(OTHER_GUILD, "@everyone", EVERYONE_PERMISSIONS)],
                      members=[MemberSpec(1500000000000000001, "alice")])
    return FakeDiscord(guilds=[default_guild(), other])


async def test_refused_guild_channel_role_and_dm(tmp_path: Path, core: Settings) -> None:
    fake = two_guilds()
    async with bot_world(tmp_path, core, fake=fake) as world:
        general = fake.channel_id
        async with world.running(bot_allowed_guilds=str(fake.guild_id), bot_allowed_channels=str(general),
                                 bot_allowed_roles=str(ARTIST_ROLE_ID)):
            h, _ = await imagine(world, {"prompt": "cat"}, guild_id=OTHER_GUILD, channel_id=OTHER_CHANNEL)
            assert "not enabled in this server" in ephemeral_text(h)
            h, _ = await imagine(world, {"prompt": "cat"}, channel_id=fake.nsfw_channel_id)
            assert "don't render in this channel" in ephemeral_text(h)
            h, _ = await imagine(world, {"prompt": "cat"}, user_id=fake.user_ids["bob"])  # bob lacks the role
            assert "You need one of these roles" in ephemeral_text(h)
            h, _ = await imagine(world, {"prompt": "cat"}, dm=True)
            assert "direct messages" in ephemeral_text(h)
            assert world.jobs() == []
            h, name = await imagine(world, {"prompt": "cat"})  # alice, artist, #general: allowed
            assert world.job(name) is not None


async def test_dms_work_when_enabled(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running(bot_allow_dms=True):
        _, name = await imagine(world, {"prompt": "cat"}, dm=True)
        job = world.job(name)
        assert job is not None and job["metadata"]["labels"]["comfykube.dev/guild"] == "dm"


async def test_user_over_active_job_cap_is_refused_counting_imagejobs(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running(bot_max_active_jobs=2):
        alice = str(world.fake.user_ids["alice"])
        # Two of alice's jobs exist already (created by an earlier bot process: not in this one's memory).
        for i in range(2):
            world.create_job(f"old-{i}", {"prompt": "x"}, labels={"comfykube.dev/requester": alice}, signed=True)
        world.patch_status("old-1", phase="Running")
        h, _ = await imagine(world, {"prompt": "cat"})
        assert "already have 2 jobs in progress (limit 2)" in ephemeral_text(h)
        world.patch_status("old-0", phase="Succeeded")
        h, name = await imagine(world, {"prompt": "cat"})
        assert world.job(name) is not None and "2 of 2 active jobs" in ephemeral_text(h)


async def test_cooldown_refuses_a_quick_second_request(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running(bot_cooldown_seconds=60):
        _, first = await imagine(world, {"prompt": "cat"})
        h, _ = await imagine(world, {"prompt": "dog"})
        assert re.search(r"ask again in (59 s|1 min)", ephemeral_text(h))
        assert [j["metadata"]["name"] for j in world.jobs()] == [first]


async def test_queue_cap_refuses_when_too_many_jobs_wait(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running(bot_queue_cap=3):
        for i in range(3):
            world.create_job(f"waiting-{i}", {"prompt": "x"}, labels={"comfykube.dev/requester": str(9000 + i)},
                             signed=True)
        h, _ = await imagine(world, {"prompt": "cat"})
        assert "The queue is full (3 jobs waiting)" in ephemeral_text(h)


async def test_denied_prompt_and_nsfw_model_in_a_safe_channel(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running(
        bot_deny_patterns=r"\bgore\b", bot_nsfw_models="random-*"
    ):
        h, _ = await imagine(world, {"prompt": "lots of GORE please"})
        assert "can't draw that" in ephemeral_text(h) and "GORE" in ephemeral_text(h)
        h, _ = await imagine(world, {"prompt": "a portrait", "model": "random-sd15.safetensors"})
        assert "may only be used in channels marked NSFW" in ephemeral_text(h)
        assert world.jobs() == []
        h, name = await imagine(world, {"prompt": "a portrait", "model": "random-sd15.safetensors"},
                                channel_id=world.fake.nsfw_channel_id)
        assert world.job(name) is not None


# ----------------------------------------------------------------------------- progress and result


async def test_status_changes_edit_the_message_within_the_throttle_and_result_has_the_stored_bytes(
    tmp_path: Path, core: Settings
) -> None:
    async with bot_world(tmp_path, core) as world, world.running(bot_edit_interval_seconds=0.5) as bot:
        _, name = await imagine(world, {"prompt": "a fox"})
        msg = message_of(world, name)
        world.patch_status(name, phase="Queued", queuePosition=1)
        await wait_for(lambda: "position 2" in msg.content, what="queued edit")
        for step in range(1, 21):  # 20 progress writes in ~1 s
            world.patch_status(name, phase="Running", progress={"value": step, "max": 20})
            await asyncio.sleep(0.05)
        await wait_for(lambda: "step 20/20" in msg.content, what="last progress state")
        world.patch_status(name, phase="Uploading")
        await wait_for(lambda: "Uploading" in msg.content, what="uploading edit")
        png = make_png(48, 32, pad_to=5000)
        _, sha = await world.succeed(name, png, seed=777)
        await wait_for(lambda: result_versions(msg), what="result edit")

        edits = [t for t, mid, _route in bot.updater.edit_log if mid == msg.id]
        gaps = [b - a for a, b in itertools.pairwise(edits)]
        assert gaps and min(gaps) >= 0.5 - 0.02, f"edits closer than the throttle: {gaps}"
        assert len(edits) < 20, "progress states must be coalesced"
        final = msg.versions[-1]
        assert "✅ **Done** in 1 min 5 s" in final["content"]
        attachment = msg.attachments[0]
        assert hashlib.sha256(attachment.data).hexdigest() == sha and attachment.data == png
        assert attachment.filename.startswith(name)
        embed = final["embeds"][0]
        assert embed["footer"]["text"] == f"default/{name} · Succeeded"
        assert {"name": "Seed", "value": "`777`", "inline": True} in embed["fields"]
        assert any(f["name"] == "Time taken" for f in embed["fields"])
        buttons = [c for row in final["components"] for c in row["components"]]
        assert buttons[0]["style"] == 5 and "link expires" in buttons[0]["label"]
        await wait_for(lambda: world.job(name)["metadata"]["annotations"].get(
            "comfykube.dev/discord-delivered", "").startswith(f"message={msg.id}"), what="delivery record")


async def test_failure_shows_the_operators_short_reason(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running():
        _, name = await imagine(world, {"prompt": "a fox"})
        msg = message_of(world, name)
        world.patch_status(name, phase="Failed", reason="PreflightFailed",
                           message="checkpoint 'gone.safetensors' is not offered by this ComfyUI; "
                                   "available: sd15-base.safetensors")
        await wait_for(lambda: "Failed" in msg.content, what="failure edit")
        assert "PreflightFailed: checkpoint 'gone.safetensors' is not offered" in msg.content
        assert "sd15-base.safetensors" in msg.content and "Traceback" not in msg.content
        assert msg.custom_ids() == [f"ij:reroll:default/{name}", f"ij:delete:default/{name}"]


async def test_oversized_image_gets_a_reencoded_preview(tmp_path: Path, core: Settings) -> None:
    from io import BytesIO

    from PIL import Image

    fake = FakeDiscord(upload_limit=200_000)
    noisy = Image.effect_noise((700, 700), 80).convert("RGB")
    buf = BytesIO()
    noisy.save(buf, "PNG")
    big = buf.getvalue()
    assert len(big) > 200_000
    async with bot_world(tmp_path, core, fake=fake) as world, world.running():
        _, name = await imagine(world, {"prompt": "noise"})
        msg = message_of(world, name)
        await world.succeed(name, big)
        await wait_for(lambda: result_versions(msg), what="result edit")
        attachment = msg.attachments[0]
        assert attachment.filename.endswith("-preview.jpg") and len(attachment.data) <= 200_000
        note = next(f for f in msg.embeds[0]["fields"] if f["name"] == "Note")
        assert "preview" in note["value"] and "Full size behind the link" in note["value"]


async def test_expired_interaction_token_falls_back_to_the_bot_token(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running():
        fake = world.fake
        handle, name = await imagine(world, {"prompt": "a slow CPU render"})
        msg = message_of(world, name)
        world.patch_status(name, phase="Running", progress={"value": 1, "max": 20})
        await wait_for(lambda: "step 1/20" in msg.content, what="token edit")
        assert fake.requests_to("PATCH", rf"/webhooks/.*/messages/{msg.id}$")[-1].status == 200

        fake.advance(16 * 60)  # CPU mode: 9+ minutes per image; the 15-minute token is gone
        world.patch_status(name, phase="Running", progress={"value": 10, "max": 20})
        await wait_for(lambda: "step 10/20" in msg.content, what="edit after expiry")
        webhook_edits = fake.requests_to("PATCH", rf"/webhooks/.*/messages/{msg.id}$")
        assert webhook_edits[-1].status == 401 and webhook_edits[-1].response["code"] == 50027
        channel_edits = fake.requests_to("PATCH", rf"/channels/{fake.channel_id}/messages/{msg.id}$")
        assert channel_edits and channel_edits[-1].status == 200
        assert channel_edits[-1].auth == f"Bot {fake.token}"

        _, sha = await world.succeed(name)
        await wait_for(lambda: result_versions(msg), what="result with the bot token")
        assert hashlib.sha256(msg.attachments[0].data).hexdigest() == sha
        assert len(fake.requests_to("PATCH", rf"/webhooks/.*/messages/{msg.id}$")) == len(webhook_edits)
        del handle


# ----------------------------------------------------------------------------- restarts


async def test_restart_while_running_result_edits_the_same_message_exactly_once(
    tmp_path: Path, core: Settings
) -> None:
    async with bot_world(tmp_path, core) as world:
        async with world.running():
            _, name = await imagine(world, {"prompt": "a fox"})
            msg = message_of(world, name)
            world.patch_status(name, phase="Running", progress={"value": 3, "max": 20})
            await wait_for(lambda: "step 3/20" in msg.content, what="progress before restart")
        world.patch_status(name, phase="Running", progress={"value": 12, "max": 20})  # while the bot is down
        async with world.running() as second:
            await wait_for(lambda: "step 12/20" in msg.content, what="state refreshed after restart")
            _, sha = await world.succeed(name)
            await wait_for(lambda: second.deliverer.delivered, what="result after restart")
            await no_more_requests(world)
            assert second.deliverer.delivered == [(f"default/{name}", msg.id)]
        async with world.running() as third:  # and once more: nothing is posted again
            await no_more_requests(world)
            assert third.deliverer.delivered == []
        assert len(result_versions(msg)) == 1
        assert hashlib.sha256(msg.attachments[0].data).hexdigest() == sha
        assert [m.id for m in world.fake.messages_in(world.fake.channel_id) if not m.ephemeral] == [msg.id]


async def test_catch_up_posts_a_result_that_finished_while_the_bot_was_down_once(
    tmp_path: Path, core: Settings
) -> None:
    async with bot_world(tmp_path, core) as world:
        async with world.running():
            _, name = await imagine(world, {"prompt": "a fox"})
            msg = message_of(world, name)
        _, sha = await world.succeed(name)  # finished while no bot was running
        async with world.running() as bot:
            await wait_for(lambda: bot.deliverer.delivered, what="catch-up delivery")
            assert bot.deliverer.delivered == [(f"default/{name}", msg.id)]
        async with world.running() as bot:
            await no_more_requests(world)
            assert bot.deliverer.delivered == []
        assert len(result_versions(msg)) == 1 and hashlib.sha256(msg.attachments[0].data).hexdigest() == sha


async def test_kill_between_post_and_record_does_not_post_twice(tmp_path: Path, core: Settings) -> None:
    claims = "comfykube.dev/v1alpha1/imagejobs"
    async with bot_world(tmp_path, core) as world:
        async with world.running():
            _, posted = await imagine(world, {"prompt": "a fox"})
            _, unposted = await imagine(world, {"prompt": "a hare"})
            posted_msg, unposted_msg = message_of(world, posted), message_of(world, unposted)
            await world.succeed(posted)
            await wait_for(lambda: result_versions(posted_msg), what="result")
            await no_more_requests(world)
        # Leave the claims that a process killed after posting (`posted`) and before posting
        # (`unposted`) would have left behind: claimed, never recorded.
        await world.succeed(unposted)
        for name in (posted, unposted):
            world.kube.patch_object(claims, "default", name, {"metadata": {"annotations": {
                "comfykube.dev/discord-delivered": Delivery.claim_value("dead-pod")}}})
        async with world.running() as bot:
            await wait_for(lambda: len(bot.deliverer.delivered) == 2, what="both recovered")
            await no_more_requests(world)
        assert len(result_versions(posted_msg)) == 1, "already posted: recorded, not posted again"
        assert len(result_versions(unposted_msg)) == 1, "not posted before the kill: posted now"
        for name, message in ((posted, posted_msg), (unposted, unposted_msg)):
            record = Delivery.parse(world.job(name)["metadata"]["annotations"]["comfykube.dev/discord-delivered"])
            assert record.state == "done" and record.message_id == message.id


# ----------------------------------------------------------------------------- buttons


async def test_buttons_work_after_a_restart(tmp_path: Path, core: Settings) -> None:
    core = core.model_copy(update={"presign_expiry_seconds": 7200})
    async with bot_world(tmp_path, core) as world:
        fake = world.fake
        alice, bob = fake.user_ids["alice"], fake.user_ids["bob"]
        async with world.running():
            _, name = await imagine(world, {"prompt": "a fox", "seed": 5})
            msg = message_of(world, name)
            image, sha = await world.succeed(name)
            await wait_for(lambda: result_versions(msg), what="result")
        async with world.running():  # a new client: the buttons must work from the ImageJob alone
            click = await fake.click(f"ij:link:default/{name}", message_id=msg.id, user_id=bob)
            await click.wait_response()
            await wait_for(lambda: "Fresh link" in ephemeral_text(click), what="fresh link")
            assert click.original and click.original.ephemeral
            url = re.search(r"\((http[^)]+)\)", ephemeral_text(click)).group(1)  # type: ignore[union-attr]
            assert url != image["url"] and "X-Amz-Expires=7200" in url
            async with httpx.AsyncClient() as http:
                body = (await http.get(url)).content
            assert hashlib.sha256(body).hexdigest() == sha

            click = await fake.click(f"ij:reroll:default/{name}", message_id=msg.id, user_id=alice)
            await click.wait_response()
            rerolled = f"ij-{click.id}"
            job = await wait_for(lambda: world.job(rerolled), what="rerolled job")
            original = world.job(name)
            assert original is not None
            assert job["spec"]["seed"] != 5 and job["spec"]["prompt"] == original["spec"]["prompt"]
            assert job["metadata"]["annotations"]["comfykube.dev/reroll-of"] == f"default/{name}"
            await wait_for(lambda: "Queued as" in ephemeral_text(click), what="reroll ack")
            new_msg = message_of(world, rerolled)

            click = await fake.click(f"ij:cancel:default/{rerolled}", message_id=new_msg.id, user_id=bob)
            await click.wait_response()
            await wait_for(lambda: ephemeral_text(click), what="refusal")
            assert "Only the person who asked" in ephemeral_text(click) and world.job(rerolled) is not None

            click = await fake.click(f"ij:cancel:default/{rerolled}", message_id=new_msg.id, user_id=alice)
            await click.wait_response()
            await wait_for(lambda: "Cancelled" in ephemeral_text(click), what="cancel ack")
            assert world.job(rerolled) is None
            await wait_for(lambda: "Cancelled** by its owner" in new_msg.content, what="message shows the cancel")

            click = await fake.click(f"ij:delete:default/{name}", message_id=msg.id, user_id=bob)
            await click.wait_response()
            await wait_for(lambda: ephemeral_text(click), what="delete refusal")
            assert "or a moderator" in ephemeral_text(click) and not msg.deleted
            click = await fake.click(f"ij:delete:default/{name}", message_id=msg.id, user_id=fake.user_ids["mod"])
            await click.wait_response()
            await wait_for(lambda: msg.deleted, what="message deleted by a moderator")
            await wait_for(lambda: world.job(name) is None, what="job deleted")


async def test_kubectl_job_with_notify_channel_gets_its_result_posted(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running() as bot:
        fake = world.fake
        world.create_job("from-kubectl", {"prompt": "a castle", "notify": {"discord": {
            "channelId": str(fake.channel_id)}}})
        world.create_job("no-notify", {"prompt": "a moat"})
        world.patch_status("from-kubectl", phase="Running", progress={"value": 1, "max": 2})
        _, sha = await world.succeed("from-kubectl")
        await world.succeed("no-notify")
        posted = await wait_for(lambda: [m for m in fake.messages_in(fake.channel_id) if m.attachments],
                                what="notify post")
        await no_more_requests(world)
        assert len(posted) == 1 and hashlib.sha256(posted[0].attachments[0].data).hexdigest() == sha
        assert posted[0].embeds[0]["footer"]["text"] == "default/from-kubectl · Succeeded"
        record = Delivery.parse(world.job("from-kubectl")["metadata"]["annotations"]["comfykube.dev/discord-delivered"])
        assert record.message_id == posted[0].id
        assert "comfykube.dev/discord-delivered" not in (world.job("no-notify")["metadata"].get("annotations") or {})
        assert bot.deliverer.delivered == [("default/from-kubectl", posted[0].id)]


# ----------------------------------------------------------------------------- lists, health, metrics


async def test_jobs_and_queue_commands(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running():
        fake = world.fake
        _, mine = await imagine(world, {"prompt": "my fox"})
        world.create_job("someone-else", {"prompt": "their hare"}, labels={"comfykube.dev/requester": "77"},
                         signed=True)
        world.patch_status("someone-else", phase="Running", progress={"value": 2, "max": 20})
        h = await fake.slash_command("jobs")
        await h.wait_response()
        await wait_for(lambda: ephemeral_text(h), what="/jobs")
        assert f"`{mine}`" in ephemeral_text(h) and "someone-else" not in ephemeral_text(h)
        assert "[message](https://discord.com/channels/" in ephemeral_text(h)
        h = await fake.slash_command("queue")
        await h.wait_response()
        await wait_for(lambda: ephemeral_text(h), what="/queue")
        text = ephemeral_text(h)
        assert "1 waiting" in text and "1 rendering" in text
        assert text.index("someone-else") < text.index(mine), "running jobs first, then the waiting ones"
        assert h.original and h.original.ephemeral


async def test_health_readiness_and_metrics(tmp_path: Path, core: Settings) -> None:
    from comfykube_bot.health import HealthServer

    async with bot_world(tmp_path, core) as world:
        bot = await world.make_bot()
        health = HealthServer(bot, bot.metrics, host="127.0.0.1")
        await health.start(-1, -1)
        try:
            base = f"http://127.0.0.1:{health.ports['health']}"
            async with httpx.AsyncClient() as http:
                assert (await http.get(base + "/readyz")).status_code == 503
                async with world.running(bot):
                    assert (await http.get(base + "/healthz")).status_code == 200
                    assert (await http.get(base + "/readyz")).status_code == 200
                    await imagine(world, {"prompt": "cat --steps 999"})
                    world.fake.fail_next("PATCH", r"/webhooks/", 429, retry_after=0.05)
                    _, name = await imagine(world, {"prompt": "cat"})
                    world.patch_status(name, phase="Running", progress={"value": 1, "max": 2})
                    await wait_for(lambda: "step 1/2" in message_of(world, name).content, what="edit")
                    text = (await http.get(f"http://127.0.0.1:{health.ports['metrics']}/metrics")).text
            assert 'comfykube_bot_interactions_total{kind="command",name="imagine",outcome="created"} 1.0' in text
            assert 'comfykube_bot_refusals_total{reason="InvalidOption"} 1.0' in text
            assert "comfykube_bot_defer_seconds_count 2.0" in text
            assert re.search(r'comfykube_bot_message_edits_total\{outcome="ok",route="token"\} [1-9]', text)
            assert re.search(r'comfykube_bot_discord_429_total\{source="discord.py"\} [1-9]', text)
        finally:
            await health.stop()


# ----------------------------------------------------------------------------- Discord's refusals


async def test_guild_sync_default_intents_and_spoiler(tmp_path: Path, core: Settings) -> None:
    import discord

    async with bot_world(tmp_path, core) as world:
        fake = world.fake
        async with world.running(discord_guild_sync=str(fake.guild_id)):
            assert fake.command("imagine", fake.guild_id) is not None and fake.commands() == []
            assert fake.sessions[-1].intents == discord.Intents.default().value
            _, name = await imagine(world, {"prompt": "a surprise", "spoiler": True})
            msg = message_of(world, name)
            await world.succeed(name)
            await wait_for(lambda: result_versions(msg), what="result")
            assert msg.attachments[0].filename.startswith("SPOILER_")


async def test_deleted_job_message_gets_the_result_as_a_new_message(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running() as bot:
        fake = world.fake
        _, name = await imagine(world, {"prompt": "a fox"})
        msg = message_of(world, name)
        fake.advance(16 * 60)  # bot-token path: a moderator removed the message by hand meanwhile
        msg.deleted = True
        _, sha = await world.succeed(name)
        await wait_for(lambda: bot.deliverer.delivered, what="delivery")
        [posted] = [m for m in fake.messages_in(fake.channel_id) if m.attachments]
        assert posted.id != msg.id and hashlib.sha256(posted.attachments[0].data).hexdigest() == sha
        assert bot.deliverer.delivered == [(f"default/{name}", posted.id)]


async def test_upload_limit_lower_than_known_shrinks_after_413(tmp_path: Path, core: Settings) -> None:
    from io import BytesIO

    from PIL import Image

    noisy = Image.effect_noise((600, 600), 80).convert("RGB")
    buf = BytesIO()
    noisy.save(buf, "PNG")
    async with bot_world(tmp_path, core) as world, world.running():
        fake = world.fake
        _, name = await imagine(world, {"prompt": "noise"})  # the interaction said 10 MiB
        msg = message_of(world, name)
        fake.advance(16 * 60)
        fake.upload_limit = 120_000  # ...but the channel takes less (the bot token's own limit)
        await world.succeed(name, buf.getvalue())
        await wait_for(lambda: result_versions(msg), within=15, what="shrunk result")
        assert any(r.status == 413 for r in fake.requests_to("PATCH", rf"/channels/.*/messages/{msg.id}$"))
        assert len(msg.attachments[0].data) <= 120_000 and msg.attachments[0].filename.endswith(".jpg")
