"""The CLI's workflow commands as a user runs them: `--set`, `--graph`, `workflows`, `workflow init`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from comfykube.errors import WorkflowError
from comfykube.settings import DEFAULT_WORKFLOWS_DIR
from comfykube.workflow_init import propose_workflow
from comfykube.workflows import WorkflowLibrary, load_workflow
from tests.test_cli import comfykube

SHIPPED = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR])


@pytest.fixture
def cli_env(comfyui_process: Any, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "COMFYUI_", "ALLOW_"))}
    env.update(COMFYUI_URL=comfyui_process.url, OUTPUT_DIR=str(tmp_path / "out"), COMFYUI_POLL_INTERVAL="0.2")
    return env


def submitted(comfyui_process: Any) -> int:
    return sum(comfyui_process.stats()["submissions"].values())


def test_set_values_are_typed_by_the_workflow(cli_env: dict[str, str]) -> None:
    result = comfykube(
        "generate", "a fox", "--workflow", "t2i_lora", "--set", "lora=detail-tweaker.safetensors",
        "--set", "strength=0.5", "--width", "64", "--height", "64", "--steps", "1", "--json", env=cli_env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["phase"] == "Succeeded"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "strength=9"], "InvalidSpec: --set strength: must be at most 4 (got 9.0); expected number -4..4"),
        (["--set", "strength=strong"], "--set strength: must be a number (got \"strong\")"),
        (["--set", "colour=red"], "--set colour: workflow 't2i_lora' has no parameter 'colour'; its parameters: lora"),
        (["--set", "strength"], "--set 'strength': expected NAME=VALUE"),
    ],
)
def test_bad_set_values_exit_2_before_anything_is_submitted(
    cli_env: dict[str, str], comfyui_process: Any, args: list[str], message: str
) -> None:
    result = comfykube("generate", "a fox", "--workflow", "t2i_lora", *args, env=cli_env)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert submitted(comfyui_process) == 0


def test_a_lora_the_server_lacks_exits_2_with_the_allowed_list(cli_env: dict[str, str], comfyui_process: Any) -> None:
    result = comfykube("generate", "a fox", "--workflow", "t2i_lora", "--set", "lora=detail.safetensors", env=cli_env)
    assert result.returncode == 2  # not offered by this ComfyUI: bad input, as for checkpoints
    assert "PreflightFailed: lora (LoraLoader.lora_name) 'detail.safetensors' is not offered" in result.stderr
    assert "detail-tweaker.safetensors" in result.stderr
    assert submitted(comfyui_process) == 0


def test_graph_runs_a_raw_graph_locally_without_the_deployment_setting(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    graph = json.loads(json.dumps(SHIPPED.get("t2i_basic").graph))
    graph["5"]["inputs"].update(width=64, height=64)
    graph["3"]["inputs"]["steps"] = 1
    exported = tmp_path / "exported.json"
    exported.write_text(json.dumps(graph), encoding="utf-8")
    result = comfykube("generate", "my graph", "--graph", str(exported), "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["phase"] == "Succeeded" and status["images"][0]["width"] == 64
    refused = comfykube("generate", "my graph", "--graph", str(exported), "--set", "denoise=1", env=cli_env)
    assert refused.returncode == 2 and "a raw graph (--graph) has none" in refused.stderr


def test_workflows_lists_and_shows_one(cli_env: dict[str, str]) -> None:
    listing = comfykube("workflows", env=cli_env)
    assert listing.returncode == 0
    assert [line.split(":")[0] for line in listing.stdout.splitlines()] == SHIPPED.names()
    shown = comfykube("workflows", "img2img", env=cli_env)
    assert "denoise: number 0..1 (default 0.6)" in shown.stdout
    assert "init (required): The picture to start from" in shown.stdout
    assert "spec fields: prompt, negativePrompt, model, steps, cfg, sampler, scheduler, seed" in shown.stdout
    data = json.loads(comfykube("workflows", "t2i_lora", "--json", env=cli_env).stdout)
    assert data["parameters"]["lora"]["choicesFrom"] == "server"
    assert data["parameters"]["strength"] | {"targets": None} == {
        "type": "number", "minimum": -4, "maximum": 4, "default": 0.8, "targets": None,
        "description": "How strongly the LoRA changes the model and the text encoder"}
    missing = comfykube("workflows", "nope", env=cli_env)
    assert missing.returncode == 2 and "unknown workflow 'nope'" in missing.stderr


# --- workflow init ---------------------------------------------------------------------------


def test_init_proposes_the_shipped_bindings_for_the_shipped_t2i_graph() -> None:
    workflow = SHIPPED.get("t2i_basic")
    document = propose_workflow(workflow.graph)
    assert document["bindings"] == json.loads(workflow.path.read_text(encoding="utf-8"))["bindings"]
    assert "parameters" not in document and "images" not in document


def test_init_proposes_images_denoise_lora_and_both_seeds() -> None:
    i2i = propose_workflow(SHIPPED.get("img2img").graph)
    assert i2i["images"]["init"]["node"] == "10" and i2i["parameters"]["denoise"]["node"] == "3"
    assert "width" not in i2i["bindings"]
    lora = propose_workflow(SHIPPED.get("t2i_lora").graph)
    assert lora["parameters"]["lora"] == {"node": "10", "input": "lora_name", "type": "string",
                                          "choicesFrom": "server", "maxLength": 255,
                                          "description": "LoRA file as ComfyUI lists it"}
    assert lora["bindings"]["model"] == {"node": "4", "input": "ckpt_name"}  # found through the LoRA
    hires = propose_workflow(SHIPPED.get("hires_fix").graph)
    assert hires["bindings"]["seed"] == {"targets": [{"node": "3", "input": "seed"}, {"node": "12", "input": "seed"}]}
    assert hires["bindings"]["steps"] == {"node": "3", "input": "steps"}  # the first pass, from the empty latent
    upscale = propose_workflow(SHIPPED.get("upscale_model").graph)
    assert "upscaleModel" in upscale["parameters"] and "prompt" not in upscale["bindings"]


def test_init_refuses_the_ui_format_and_graphs_without_a_saver() -> None:
    with pytest.raises(WorkflowError, match=r"UI format; export the graph with \"Save \(API\)\""):
        propose_workflow({"nodes": [], "links": [], "version": 0.4})
    graph = {k: v for k, v in SHIPPED.get("t2i_basic").graph.items() if k != "9"}
    with pytest.raises(WorkflowError, match="no node has a filename_prefix"):
        propose_workflow(graph)


def test_init_command_writes_a_workflow_the_library_loads(cli_env: dict[str, str], tmp_path: Path) -> None:
    exported = tmp_path / "My Graph.json"
    exported.write_text(json.dumps({"prompt": SHIPPED.get("hires_fix").graph}), encoding="utf-8")  # a /prompt body
    out = tmp_path / "my_graph.json"
    result = comfykube("workflow", "init", str(exported), "-o", str(out), "--description", "mine", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "proposed bindings: seed, steps, cfg, sampler, scheduler, prompt, negativePrompt" in result.stderr
    workflow = load_workflow(out)
    assert workflow.description == "mine" and "seed" in workflow.bindings
    to_stdout = comfykube("workflow", "init", str(exported), env=cli_env)
    assert json.loads(to_stdout.stdout)["bindings"] == json.loads(out.read_text(encoding="utf-8"))["bindings"]
    bad = tmp_path / "ui.json"
    bad.write_text('{"nodes": [], "links": []}', encoding="utf-8")
    refused = comfykube("workflow", "init", str(bad), env=cli_env)
    assert refused.returncode == 2 and "UI format" in refused.stderr


def test_init_on_a_graph_a_real_comfyui_ran_proposes_the_shipped_img2img_bindings() -> None:
    """Capture 87: the img2img graph a real ComfyUI 0.3.64 accepted (tests/data/comfyui)."""
    capture = json.loads((Path(__file__).parent / "data" / "comfyui" / "87_post_prompt_img2img.json").read_text(
        encoding="utf-8"))
    real = capture["request"]["json"]["prompt"]
    document = propose_workflow(real)
    shipped = SHIPPED.get("img2img")
    assert document["bindings"] == json.loads(shipped.path.read_text(encoding="utf-8"))["bindings"]
    assert set(document["images"]) == {"init"} and set(document["parameters"]) == {"denoise"}

    def shape(graph: dict[str, Any]) -> dict[str, Any]:
        return {i: (n["class_type"], {k: v for k, v in n["inputs"].items() if isinstance(v, list)})
                for i, n in graph.items()}

    assert shape(shipped.graph) == shape(real)  # the shipped graph is the one the real server ran


def test_workflows_check_against_a_running_comfyui(cli_env: dict[str, str], tmp_path: Path) -> None:
    ok = comfykube("workflows", "t2i_lora", "--check", env=cli_env)
    assert ok.returncode == 0 and ok.stdout.strip() == "t2i_lora: ok", ok.stdout + ok.stderr
    extra = tmp_path / "extra"
    extra.mkdir()
    data = json.loads(SHIPPED.get("t2i_basic").path.read_text(encoding="utf-8"))
    data["graph"]["3"]["inputs"]["denoise"] = 1.5  # above KSampler's maximum
    data["graph"]["12"] = {"class_type": "SomeCustomNode", "inputs": {}}
    (extra / "broken.json").write_text(json.dumps(data), encoding="utf-8")
    bad = comfykube("workflows", "--check", env={**cli_env, "EXTRA_WORKFLOWS_DIR": str(extra)})
    assert bad.returncode == 2
    assert "t2i_basic: ok" in bad.stdout and "broken:" in bad.stdout
    assert "node '3' (KSampler): input 'denoise' 1.5 is above the maximum 1.0" in bad.stdout
    assert "node '12' (SomeCustomNode): no such node class" in bad.stdout
