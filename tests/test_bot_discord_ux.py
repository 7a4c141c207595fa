"""Issue #13: /settings, the 2×2 grid with U/V buttons, Upscale/Vary, Remix (fake Discord + Kubernetes stand-in).

The tests play the operator by writing `status` (images are real objects in nanio).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import kmock
import pytest
from PIL import Image

from comfykube.settings import Settings
from comfykube_bot.jobs import JobInfo
from comfykube_bot.prefs import PrefsStore, UserPrefs, configmap_name
from tests.standins.discord import CB_MODAL, make_png
from tests.test_bot_support import NAMESPACE, BotWorld, bot_world, ephemeral_text, wait_for

CONFIGMAPS = "v1/configmaps"


@pytest.fixture
def core(tmp_path: Path, s3_server: Any, s3_bucket: str, comfyui: Any) -> Settings:
    """comfykube settings: nanio for images, the ComfyUI stand-in for checkpoints."""
    return s3_server.settings(s3_bucket, comfyui_url=comfyui.url, output_dir=tmp_path / "out")


async def imagine(world: BotWorld, options: dict[str, Any], **kw: Any) -> tuple[Any, str]:
    handle = await world.fake.slash_command("imagine", options, **kw)
    await handle.wait_response()
    await wait_for(lambda: ephemeral_text(handle) and "Submitting" not in ephemeral_text(handle), what="reply text")
    return handle, f"ij-{handle.id}"


def panel_of(handle: Any) -> Any:
    assert handle.original is not None
    return handle.original


def stored_prefs(world: BotWorld, user_id: int) -> dict[str, Any]:
    cm = world.kube.get_object(CONFIGMAPS, NAMESPACE, configmap_name(world.fake.guild_id))
    if cm is None:
        return {}
    return dict(json.loads((cm.get("data") or {}).get(str(user_id), "{}")))


# ----------------------------------------------------------------------------- /settings


async def test_settings_are_stored_in_a_configmap_applied_by_imagine_and_survive_a_restart(
    tmp_path: Path, core: Settings
) -> None:
    async with bot_world(tmp_path, core) as world:
        fake = world.fake
        alice = fake.user_ids["alice"]
        async with world.running():
            handle = await fake.slash_command("settings show", {})
            await handle.wait_response()
            await wait_for(lambda: handle.original and "Your /imagine defaults" in handle.original.content,
                           what="panel")
            panel = panel_of(handle)
            assert panel.ephemeral
            assert {"ks:aspect", "ks:count", "ks:steps", "ks:model", "ks:negative",
                    "ks:reset"} <= set(panel.custom_ids())
            for setting, value in (("aspect", "16:9"), ("count", "4"), ("steps", "30")):
                click = await fake.click(f"ks:{setting}", message_id=panel.id, component_type=3, values=[value])
                await click.wait_response()
                await wait_for(lambda s=setting: stored_prefs(world, alice).get(s) is not None, what=setting)
            await wait_for(lambda: "Steps: `30`" in panel.content, what="panel redrawn")
            # The negative prompt: a modal prefilled with the stored value.
            click = await fake.click("ks:negative", message_id=panel.id)
            response = await click.wait_response()
            assert response.type == CB_MODAL and response.data is not None
            modal = await fake.submit_modal(response.data["custom_id"], {"negative": "blurry, text"},
                                            message_id=panel.id)
            await modal.wait_response()
            await wait_for(lambda: stored_prefs(world, alice).get("negative") == "blurry, text", what="negative")
        assert stored_prefs(world, alice) == {"aspect": "16:9", "count": 4, "steps": 30, "negative": "blurry, text"}

        async with world.running(bot_max_active_jobs=10):  # a new process: settings from the ConfigMap
            _, name = await imagine(world, {"prompt": "a lighthouse"})
            spec = world.job(name)["spec"]  # type: ignore[index]
            assert (spec["width"], spec["height"], spec["batchSize"], spec["steps"]) == (704, 384, 4, 30)
            assert spec["negativePrompt"] == "blurry, text"
            # A typed option (and an inline flag) wins over the default.
            _, name = await imagine(world, {"prompt": "a lighthouse --ar 1:1", "count": 1, "steps": 12})
            spec = world.job(name)["spec"]  # type: ignore[index]
            assert (spec["width"], spec["height"], spec["batchSize"], spec["steps"]) == (512, 512, 1, 12)
            # Bob has no settings: the bot's defaults.
            h, name = await imagine(world, {"prompt": "a lighthouse"}, user_id=fake.user_ids["bob"])
            assert world.job(name) is not None, ephemeral_text(h)
            spec = world.job(name)["spec"]  # type: ignore[index]
            assert (spec["width"], spec.get("batchSize", 1), spec.get("steps", 20)) == (512, 1, 20)

            handle = await fake.slash_command("settings reset", {})
            await handle.wait_response()
            await wait_for(lambda: "back to the defaults" in ephemeral_text(handle), what="reset")
            assert stored_prefs(world, alice) == {}
            _, name = await imagine(world, {"prompt": "a lighthouse"})
            spec = world.job(name)["spec"]  # type: ignore[index]
            assert (spec["width"], spec.get("batchSize", 1)) == (512, 1) and not spec.get("negativePrompt")


async def test_settings_writes_are_optimistic_and_keep_concurrent_changes(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world:
        bot = await world.make_bot()
        assert bot._kube is not None
        store = PrefsStore(bot._kube.core, NAMESPACE)
        guild = world.fake.guild_id

        async def set_count(user: int) -> None:
            await store.update(guild, user, lambda old: old.changed(count=2))

        await asyncio.gather(*(set_count(user) for user in range(1, 9)))
        cm = world.kube.get_object(CONFIGMAPS, NAMESPACE, configmap_name(guild))
        assert cm is not None and sorted(cm["data"]) == [str(u) for u in range(1, 9)]
        assert store.conflicts > 0, "eight concurrent writers must have met a 409 at least once"
        # Whatever a ConfigMap editor wrote is data: out-of-range values are dropped.
        assert UserPrefs.from_json('{"count": 99, "steps": 0, "aspect": "1:1", "model": "/etc/x", "private": 1}') == \
            UserPrefs(aspect="1:1")
        await bot.close()



# ----------------------------------------------------------------------------- private replies

PRIVATE = "comfykube.dev/discord-private"


def shown_in_channel(world: BotWorld, name: str) -> bool:
    """True when any version of any non-ephemeral message in the general channel names the job."""
    for message in world.fake.messages_in(world.fake.channel_id, include_deleted=True):
        if not message.ephemeral and any(name in json.dumps(v) for v in message.versions):
            return True
    return False


def job_message(world: BotWorld, name: str) -> Any:
    job = world.job(name)
    assert job is not None, name
    return world.fake.message(int(job["metadata"]["annotations"]["comfykube.dev/discord-message"]))


def delivered_to(world: BotWorld, name: str) -> str:
    job = world.job(name) or {}
    return str(((job.get("metadata") or {}).get("annotations") or {}).get("comfykube.dev/discord-delivered", ""))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def toggle_private(world: BotWorld, user_id: int, want: bool) -> None:
    """Open /settings and click the private replies toggle (it says what is set now)."""
    fake = world.fake
    handle = await fake.slash_command("settings show", {}, user_id=user_id)
    await handle.wait_response()
    await wait_for(lambda: handle.original and "Private replies" in handle.original.content, what="panel")
    panel = panel_of(handle)
    assert "ks:private" in panel.custom_ids()
    assert ("Private replies: **on**" in panel.content) is not want, "the panel shows the current value"
    click = await fake.click("ks:private", message_id=panel.id, user_id=user_id)
    await click.wait_response()
    await wait_for(lambda: stored_prefs(world, user_id).get("private", False) is want, what="private saved")
    await wait_for(lambda: ("Private replies: **on**" in panel.content) is want, what="panel redrawn")


async def test_private_replies_make_the_job_ephemeral_and_late_results_come_by_dm(
    tmp_path: Path, core: Settings
) -> None:
    async with bot_world(tmp_path, core) as world:
        fake = world.fake
        alice = fake.user_ids["alice"]
        async with world.running(bot_max_active_jobs=10):
            await toggle_private(world, alice, True)

            # 1. The result arrives while the interaction token works: the ephemeral job message shows it.
            h1, a = await imagine(world, {"prompt": "a secret garden"})
            job_a = world.job(a)
            assert job_a is not None and job_a["metadata"]["annotations"][PRIVATE] == "true"
            info = JobInfo.from_obj(job_a, world.signer)
            assert info.verified and info.private, "the annotation is covered by the bot's signature"
            msg_a = job_message(world, a)
            assert msg_a.ephemeral and msg_a.id in h1.followup_ids and "Private" in ephemeral_text(h1)
            world.patch_status(a, phase="Running", progress={"value": 5, "max": 20})
            await wait_for(lambda: "step 5/20" in msg_a.content, what="progress in the ephemeral message")
            _, sha_a = await world.succeed(a, make_png(64, 64))
            await wait_for(lambda: msg_a.attachments, what="result in the ephemeral message")
            assert sha(msg_a.attachments[0].data) == sha_a
            assert fake.requests_to("PATCH", rf"/webhooks/\d+/[^/]+/messages/{msg_a.id}$"), "edited by the token"
            assert not fake.requests_to("*", rf"/channels/\d+/messages/{msg_a.id}$"), "never by the bot token"
            assert fake.requests_to("POST", r"^/users/@me/channels$") == [], "no DM while the token works"

            # 2. The token expired before the result (the bot's clock does not know: Discord says 401).
            _, b = await imagine(world, {"prompt": "a second secret"})
            msg_b = job_message(world, b)
            assert msg_b.ephemeral
            fake.advance(16 * 60)
            _, sha_b = await world.succeed(b, make_png(64, 64))
            await wait_for(lambda: delivered_to(world, b).startswith("message="), what="b delivered")
            dm = fake.dm_channel_id(alice)
            assert dm is not None
            dm_b = fake.message(int(delivered_to(world, b).split(";")[0].split("=")[1]))
            assert dm_b.channel_id == dm and dm_b.guild_id is None and not dm_b.ephemeral
            assert [sha(x.data) for x in dm_b.attachments] == [sha_b]
            assert not msg_b.attachments and not fake.requests_to("*", rf"/channels/\d+/messages/{msg_b.id}$")
            created = fake.requests_to("POST", r"^/users/@me/channels$")
            assert created and created[0].json == {"recipient_id": alice}

            # 3. A job in flight while the bot restarts: the new process has no token, so the DM.
            _, c = await imagine(world, {"prompt": "a third secret"})
        _, sha_c = await world.succeed(c, make_png(64, 64))
        async with world.running(bot_max_active_jobs=10):
            await wait_for(lambda: delivered_to(world, c).startswith("message="), what="c delivered after restart")
            dm_c = fake.message(int(delivered_to(world, c).split(";")[0].split("=")[1]))
            assert dm_c.channel_id == dm and [sha(x.data) for x in dm_c.attachments] == [sha_c]
            assert not job_message(world, c).attachments

            # 4. Derived jobs stay private, even once the user has turned private replies off again.
            await toggle_private(world, alice, False)
            click = await fake.click(f"ij:reroll:default/{a}", message_id=msg_a.id)
            await click.wait_response()
            await wait_for(lambda: "Queued as" in ephemeral_text(click), what="reroll queued")
            click_up = await fake.click(f"ig:up:0:default/{a}", message_id=msg_a.id)
            await click_up.wait_response()
            await wait_for(lambda: "Queued as" in ephemeral_text(click_up), what="upscale queued")
            derived = [f"ij-{click.id}", f"ij-{click_up.id}"]
            for name in derived:
                job = world.job(name)
                assert job is not None and job["metadata"]["annotations"][PRIVATE] == "true", name
                assert JobInfo.from_obj(job, world.signer).verified
                assert job_message(world, name).ephemeral, "an ephemeral job message, not a reply to the grid"
            assert not any((r.json or {}).get("message_reference") for r in fake.requests_to("POST", r"/messages$"))
            await world.succeed(derived[1], make_png(64, 64))
            await wait_for(lambda: job_message(world, derived[1]).attachments, what="upscale result, privately")

            # With private replies off, a new job is public again (and the check below can see one).
            _, public = await imagine(world, {"prompt": "nothing to hide"})
            public_job = world.job(public)
            assert public_job is not None and PRIVATE not in public_job["metadata"]["annotations"]
            assert not job_message(world, public).ephemeral
        assert shown_in_channel(world, public)
        for name in (a, b, c, *derived):
            assert not shown_in_channel(world, name), f"{name} was shown in the public channel"


async def test_a_private_result_is_never_posted_publicly_when_dms_are_closed(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world:
        fake = world.fake
        bob = fake.user_ids["bob"]
        next(m for m in fake.guild.members if m.id == bob).accepts_dms = False
        async with world.running():
            await toggle_private(world, bob, True)
            _, name = await imagine(world, {"prompt": "bob's secret"}, user_id=bob)
        await world.succeed(name)  # while no bot runs: the next one has no token
        async with world.running() as bot:
            await wait_for(lambda: delivered_to(world, name).startswith("refused="), what="delivery recorded")
            assert delivered_to(world, name).startswith("refused=DirectMessagesClosed;")
            # Counted once the record landed (the test may look between the two).
            await wait_for(lambda: bot.metrics.refusals.labels(reason="DirectMessagesClosed")._value.get() == 1,
                           what="the refusal counted")
        dm = fake.dm_channel_id(bob)
        assert dm is not None and fake.messages_in(dm) == []
        assert fake.requests_to("POST", rf"^/channels/{dm}/messages$"), "the DM was tried"
        assert not shown_in_channel(world, name)


async def test_unreadable_settings_make_the_reply_private_rather_than_public(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world, world.running():
        # Readable and empty settings: public, as the defaults say.
        _, name = await imagine(world, {"prompt": "known wishes"})
        assert not job_message(world, name).ephemeral
        # The API server fails ConfigMap reads: whether the user asked for privacy is unknown.
        world.kube["get", kmock.resource("", "v1", "configmaps")] << 500
        _, name = await imagine(world, {"prompt": "unknown wishes"})
        job = world.job(name)
        assert job is not None and job["metadata"]["annotations"][PRIVATE] == "true"
        assert job_message(world, name).ephemeral


# ----------------------------------------------------------------------------- the grid


def colored_png(color: tuple[int, int, int], size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, "PNG")
    return out.getvalue()


COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


async def succeed_grid(world: BotWorld, name: str) -> list[dict[str, Any]]:
    """Four stored images (distinct colours) and Succeeded, as the operator writes it."""
    job = world.job(name)
    assert job is not None
    images = [await world.store_image(job, colored_png(c), index=i) for i, c in enumerate(COLORS)]
    world.patch_status(name, phase="Succeeded", images=images, imageCount=4, url=images[0]["url"], seed=77,
                       startTime="2026-01-01T00:00:00Z", completionTime="2026-01-01T00:00:09Z")
    return images


async def test_count_4_posts_one_grid_and_u2_v3_remix_create_derived_jobs_after_a_restart(
    tmp_path: Path, core: Settings
) -> None:
    async with bot_world(tmp_path, core) as world:
        fake = world.fake
        alice, bob = fake.user_ids["alice"], fake.user_ids["bob"]
        async with world.running(bot_max_active_jobs=10) as bot:
            _, name = await imagine(world, {"prompt": "four foxes", "count": 4, "negative": "text", "steps": 12})
            assert world.job(name)["spec"]["batchSize"] == 4  # type: ignore[index]
            await succeed_grid(world, name)
            await wait_for(lambda: bot.deliverer.delivered, what="grid delivered")
        job = world.job(name)
        assert job is not None
        grid_msg = fake.message(int(job["metadata"]["annotations"]["comfykube.dev/discord-message"]))
        final = grid_msg.versions[-1]
        assert final["attachments"] == [f"{name}-grid.jpg"], "one grid, not four pictures"
        grid = Image.open(io.BytesIO(grid_msg.attachments[0].data))
        assert grid.size == (128, 128)
        for index, color in enumerate(COLORS):  # image n is in cell n (left to right, top to bottom)
            x, y = (index % 2) * 64 + 32, (index // 2) * 64 + 32
            pixel = grid.convert("RGB").getpixel((x, y))
            assert all(abs(a - b) <= 8 for a, b in zip(pixel, color, strict=True)), (index, pixel)  # JPEG
        ids = grid_msg.custom_ids()
        for i in range(4):
            assert f"ig:up:{i}:default/{name}" in ids and f"ig:vv:{i}:default/{name}" in ids
        assert f"ij:reroll:default/{name}" in ids and f"ig:rx:0:default/{name}" in ids
        rows = [[c.get("custom_id") or c.get("label") for c in row["components"]] for row in final["components"]]
        assert rows[1] == [f"ig:up:{i}:default/{name}" for i in range(4)]
        assert rows[2][:4] == [f"ig:vv:{i}:default/{name}" for i in range(4)]

        async with world.running(bot_max_active_jobs=10):  # buttons work from the ImageJob alone
            # U2: an upscale job of image index 1, asked by bob, posted as a reply to the grid.
            click = await fake.click(f"ig:up:1:default/{name}", message_id=grid_msg.id, user_id=bob)
            await click.wait_response()
            await wait_for(lambda: "Queued as" in ephemeral_text(click), what="upscale queued")
            up = world.job(f"ij-{click.id}")
            assert up is not None
            assert up["spec"]["workflow"] == "upscale"
            assert up["spec"]["images"] == [{"name": "init", "fromJob": {"name": name, "index": 1}}]
            assert up["metadata"]["labels"]["comfykube.dev/requester"] == str(bob)
            up_msg_id = int(up["metadata"]["annotations"]["comfykube.dev/discord-message"])
            posts = [r for r in fake.requests_to("POST", rf"/channels/{fake.channel_id}/messages$")]
            assert any(str((r.json or {}).get("message_reference", {}).get("message_id", "")) == str(grid_msg.id)
                       for r in posts), "the upscale's message replies to the grid"
            # Its result edits that reply.
            await world.succeed(f"ij-{click.id}", colored_png((9, 9, 9), 128))
            await wait_for(lambda: fake.message(up_msg_id).attachments, what="upscale result")
            assert fake.message(up_msg_id).custom_ids()[:1] != []

            # V3: img2img of image index 2, strong, new seed, same prompt.
            click = await fake.click(f"ig:vv:2:default/{name}", message_id=grid_msg.id, user_id=alice)
            await click.wait_response()
            await wait_for(lambda: "Queued as" in ephemeral_text(click), what="vary queued")
            vary = world.job(f"ij-{click.id}")
            assert vary is not None
            spec = vary["spec"]
            assert spec["workflow"] == "img2img" and spec["inputs"] == {"denoise": 0.65}
            assert spec["images"] == [{"name": "init", "fromJob": {"name": name, "index": 2}}]
            assert spec["prompt"] == "four foxes" and spec["negativePrompt"] == "text" and spec["steps"] == 12
            assert spec["seed"] != 77

            # Remix: a modal prefilled with prompt, negative prompt and seed; the submission is the new job.
            click = await fake.click(f"ig:rx:0:default/{name}", message_id=grid_msg.id, user_id=alice)
            response = await click.wait_response()
            assert response.type == CB_MODAL and response.data is not None
            inputs = {c["custom_id"]: c.get("value") for row in response.data["components"]
                      for c in row["components"]}
            assert inputs == {"prompt": "four foxes", "negative": "text", "seed": "77"}
            modal = await fake.submit_modal(response.data["custom_id"],
                                            {"prompt": "four wolves", "negative": "text, blur", "seed": "5"},
                                            message_id=grid_msg.id, user_id=alice)
            await modal.wait_response()
            await wait_for(lambda: "Queued as" in ephemeral_text(modal), what="remix queued")
            remix = world.job(f"ij-{modal.id}")
            assert remix is not None
            assert (remix["spec"]["prompt"], remix["spec"]["negativePrompt"], remix["spec"]["seed"]) == \
                ("four wolves", "text, blur", 5)
            assert remix["spec"]["batchSize"] == 4 and remix["spec"]["workflow"] == "t2i_basic"


async def test_derived_jobs_go_through_the_same_policy(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world:
        fake = world.fake
        async with world.running(bot_max_active_jobs=1, bot_deny_patterns="wolves") as bot:
            _, name = await imagine(world, {"prompt": "a fox"})
            _, sha = await world.succeed(name, make_png(64, 64))
            await wait_for(lambda: bot.deliverer.delivered, what="delivered")
            msg = fake.message(int(world.job(name)["metadata"]["annotations"]["comfykube.dev/discord-message"]))  # type: ignore[index]
            ids = msg.custom_ids()
            assert {f"ig:up:0:default/{name}", f"ig:vs:0:default/{name}", f"ig:vv:0:default/{name}"} <= set(ids)
            click = await fake.click(f"ig:vs:0:default/{name}", message_id=msg.id)
            await click.wait_response()
            await wait_for(lambda: "Queued as" in ephemeral_text(click), what="vary subtle")
            assert world.job(f"ij-{click.id}")["spec"]["inputs"] == {"denoise": 0.35}  # type: ignore[index]
            # The per-user cap counts derived jobs too: a second one is refused, nothing created.
            before = len(world.jobs())
            click = await fake.click(f"ig:up:0:default/{name}", message_id=msg.id)
            await click.wait_response()
            await wait_for(lambda: ephemeral_text(click), what="refusal")
            assert "in progress (limit 1)" in ephemeral_text(click) and len(world.jobs()) == before
            # The deny-list applies to a remix's new prompt.
            click = await fake.click(f"ig:rx:0:default/{name}", message_id=msg.id, user_id=fake.user_ids["bob"])
            response = await click.wait_response()
            assert response.data is not None
            modal = await fake.submit_modal(response.data["custom_id"], {"prompt": "wolves", "negative": "",
                                            "seed": ""}, message_id=msg.id, user_id=fake.user_ids["bob"])
            await modal.wait_response()
            await wait_for(lambda: ephemeral_text(modal), what="remix refusal")
            assert len(world.jobs()) == before and sha


# ----------------------------------------------------------------------------- modals across a restart


def stored_modals(bot: Any) -> dict[str, Any]:
    """discord.py's in-memory modal store (a modal there is lost on restart and kept forever with no timeout)."""
    return dict(bot._connection._view_store._modals)


