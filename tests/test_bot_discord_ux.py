"""Issue #13: /settings, the 2×2 grid with U/V buttons, Upscale/Vary, Remix (fake Discord + Kubernetes stand-in).

The tests play the operator by writing `status` (images are real objects in nanio).
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfykube.settings import Settings
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
            assert {"ks:aspect", "ks:count", "ks:steps", "ks:model", "ks:private", "ks:negative",
                    "ks:reset"} <= set(panel.custom_ids())
            for setting, value in (("aspect", "16:9"), ("count", "4"), ("steps", "30")):
                click = await fake.click(f"ks:{setting}", message_id=panel.id, component_type=3, values=[value])
                await click.wait_response()
                await wait_for(lambda s=setting: stored_prefs(world, alice).get(s) is not None, what=setting)
            click = await fake.click("ks:private", message_id=panel.id)
            await click.wait_response()
            await wait_for(lambda: stored_prefs(world, alice).get("private") is True, what="private toggle")
            await wait_for(lambda: "Private replies: on" in panel.content, what="panel redrawn")
            # The negative prompt: a modal prefilled with the stored value.
            click = await fake.click("ks:negative", message_id=panel.id)
            response = await click.wait_response()
            assert response.type == CB_MODAL and response.data is not None
            modal = await fake.submit_modal(response.data["custom_id"], {"negative": "blurry, text"},
                                            message_id=panel.id)
            await modal.wait_response()
            await wait_for(lambda: stored_prefs(world, alice).get("negative") == "blurry, text", what="negative")
        assert stored_prefs(world, alice) == {"aspect": "16:9", "count": 4, "steps": 30, "private": True,
                                              "negative": "blurry, text"}

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


def _unused(*_: Any) -> None:  # keep imports used until the grid tests below exist
    _ = (io, Image, make_png)
