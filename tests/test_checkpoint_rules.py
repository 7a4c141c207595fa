"""The deployment's checkpoint rules: allow/deny lists, and restricted ones never picked as a fallback.

Against the ComfyUI stand-in (its checkpoint list is what `/object_info` answers) and nanio.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from comfykube.checkpoint_rules import CheckpointRules
from comfykube.comfyui.client import ComfyClient
from comfykube.errors import InvalidSpec, PreflightFailed
from comfykube.pipeline import JobIdentity, Pipeline
from comfykube.settings import DEFAULT_WORKFLOWS_DIR, Settings
from comfykube.storage import MinioStore
from comfykube.types import ImageJobSpec, Phase
from comfykube.workflows import WorkflowLibrary

WORKFLOWS = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR])
SMALL = {"width": 64, "height": 64, "steps": 1}


def new_job() -> JobIdentity:
    return JobIdentity(namespace="tests", name="ckpt", uid=str(uuid.uuid4()))


def test_rules_read_from_the_environment_and_match_like_the_bots_globs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKPOINT_DENY", "*gore*, banned.safetensors")
    monkeypatch.setenv("CHECKPOINT_RESTRICTED", '["NSFW-*"]')
    monkeypatch.setenv("CHECKPOINT_ALLOW", "")
    settings = Settings()
    assert settings.checkpoint_deny == ["*gore*", "banned.safetensors"]
    rules = CheckpointRules.of(settings.checkpoint_allow, settings.checkpoint_deny, settings.checkpoint_restricted)
    assert rules.is_restricted("sub/nsfw-v2.safetensors") and not rules.is_restricted("sd15.safetensors")
    assert "CHECKPOINT_DENY pattern '*gore*'" in (rules.refusal("Gore-mix.ckpt") or "")
    assert rules.fallbacks(["nsfw-a.safetensors", "banned.safetensors", "ok.safetensors"]) == ["ok.safetensors"]
    assert "CHECKPOINT_ALLOW" in (CheckpointRules.of(allow=["sd*"]).refusal("xl.safetensors") or "")


async def test_fallback_never_picks_a_restricted_checkpoint_and_status_records_the_one_used(
    comfyui_factory: Any, s3_settings: Any
) -> None:
    # The workflow's default (sd15-base) is not installed; the first installed one is NSFW.
    server = await comfyui_factory(checkpoints=["nsfw-mix.safetensors", "landscape.safetensors"])
    rules = CheckpointRules.of(restricted=["nsfw-*"])
    async with ComfyClient(server.url, timeout=10) as comfy:
        pipeline = Pipeline(comfy=comfy, store=MinioStore(s3_settings), workflows=WORKFLOWS, poll_interval=0.2,
                            checkpoint_rules=rules)
        job = new_job()
        status = await pipeline.run(ImageJobSpec(prompt="a meadow", **SMALL), job)
        assert status.phase is Phase.SUCCEEDED
        assert server.history[job.uid]["prompt"][2]["4"]["inputs"]["ckpt_name"] == "landscape.safetensors"
        assert status.model == "landscape.safetensors" and status.wire()["model"] == "landscape.safetensors"
        # Named explicitly, a restricted checkpoint is used (the bot decides where it may be shown).
        named = await pipeline.run(ImageJobSpec(prompt="p", model="nsfw-mix.safetensors", **SMALL), new_job())
        assert named.model == "nsfw-mix.safetensors"


async def test_no_allowed_fallback_fails_in_preflight_naming_the_rule(comfyui_factory: Any, s3_settings: Any) -> None:
    server = await comfyui_factory(checkpoints=["nsfw-mix.safetensors"])
    async with ComfyClient(server.url, timeout=10) as comfy:
        pipeline = Pipeline(comfy=comfy, store=MinioStore(s3_settings), workflows=WORKFLOWS, poll_interval=0.2,
                            checkpoint_rules=CheckpointRules.of(restricted=["nsfw-*"]))
        with pytest.raises(PreflightFailed, match="CHECKPOINT_RESTRICTED"):
            await pipeline.run(ImageJobSpec(prompt="p", **SMALL), new_job())
    assert server.stats()["submissions"] == {}, "nothing may reach ComfyUI"


async def test_a_denied_or_not_allowed_model_named_in_the_spec_is_invalid(comfyui: Any, s3_settings: Any) -> None:
    async with ComfyClient(comfyui.url, timeout=10) as comfy:
        pipeline = Pipeline(comfy=comfy, store=MinioStore(s3_settings), workflows=WORKFLOWS, poll_interval=0.2,
                            checkpoint_rules=CheckpointRules.of(deny=["random-*"]))
        with pytest.raises(InvalidSpec, match=r"spec.model: .*CHECKPOINT_DENY pattern 'random-\*'"):
            await pipeline.run(ImageJobSpec(prompt="p", model="random-sd15.safetensors", **SMALL), new_job())
        pipeline.checkpoint_rules = CheckpointRules.of(allow=["other-*"])
        with pytest.raises(PreflightFailed, match="CHECKPOINT_ALLOW"):  # the workflow's default is not allowed
            await pipeline.run(ImageJobSpec(prompt="p", **SMALL), new_job())
    assert comfyui.stats()["submissions"] == {}