async def test_a_remix_modal_opened_before_a_restart_creates_the_changed_job_after_it(
    tmp_path: Path, core: Settings
) -> None:
    async with bot_world(tmp_path, core) as world:
        fake = world.fake
        alice = fake.user_ids["alice"]
        async with world.running(bot_max_active_jobs=10) as bot:
            _, name = await imagine(world, {"prompt": "a fox", "negative": "text", "seed": 42, "steps": 12})
            await world.succeed(name, make_png(64, 64), seed=42)
            await wait_for(lambda: bot.deliverer.delivered, what="delivered")
            msg = fake.message(int(world.job(name)["metadata"]["annotations"]["comfykube.dev/discord-message"]))  # type: ignore[index]
            click = await fake.click(f"ig:rx:0:default/{name}", message_id=msg.id, user_id=alice)
            response = await click.wait_response()
            assert response.type == CB_MODAL and response.data is not None
            modal_id = response.data["custom_id"]
            assert modal_id == f"rxm:default/{name}", "the modal's id names the source job"
            assert stored_modals(bot) == {}, "the modal is sent stopped: discord.py keeps no copy"
        before = len(world.jobs())

        async with world.running(bot_max_active_jobs=10) as bot:  # a new process, the same cluster
            modal = await fake.submit_modal(modal_id, {"prompt": "a wolf", "negative": "text, blur", "seed": "5"},
                                            message_id=msg.id, user_id=alice)
            await modal.wait_response()
            await wait_for(lambda: "Queued as" in ephemeral_text(modal), what="remix queued")
            remix = world.job(f"ij-{modal.id}")
            assert remix is not None and len(world.jobs()) == before + 1
            spec = remix["spec"]
            assert (spec["prompt"], spec["negativePrompt"], spec["seed"]) == ("a wolf", "text, blur", 5)
            assert spec["steps"] == 12, "the source's other settings are carried"
            assert remix["metadata"]["labels"]["comfykube.dev/requester"] == str(alice)
            assert remix["metadata"]["annotations"]["comfykube.dev/reroll-of"] == f"default/{name}"

            # The id is untrusted input: another namespace, a job that is gone, a bad value.
            for forged, expected in ((f"rxm:elsewhere/{name}", "another deployment"),
                                     ("rxm:default/ij-gone", "no longer exists")):
                h = await fake.submit_modal(forged, {"prompt": "a wolf", "negative": "", "seed": ""},
                                            message_id=msg.id, user_id=alice)
                await h.wait_response()
                await wait_for(lambda h=h: ephemeral_text(h) and "thinking" not in ephemeral_text(h).lower(),
                               what=f"answer to {forged}")
                assert expected in ephemeral_text(h), ephemeral_text(h)
            h = await fake.submit_modal(modal_id, {"prompt": "a wolf", "negative": "", "seed": "-1"},
                                        message_id=msg.id, user_id=alice)
            await h.wait_response()
            await wait_for(lambda: "`seed`" in ephemeral_text(h), what="seed refused")
            assert len(world.jobs()) == before + 1
            assert stored_modals(bot) == {}


