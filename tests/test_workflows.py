"""Workflow templates: loading, binding checks, byte-exact substitution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfykube.errors import InvalidSpec, WorkflowError
from comfykube.settings import DEFAULT_WORKFLOWS_DIR
from comfykube.types import MAX_PROMPT_LENGTH, ImageJobSpec
from comfykube.workflows import Binding, InputImage, ServerChoice, WorkflowLibrary, load_workflow

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
    with pytest.raises(InvalidSpec, match=r"unknown workflow .nope. \(available: hires_fix, img2img, .*t2i_basic"):
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


# --- parameters, multi-target bindings, images (issue #10) --------------------------------------


def lora_data() -> dict:
    """t2i_basic with a LoRA between the checkpoint and the sampler, and two typed parameters."""
    data = basic_data()
    data["graph"]["10"] = {
        "class_type": "LoraLoader",
        "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "style.safetensors",
                   "strength_model": 1.0, "strength_clip": 1.0},
    }
    data["graph"]["3"]["inputs"]["model"] = ["10", 0]
    data["graph"]["6"]["inputs"]["clip"] = ["10", 1]
    data["parameters"] = {
        "lora": {"node": "10", "input": "lora_name", "type": "string", "choicesFrom": "server",
                 "description": "LoRA file"},
        "strength": {"targets": [{"node": "10", "input": "strength_model"}, {"node": "10", "input": "strength_clip"}],
                     "type": "number", "minimum": -2, "maximum": 2, "default": 0.8},
        "denoise": {"node": "3", "input": "denoise", "type": "number", "minimum": 0, "maximum": 1},
    }
    return data


def test_todays_workflow_files_load_unchanged() -> None:
    workflow = SHIPPED.get("t2i_basic")
    assert workflow.parameters == {} and workflow.images == {}
    assert workflow.bindings["seed"] == (Binding("3", "seed"),)


def test_parameters_are_written_to_every_target_with_defaults(tmp_path: Path) -> None:
    workflow = load_workflow(write(tmp_path, "lora", lora_data()))
    assert workflow.parameters["denoise"].default == 1.0  # from the graph when the file gives none
    rendered = workflow.render(ImageJobSpec(prompt="x", inputs={"lora": "ink.safetensors"}), seed=1,
                               output_prefix="p")
    assert rendered.graph["10"]["inputs"]["lora_name"] == "ink.safetensors"
    assert rendered.graph["10"]["inputs"]["strength_model"] == 0.8
    assert rendered.graph["10"]["inputs"]["strength_clip"] == 0.8
    assert rendered.inputs == {"lora": "ink.safetensors", "strength": 0.8, "denoise": 1.0}
    assert rendered.server_choices == (ServerChoice("lora", "LoraLoader", "lora_name", "ink.safetensors"),)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"strenght": 1}, r"spec\.inputs\.strenght: workflow 'lora' has no parameter 'strenght'; its parameters: "
                          r"lora \(string from the server's list.*strength \(number -2\.\.2 \(default 0\.8\)\)"),
        ({"strength": 3}, r"spec\.inputs\.strength: must be at most 2 \(got 3\); expected number -2\.\.2"),
        ({"strength": "high"}, r"spec\.inputs\.strength: must be a number \(got \"high\"\)"),
        ({"strength": True}, r"spec\.inputs\.strength: must be a number"),
        ({"lora": 5}, r"spec\.inputs\.lora: must be a string \(got 5\)"),
        ({"denoise": -0.1}, r"spec\.inputs\.denoise: must be at least 0"),
    ],
)
def test_bad_inputs_are_refused_naming_parameter_type_and_bounds(tmp_path: Path, inputs: dict, message: str) -> None:
    workflow = load_workflow(write(tmp_path, "lora", lora_data()))
    with pytest.raises(InvalidSpec, match=message):
        workflow.render(ImageJobSpec(prompt="x", inputs=inputs), seed=1, output_prefix="p")
    with pytest.raises(InvalidSpec, match=message):
        workflow.validate(ImageJobSpec(prompt="x", inputs=inputs))


def test_inputs_on_a_workflow_without_parameters_are_refused() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.inputs\.denoise: workflow 't2i_basic' has no parameter.*none"):
        SHIPPED.get("t2i_basic").render(ImageJobSpec(prompt="x", inputs={"denoise": 0.5}), seed=1, output_prefix="p")


def test_string_parameter_enum_pattern_and_max_length(tmp_path: Path) -> None:
    data = basic_data()
    data["parameters"] = {
        "method": {"node": "3", "input": "scheduler", "type": "string", "enum": ["normal", "karras"]},
        "tag": {"node": "7", "input": "text", "type": "string", "pattern": "^[a-z]+$", "maxLength": 5,
                "default": "abc"},
    }
    del data["bindings"]["scheduler"], data["bindings"]["negativePrompt"]
    workflow = load_workflow(write(tmp_path, "strings", data))
    ok = workflow.render(ImageJobSpec(prompt="x", inputs={"method": "karras", "tag": "abc"}), seed=1,
                         output_prefix="p")
    assert ok.graph["3"]["inputs"]["scheduler"] == "karras" and ok.graph["7"]["inputs"]["text"] == "abc"
    for inputs, why in [({"method": "exponential"}, "must be one of normal, karras"),
                        ({"tag": "ABC"}, "must match"), ({"tag": "abcdef"}, "at most 5 characters")]:
        with pytest.raises(InvalidSpec, match=why):
            workflow.render(ImageJobSpec(prompt="x", inputs=inputs), seed=1, output_prefix="p")


def test_parameter_parse_text_types_values_from_the_command_line(tmp_path: Path) -> None:
    workflow = load_workflow(write(tmp_path, "lora", lora_data()))
    assert workflow.parameters["strength"].parse_text("0.5") == 0.5
    assert workflow.parameters["lora"].parse_text("a b.safetensors") == "a b.safetensors"
    with pytest.raises(InvalidSpec, match=r"--set strength: must be a number \(got \"x\"\)"):
        workflow.parameters["strength"].parse_text("x")


def test_binding_with_several_targets_fills_them_all(tmp_path: Path) -> None:
    data = basic_data()
    data["graph"]["11"] = json.loads(json.dumps(data["graph"]["3"]))
    data["graph"]["11"]["inputs"]["latent_image"] = ["3", 0]
    data["graph"]["8"]["inputs"]["samples"] = ["11", 0]
    data["bindings"]["seed"] = {"targets": [{"node": "3", "input": "seed"}, {"node": "11", "input": "seed"}]}
    workflow = load_workflow(write(tmp_path, "two_pass", data))
    rendered = workflow.render(ImageJobSpec(prompt="x"), seed=77, output_prefix="p")
    assert rendered.graph["3"]["inputs"]["seed"] == rendered.graph["11"]["inputs"]["seed"] == 77
    assert rendered.seed == 77


def img2img_data() -> dict:
    data = basic_data()
    data["graph"]["10"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
    data["graph"]["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    data["graph"]["3"]["inputs"]["latent_image"] = ["11", 0]
    del data["graph"]["5"]
    for name in ("width", "height", "batchSize"):
        del data["bindings"][name]
    data["images"] = {"init": {"node": "10", "input": "image", "description": "the picture to start from"}}
    return data


def test_images_substitute_the_uploaded_filename(tmp_path: Path) -> None:
    workflow = load_workflow(write(tmp_path, "i2i", img2img_data()))
    assert workflow.images["init"] == InputImage("init", Binding("10", "image"), "the picture to start from", True)
    rendered = workflow.render(ImageJobSpec(prompt="x"), seed=1, output_prefix="p",
                               images={"init": "comfykube/uid-1 init.png"})
    assert rendered.graph["10"]["inputs"]["image"] == "comfykube/uid-1 init.png"
    assert rendered.images == {"init": "comfykube/uid-1 init.png"}
    assert rendered.expected_size is None  # the output follows the input image


def test_missing_or_unknown_images_are_refused(tmp_path: Path) -> None:
    workflow = load_workflow(write(tmp_path, "i2i", img2img_data()))
    with pytest.raises(InvalidSpec, match=r"spec\.images: workflow 'i2i' needs the image 'init': the picture"):
        workflow.render(ImageJobSpec(prompt="x"), seed=1, output_prefix="p")
    with pytest.raises(InvalidSpec, match=r"workflow 'i2i' has no input image 'mask' \(its images: init\)"):
        workflow.check_images(["init", "mask"])
    with pytest.raises(InvalidSpec, match=r"has no input image 'init' \(its images: none\)"):
        SHIPPED.get("t2i_basic").render(ImageJobSpec(prompt="x"), seed=1, output_prefix="p", images={"init": "a.png"})


def test_optional_image_keeps_the_graph_value_when_absent(tmp_path: Path) -> None:
    data = img2img_data()
    data["images"]["init"]["required"] = False
    workflow = load_workflow(write(tmp_path, "i2i", data))
    assert workflow.render(ImageJobSpec(prompt="x"), seed=1, output_prefix="p").graph["10"]["inputs"]["image"] == (
        "example.png")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["parameters"].update(x={"node": "99", "input": "a", "type": "number"}),
         r"lora\.json: parameter 'x': node '99' is not in the graph"),
        (lambda d: d["parameters"].update(x={"node": "10", "input": "model", "type": "number"}),
         r"parameter 'x': input 'model' of node '10' is a link, not a value"),
        (lambda d: d["parameters"].update(x={"node": "3", "input": "steps", "type": "float"}),
         r"parameter 'x': type must be one of integer, number, string, boolean"),
        (lambda d: d["parameters"].update(x={"node": "3", "input": "steps", "type": "integer", "minimum": "1"}),
         r"parameter 'x': minimum needs a number"),
        (lambda d: d["parameters"].update(x={"node": "3", "input": "steps", "type": "integer", "maximum": 5}),
         r"parameter 'x': default: must be at most 5 \(got 20\)"),
        (lambda d: d["parameters"].update(x={"node": "3", "input": "steps", "type": "integer", "colour": 1}),
         r"parameter 'x': unknown key\(s\) colour"),
        (lambda d: d["parameters"].update(x={"node": "3", "input": "steps", "type": "integer",
                                             "choicesFrom": "server"}),
         r"parameter 'x': choicesFrom may only be \"server\", on a string parameter"),
        (lambda d: d["parameters"].update(x={"node": "3", "input": "seed", "type": "integer"}),
         r"parameter 'x': node '3' input 'seed' is already bound by binding 'seed'"),
        (lambda d: d.update(images={"init": {"node": "10", "input": "strength_model"}}),
         r"image 'init': input 'strength_model' of node '10' must hold a file name"),
        (lambda d: d.update(images={"init": {"node": "10", "input": "clip"}}),
         r"image 'init': input 'clip' of node '10' is a link"),
        (lambda d: d["bindings"].update(seed={"targets": []}), r"binding 'seed': targets must be a non-empty list"),
        (lambda d: d.update(extra=1), r"lora\.json: unknown key\(s\) extra"),
    ],
)
def test_bad_parameters_and_images_are_refused_naming_file_and_entry(tmp_path: Path, change: Any,
                                                                      message: str) -> None:
    data = lora_data()
    change(data)
    with pytest.raises(WorkflowError, match=message):
        load_workflow(write(tmp_path, "lora", data))


# GET /object_info of a real ComfyUI 0.3.64, copied unchanged from the team's protocol captures
# (shared/comfyui-protocol/captures/82_get_object_info_full.json; tests/data/comfyui/README.md).
NODE_SCHEMAS = json.loads(
    (Path(__file__).parent / "data" / "comfyui" / "82_get_object_info_full.json").read_text(encoding="utf-8")
)["response_body"]


def test_schema_check_refuses_a_parameter_whose_type_does_not_fit(tmp_path: Path) -> None:
    data = lora_data()
    data["parameters"]["steps_text"] = {"node": "3", "input": "steps", "type": "string"}
    del data["bindings"]["steps"]
    data["graph"]["3"]["inputs"]["steps"] = "20"
    with pytest.raises(WorkflowError, match=r"parameter 'steps_text': node '3' \(KSampler\) input 'steps' is INT, "
                                            r"which does not fit \(needs STRING or COMBO\)"):
        load_workflow(write(tmp_path, "lora", data), schema=NODE_SCHEMAS)


def test_schema_check_refuses_an_image_on_a_non_file_input(tmp_path: Path) -> None:
    data = basic_data()
    data["images"] = {"init": {"node": "6", "input": "text"}}
    del data["bindings"]["prompt"]
    with pytest.raises(WorkflowError, match=r"image 'init': node '6' \(CLIPTextEncode\) input 'text' is STRING"):
        load_workflow(write(tmp_path, "img", data), schema=NODE_SCHEMAS)


def test_schema_check_finds_bad_links_values_and_unknown_classes(tmp_path: Path) -> None:
    data = basic_data()
    data["graph"]["8"]["inputs"]["vae"] = ["4", 1]  # CLIP into a VAE input
    data["graph"]["3"]["inputs"]["denoise"] = 2.0
    data["graph"]["12"] = {"class_type": "NoSuchNode", "inputs": {}}
    data["graph"]["9"]["inputs"]["colour"] = "red"
    with pytest.raises(WorkflowError) as caught:
        load_workflow(write(tmp_path, "bad", data), schema=NODE_SCHEMAS)
    text = caught.value.message
    assert "node '8' (VAEDecode): input 'vae' expects VAE but node '4' output 1 is CLIP" in text
    assert "node '3' (KSampler): input 'denoise' 2.0 is above the maximum 1.0" in text
    assert "node '12' (NoSuchNode): no such node class" in text
    assert "node '9' (SaveImage): has no input 'colour'" in text
    assert text.startswith(str(tmp_path / "bad.json"))
