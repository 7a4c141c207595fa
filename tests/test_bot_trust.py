"""The bot trusts only what it wrote itself: regression tests for issue 9.

The real discord.py bot against the fake Discord and the Kubernetes API stand-in;
the tests play the operator (status) and a kubectl user (ImageJobs made by hand).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from comfykube.readback import read_spec, read_status
from comfykube.settings import Settings
from comfykube.types import Phase
from comfykube_bot.jobs import Delivery
from comfykube_bot.markdown import code, escape
from comfykube_bot.policy import Policy
from comfykube_bot.settings import BotSettings
from tests.test_bot_contract import imagine, message_of, no_more_requests
from tests.test_bot_support import BotWorld, bot_world, wait_for

NSFW_MODEL = "random-sd15.safetensors"


@pytest.fixture
def core(tmp_path: Path, s3_server: Any, s3_bucket: str, comfyui: Any) -> Settings:
    """comfykube settings: nanio for images, the ComfyUI stand-in for checkpoints."""
    return s3_server.settings(s3_bucket, comfyui_url=comfyui.url, output_dir=tmp_path / "out")


def delivery(world: BotWorld, name: str) -> Delivery:
    job = world.job(name)
    assert job is not None
    return Delivery.parse((job["metadata"].get("annotations") or {}).get("comfykube.dev/discord-delivered"))


def notify(channel_id: int) -> dict[str, Any]:
    return {"discord": {"channelId": str(channel_id)}}


# ----------------------------------------------------------------------------- the model actually used


async def test_a_fallback_nsfw_checkpoint_is_not_shown_in_a_safe_channel(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running(bot_nsfw_models="random-*"):
        # No model asked for: the bot checks the workflow's default (safe) and admits the job ...
        _, name = await imagine(world, {"prompt": "a portrait"})
        msg = message_of(world, name)
        # ... but the operator fell back to the NSFW checkpoint and recorded it.
        await world.succeed(name, model=NSFW_MODEL)
        await wait_for(lambda: "Not shown here" in msg.content, what="withheld result")
        assert msg.attachments == [], "the picture must not be attached in a non-NSFW channel"
        buttons = [c for row in msg.versions[-1]["components"] for c in row["components"]]
        assert all(b.get("style") != 5 for b in buttons), "no link button to the picture either"
        assert f"ij:link:default/{name}" not in msg.custom_ids()
        assert "random-sd15.safetensors" in msg.content and "NSFW" in msg.content
        await wait_for(lambda: delivery(world, name).message_id == msg.id, what="delivery record")

        # In a channel marked NSFW the same result is shown.
        _, nsfw_name = await imagine(world, {"prompt": "a portrait"}, channel_id=world.fake.nsfw_channel_id)
        nsfw_msg = message_of(world, nsfw_name)
        await world.succeed(nsfw_name, model=NSFW_MODEL)
        await wait_for(lambda: nsfw_msg.attachments, what="result in the NSFW channel")
        assert "`random-sd15.safetensors`" in str(nsfw_msg.embeds[0]["fields"])


# ----------------------------------------------------------------------------- jobs made with kubectl


async def test_kubectl_notify_goes_through_the_channel_allow_list_deny_list_and_nsfw_rule(
    tmp_path: Path, core: Settings
) -> None:
    async with bot_world(tmp_path, core) as world:
        fake = world.fake
        general, nsfw = fake.channel_id, fake.nsfw_channel_id
        async with world.running(bot_allowed_channels=str(general), bot_deny_patterns=r"\bgore\b",
                                 bot_nsfw_models="random-*") as bot:
            world.create_job("elsewhere", {"prompt": "a castle", "notify": notify(nsfw)})
            world.create_job("denied", {"prompt": "lots of ｇｏｒｅ", "notify": notify(general)})
            world.create_job("hidden", {"prompt": "lots of go\u200bre", "notify": notify(general)})
            world.create_job("nsfw-model", {"prompt": "a portrait", "notify": notify(general)})
            world.create_job("fine", {"prompt": "a meadow", "notify": notify(general)})
            for name in ("elsewhere", "denied", "hidden", "fine"):
                await world.succeed(name)
            await world.succeed("nsfw-model", model=NSFW_MODEL)
            await wait_for(lambda: all(delivery(world, n).state == "done"
                                       for n in ("elsewhere", "denied", "hidden", "nsfw-model", "fine")),
                           what="every delivery decided")
            await no_more_requests(world)
            assert delivery(world, "elsewhere").refused == "ChannelNotAllowed"
            assert delivery(world, "denied").refused == "PromptDenied"
            assert delivery(world, "hidden").refused == "PromptDenied"
            assert delivery(world, "nsfw-model").refused == "NsfwModel"
            assert delivery(world, "fine").message_id is not None
            assert [m for m in fake.messages_in(nsfw) if not m.ephemeral] == []
            posted = [m for m in fake.messages_in(general) if m.attachments]
            assert [m.embeds[0]["footer"]["text"] for m in posted] == ["default/fine · Succeeded"]
            assert [k for k, _ in bot.deliverer.delivered if k == "default/fine"] == ["default/fine"]


async def test_a_kubectl_requester_label_pings_nobody_and_owns_nothing(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running():
        fake = world.fake
        alice = fake.user_ids["alice"]
        world.create_job("ping-alice", {"prompt": "a castle", "notify": notify(fake.channel_id)},
                         labels={"comfykube.dev/requester": str(alice),
                                 "app.kubernetes.io/managed-by": "comfykube-bot"})
        await world.succeed("ping-alice")
        posted = await wait_for(lambda: [m for m in fake.messages_in(fake.channel_id) if m.attachments],
                                what="notify post")
        assert f"<@{alice}>" not in posted[0].content
        # Not alice's job: /jobs does not list it for her, and it does not count against her limit.
        handle = await fake.slash_command("jobs", {})
        await handle.wait_response()
        await wait_for(lambda: handle.original and "jobs" in handle.original.content.lower(), what="/jobs answer")
        assert "ping-alice" not in handle.original.content


async def test_a_kubectl_job_cannot_make_the_bot_edit_a_message_it_did_not_record(
    tmp_path: Path, core: Settings
) -> None:
    async with bot_world(tmp_path, core) as world, world.running():
        fake = world.fake
        _, name = await imagine(world, {"prompt": "a fox"})
        victim = message_of(world, name)
        versions = len(victim.versions)
        forged = {"comfykube.dev/discord-message": str(victim.id),
                  "comfykube.dev/discord-channel": str(fake.channel_id)}
        # Copying the annotations (even a signature of another job) does not make them ours.
        signature = world.job(name)["metadata"]["annotations"]["comfykube.dev/discord-signature"]
        world.create_job("forger", {"prompt": "mean words", "notify": notify(fake.channel_id)},
                         annotations=forged)
        world.create_job("copier", {"prompt": "more mean words"},
                         annotations={**forged, "comfykube.dev/discord-signature": signature})
        world.patch_status("forger", phase="Running", progress={"value": 1, "max": 2})
        world.patch_status("copier", phase="Running", progress={"value": 1, "max": 2})
        await world.succeed("forger")
        await world.succeed("copier")
        await wait_for(lambda: delivery(world, "forger").state == "done", what="forger delivered")
        await no_more_requests(world)
        assert len(victim.versions) == versions and "mean words" not in str(victim.embeds)
        posted = [m for m in fake.messages_in(fake.channel_id) if m.attachments]
        assert [m.embeds[0]["footer"]["text"] for m in posted] == ["default/forger · Succeeded"]
        assert delivery(world, "forger").message_id == posted[0].id != victim.id
        assert delivery(world, "copier").state == "none", "no notify target: the bot is not responsible"


# ----------------------------------------------------------------------------- escaping and folding


async def test_prompts_in_embeds_are_escaped(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running():
        prompt = "[free nitro](https://evil.example) **now** <@1> ends `here"
        _, name = await imagine(world, {"prompt": prompt})
        msg = message_of(world, name)
        description = msg.embeds[0]["description"]
        assert "[free nitro](" not in description and r"\[free nitro\]\(https://evil.example\)" in description
        assert r"\*\*now\*\*" in description and r"\<@1>" in description and r"\`here" in description


def test_escape_code_and_deny_list_folding() -> None:
    assert escape("[a](http://x)") == r"\[a\]\(http://x\)"
    assert escape("# title\n> quote\n1. item") == "\\# title\n\\> quote\n1\\. item"
    assert code("weird`name.safetensors") == "`weirdˋname.safetensors`"
    policy = Policy(BotSettings(discord_token="t", bot_deny_patterns=r"\bgore\b"))  # type: ignore[arg-type]
    for sneaky in ("ｇｏｒｅ", "go\u200bre", "g\u00adore", "GO\u2060RE", "𝐠𝐨𝐫𝐞"):
        refusal = policy.check_prompt(f"lots of {sneaky}")
        assert refusal is not None and refusal.reason == "PromptDenied", sneaky
    assert policy.check_prompt("a gorge at dawn") is None


# ----------------------------------------------------------------------------- status read through the types


def test_status_from_an_older_or_newer_operator_reads_without_crashing() -> None:
    status = read_status({
        "phase": "Succeeded", "seed": 7, "futureField": {"x": 1}, "queuePosition": -3,
        "progress": {"value": "many"},
        "images": [{"key": "a/0.png", "bytes": 10, "sha256": "0" * 64, "contentType": "image/png"},
                   {"key": "a/1.png"}],  # an entry an older operator wrote without its checks
    })
    assert status.phase is Phase.SUCCEEDED and status.seed == 7 and status.queue_position is None
    assert [i.key for i in status.images] == ["a/0.png"] and status.progress is None
    assert read_status({"phase": "Exploded"}).phase is Phase.PENDING
    assert read_status(None).phase is Phase.PENDING and read_status("garbage").images == []
    spec = read_spec({"prompt": "cat", "steps": 999, "mystery": True})
    assert spec.prompt == "cat" and spec.steps == 20
    assert read_spec({"steps": 5}).steps == 5



# ----------------------------------------------------------------------------- logs


async def test_no_presigned_url_reaches_the_bots_logs_even_at_debug(
    tmp_path: Path, core: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from comfykube import logsafe

    caplog.set_level(logging.DEBUG)
    logsafe.install()  # what run_bot does: the root logger's handlers (pytest's capture is one of them)
    async with bot_world(tmp_path, core) as world, world.running():
        _, name = await imagine(world, {"prompt": "a fox"})
        msg = message_of(world, name)
        image, _ = await world.succeed(name)
        await wait_for(lambda: msg.attachments and delivery(world, name).state == "done", what="result")
        # The link button carries the presigned URL: discord.py logs request bodies at debug level.
        assert any(c.get("url") == image["url"] for row in msg.components for c in row["components"])
    assert image["url"].split("?")[1] not in caplog.text and "X-Amz-Signature" not in caplog.text