async def test_the_negative_prompt_modal_saves_after_a_restart(tmp_path: Path, core: Settings) -> None:
    async with bot_world(tmp_path, core) as world:
        fake = world.fake
        alice = fake.user_ids["alice"]
        async with world.running() as bot:
            handle = await fake.slash_command("settings show", {})
            await handle.wait_response()
            await wait_for(lambda: handle.original and "Your /imagine defaults" in handle.original.content,
                           what="panel")
            panel = panel_of(handle)
            click = await fake.click("ks:negative", message_id=panel.id)
            response = await click.wait_response()
            assert response.type == CB_MODAL and response.data is not None
            modal_id = response.data["custom_id"]
            assert stored_modals(bot) == {}
        assert stored_prefs(world, alice) == {}

        async with world.running():
            modal = await fake.submit_modal(modal_id, {"negative": "blurry, text"}, message_id=panel.id)
            await modal.wait_response()
            await wait_for(lambda: "Saved." in ephemeral_text(modal), what="saved")
            assert stored_prefs(world, alice) == {"negative": "blurry, text"}
            # A forged submission longer than the modal allows is refused, the stored value kept.
            modal = await fake.submit_modal(modal_id, {"negative": "x" * 5000}, message_id=panel.id)
            await modal.wait_response()
            await wait_for(lambda: "at most" in ephemeral_text(modal), what="too long")
            assert stored_prefs(world, alice) == {"negative": "blurry, text"}
            # An empty submission clears it.
            modal = await fake.submit_modal(modal_id, {"negative": "  "}, message_id=panel.id)
            await modal.wait_response()
            await wait_for(lambda: "Saved." in ephemeral_text(modal), what="cleared")
            assert stored_prefs(world, alice) == {}


