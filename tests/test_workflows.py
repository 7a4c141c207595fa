"""Workflow templates: loading, binding checks, byte-exact substitution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfykube.errors import InvalidSpec, WorkflowError
from comfykube.settings import DEFAULT_WORKFLOWS_DIR
from comfykube.types import MAX_PROMPT_LENGTH, ImageJobSpec
from comfykube.workflows import WorkflowLibrary, load_workflow

SHIPPED = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR])


def write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def basic_data() -> dict:
    return json.loads((DEFAULT_WORKFLOWS_DIR / "t2i_basic.json").read_text(encoding="utf-8"))


def test_shipped_t2i_basic_has_the_standard_txt2img_nodes() -> None:
    workflow = SHIPPED.get("t2i_basic")
    classes = sorted(node["class_type"] for node in workflow.graph.values())
    assert classes == sorted(
        ["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage", "KSampler",
         "VAEDecode", "SaveImage"]
    )


def test_render_fills_every_bound_input() -> None:
    spec = ImageJobSpec(
        prompt="a red fox", negative_prompt="blurry", width=640, height=384, steps=7, cfg=4.5,
        sampler="euler_ancestral", scheduler="karras", batch_size=2, model="other.safetensors",
    )
    rendered = SHIPPED.get("t2i_basic").render(spec, seed=42, output_prefix="comfykube/uid-1")
    g = rendered.graph
    assert g["6"]["inputs"]["text"] == "a red fox"
    assert g["7"]["inputs"]["text"] == "blurry"
    assert g["5"]["inputs"] == {"width": 640, "height": 384, "batch_size": 2}
    ks = g["3"]["inputs"]
    assert (ks["seed"], ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"]) == (
        42, 7, 4.5, "euler_ancestral", "karras")
    assert g["4"]["inputs"]["ckpt_name"] == "other.safetensors"
    assert g["9"]["inputs"]["filename_prefix"] == "comfykube/uid-1"
    assert all("_meta" not in node for node in g.values())
    assert rendered.checkpoint == "other.safetensors"


def test_render_keeps_the_template_checkpoint_when_no_model_is_given() -> None:
    rendered = SHIPPED.get("t2i_basic").render(ImageJobSpec(prompt="x"), seed=1, output_prefix="p")
    assert rendered.checkpoint == basic_data()["graph"]["4"]["inputs"]["ckpt_name"]


def test_render_does_not_touch_the_template() -> None:
    workflow = SHIPPED.get("t2i_basic")
    before = json.dumps(workflow.graph, sort_keys=True)
    workflow.render(ImageJobSpec(prompt="changed"), seed=5, output_prefix="p")
    assert json.dumps(workflow.graph, sort_keys=True) == before


def test_each_job_gets_its_own_output_prefix() -> None:
    workflow = SHIPPED.get("t2i_basic")
    a = workflow.render(ImageJobSpec(prompt="same"), seed=1, output_prefix="comfykube/a")
    b = workflow.render(ImageJobSpec(prompt="same"), seed=1, output_prefix="comfykube/b")
    assert a.graph["9"]["inputs"]["filename_prefix"] != b.graph["9"]["inputs"]["filename_prefix"]


def test_binding_to_a_missing_node_is_refused_naming_file_and_binding(tmp_path: Path) -> None:
    data = basic_data()
    data["bindings"]["steps"] = {"node": "99", "input": "steps"}
    path = write(tmp_path, "broken", data)
    with pytest.raises(WorkflowError, match=r"broken\.json: binding 'steps': node '99' is not in the graph"):
        load_workflow(path)


def test_binding_to_a_missing_input_is_refused(tmp_path: Path) -> None:
    data = basic_data()
    data["bindings"]["cfg"] = {"node": "3", "input": "cfg_scale"}
    with pytest.raises(WorkflowError, match=r"binding 'cfg': node '3' \(KSampler\) has no input 'cfg_scale'"):
        load_workflow(write(tmp_path, "broken2", data))


def test_binding_to_a_link_is_refused(tmp_path: Path) -> None:
    data = basic_data()
    data["bindings"]["model"] = {"node": "3", "input": "model"}
    with pytest.raises(WorkflowError, match="is a link, not a value"):
        load_workflow(write(tmp_path, "broken3", data))


def test_unknown_spec_field_binding_is_refused(tmp_path: Path) -> None:
    data = basic_data()
    data["bindings"]["colour"] = {"node": "3", "input": "cfg"}
    with pytest.raises(WorkflowError, match="unknown spec field"):
        load_workflow(write(tmp_path, "broken4", data))


def test_workflow_without_output_prefix_binding_is_refused(tmp_path: Path) -> None:
    data = basic_data()
    del data["bindings"]["outputPrefix"]
    with pytest.raises(WorkflowError, match="missing required binding.*outputPrefix"):
        load_workflow(write(tmp_path, "broken5", data))


def test_malformed_json_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(WorkflowError, match=r"bad\.json: cannot read workflow"):
        load_workflow(path)


def test_extra_directory_overrides_and_adds(tmp_path: Path) -> None:
    data = basic_data()
    data["description"] = "overridden"
    write(tmp_path, "t2i_basic", data)
    write(tmp_path, "second", basic_data())
    library = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR, tmp_path])
    assert library.get("t2i_basic").description == "overridden"
    assert "second" in library.names()


def test_unknown_workflow_lists_the_available_ones() -> None:
    with pytest.raises(InvalidSpec, match=r"unknown workflow 'nope' \(available: t2i_basic"):
        SHIPPED.get("nope")


def test_spec_field_the_workflow_does_not_use_is_refused(tmp_path: Path) -> None:
    data = basic_data()
    del data["bindings"]["negativePrompt"]
    write(tmp_path, "no_negative", data)
    library = WorkflowLibrary([tmp_path])
    with pytest.raises(InvalidSpec, match="spec.negativePrompt: workflow 'no_negative' does not use"):
        library.get("no_negative").render(ImageJobSpec(prompt="x", negative_prompt="y"), seed=1, output_prefix="p")


# Any text a person can type, including quotes, braces, backslashes, newlines and emoji.
prompts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300
).filter(lambda s: s.strip())


@settings(max_examples=200, deadline=None)
@given(prompt=prompts, negative=st.text(max_size=200), seed=st.integers(0, 2**63 - 1))
def test_prompt_reaches_comfyui_byte_for_byte(prompt: str, negative: str, seed: int) -> None:
    spec = ImageJobSpec(prompt=prompt, negative_prompt=negative)
    rendered = SHIPPED.get("t2i_basic").render(spec, seed=seed, output_prefix="p")
    # What goes over the wire is JSON: encode and decode as the client and ComfyUI do.
    wire = json.loads(json.dumps({"prompt": rendered.graph}))
    assert wire["prompt"]["6"]["inputs"]["text"] == prompt
    assert wire["prompt"]["7"]["inputs"]["text"] == negative
    assert wire["prompt"]["3"]["inputs"]["seed"] == seed
    assert wire["prompt"]["6"]["inputs"]["text"].encode("utf-8") == prompt.encode("utf-8")


@pytest.mark.parametrize(
    "text", ['say "hi"', "{braces} and {{double}}", "back\\slash \\n", "line\nbreak", "🦊 fox ✨", "'; DROP"]
)
def test_awkward_prompts_survive_rendering(text: str) -> None:
    rendered = SHIPPED.get("t2i_basic").render(ImageJobSpec(prompt=text), seed=1, output_prefix="p")
    assert rendered.graph["6"]["inputs"]["text"] == text


def test_longest_prompt_is_accepted() -> None:
    text = "x" * MAX_PROMPT_LENGTH
    rendered = SHIPPED.get("t2i_basic").render(ImageJobSpec(prompt=text), seed=1, output_prefix="p")
    assert rendered.graph["6"]["inputs"]["text"] == text