# ----------------------------------------------------------------------------- one retry layer


async def test_a_persistent_429_costs_discord_pys_five_tries_not_five_times_five(
    tmp_path: Path, core: Settings
) -> None:
    from comfykube_bot.render import MessagePayload
    from comfykube_bot.updater import Outcome, Target

    async with bot_world(tmp_path, core) as world, world.running() as bot:
        fake = world.fake
        outcome, message_id = await bot.updater.post(fake.channel_id, MessagePayload(content="hello"))
        assert outcome is Outcome.SENT and message_id is not None
        path = rf"/channels/{fake.channel_id}/messages/{message_id}$"
        fake.fail_next("PATCH", path, 429, retry_after=0.01, times=100)
        before = len(fake.requests_to("PATCH", path))
        outcome = await bot.updater.send_edit(Target(fake.channel_id, message_id, fake.guild_id),
                                              MessagePayload(content="edited"))
        assert outcome is Outcome.FAILED
        assert len(fake.requests_to("PATCH", path)) - before == 5, "discord.py's five tries, no second layer"
        edits = bot.metrics.edits.labels(route="bot", outcome="rate_limited")._value.get()
        assert edits == 1
        # A post that fails is counted as a post, not as an edit.
        fake.fail_next("POST", rf"/channels/{fake.channel_id}/messages$", 403, code=50013, times=1)
        outcome, _ = await bot.updater.post(fake.channel_id, MessagePayload(content="again"))
        assert outcome is Outcome.FAILED
        assert bot.metrics.posts.labels(outcome="failed")._value.get() == 1
        assert bot.metrics.edits.labels(route="post", outcome="failed")._value.get() == 0
