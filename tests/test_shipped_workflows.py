"""The shipped workflows against the real node schemas of ComfyUI 0.3.64, and how they render.

The schemas are `GET /object_info` of a real ComfyUI 0.3.64, copied unchanged from the team's
protocol captures (shared/comfyui-protocol/captures/82_get_object_info_full.json) into
tests/data/comfyui/. Every input must exist, every value fit its type and bounds, every link
join matching output and input types, every binding, parameter and image land in an input of
the right type.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfykube.comfyui.schema import ServerChoice, check_graph
from comfykube.errors import InvalidSpec
from comfykube.settings import DEFAULT_WORKFLOWS_DIR
from comfykube.types import ImageJobSpec
from comfykube.workflows import WorkflowLibrary

NODE_SCHEMAS = json.loads(
    (Path(__file__).parent / "data" / "comfyui" / "82_get_object_info_full.json").read_text(encoding="utf-8")
)["response_body"]
SHIPPED = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR], schema=NODE_SCHEMAS)
EXPECTED = ["hires_fix", "img2img", "inpaint", "sdxl_basic", "t2i_basic", "t2i_lora", "upscale", "upscale_model"]
#: Node classes that ship with ComfyUI itself (no custom nodes needed).
CORE_NODES = {
    "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage",
    "LoraLoader", "LatentUpscaleBy", "LoadImage", "VAEEncode", "VAEEncodeForInpaint", "ImageScaleBy",
    "UpscaleModelLoader", "ImageUpscaleWithModel",
}


def test_every_expected_workflow_ships_and_loads_against_the_real_schemas() -> None:
    assert SHIPPED.names() == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_shipped_graph_fits_comfyui_0_3_64(name: str) -> None:
    workflow = SHIPPED.get(name)
    assert workflow.check_schema(NODE_SCHEMAS) == []
    assert {node["class_type"] for node in workflow.graph.values()} <= CORE_NODES
    assert workflow.description


@pytest.mark.parametrize("name", EXPECTED)
def test_rendered_defaults_fit_comfyui_0_3_64(name: str) -> None:
    """What is sent with every default (and a file name per image) passes the same checks."""
    workflow = SHIPPED.get(name)
    images = {image: "upload.png" for image in workflow.images}
    rendered = workflow.render(ImageJobSpec(prompt="a lighthouse"), seed=2**63 - 1, output_prefix="comfykube/u",
                               images=images)
    # The captured server's own lists (checkpoint, images, LoRAs) differ from ours: skip those combos.
    replaced = {(t.node, t.input) for p in workflow.parameters.values() if p.choices_from for t in p.targets}
    replaced |= {(t.node, t.input) for t in workflow.bindings.get("model", ())}
    replaced |= {(i.target.node, i.target.input) for i in workflow.images.values()}
    assert check_graph(rendered.graph, NODE_SCHEMAS, replaced=replaced) == []


def test_check_graph_is_not_vacuous() -> None:
    graph = json.loads(json.dumps(SHIPPED.get("hires_fix").graph))
    graph["11"]["inputs"]["scale_by"] = 9.0
    graph["12"]["inputs"]["latent_image"] = ["4", 0]
    problems = check_graph(graph, NODE_SCHEMAS)
    assert any("scale_by' 9.0 is above the maximum 8.0" in p for p in problems)
    assert any("latent_image' expects LATENT but node '4' output 0 is MODEL" in p for p in problems)


def test_hires_fix_uses_one_seed_for_both_passes() -> None:
    rendered = SHIPPED.get("hires_fix").render(
        ImageJobSpec(prompt="x", inputs={"hiresScale": 2, "hiresDenoise": 0.4}), seed=9, output_prefix="p"
    )
    samplers = [n for n in rendered.graph.values() if n["class_type"] == "KSampler"]
    assert [n["inputs"]["seed"] for n in samplers] == [9, 9]
    assert rendered.graph["11"]["inputs"]["scale_by"] == 2.0
    assert rendered.expected_size is None and rendered.expected_count == 1


def test_t2i_lora_asks_the_server_for_the_lora() -> None:
    rendered = SHIPPED.get("t2i_lora").render(
        ImageJobSpec(prompt="x", inputs={"lora": "ink.safetensors", "strength": 0.5}), seed=1, output_prefix="p"
    )
    assert rendered.server_choices == (ServerChoice("lora", "LoraLoader", "lora_name", "ink.safetensors"),)
    assert rendered.graph["10"]["inputs"]["strength_model"] == rendered.graph["10"]["inputs"]["strength_clip"] == 0.5
    assert rendered.expected_size == (512, 512)


def test_sdxl_basic_sizes_are_its_own_parameters() -> None:
    workflow = SHIPPED.get("sdxl_basic")
    rendered = workflow.render(ImageJobSpec(prompt="x"), seed=1, output_prefix="p")
    assert rendered.graph["5"]["inputs"]["width"] == rendered.graph["5"]["inputs"]["height"] == 1024
    with pytest.raises(InvalidSpec, match=r"spec\.width: workflow 'sdxl_basic' does not use this field.*"
                                          r"spec\.inputs\.width"):
        workflow.render(ImageJobSpec(prompt="x", width=768), seed=1, output_prefix="p")


@pytest.mark.parametrize("name", ["img2img", "inpaint", "upscale", "upscale_model"])
def test_image_workflows_need_their_image_and_write_the_uploaded_name(name: str) -> None:
    workflow = SHIPPED.get(name)
    with pytest.raises(InvalidSpec, match=rf"spec\.images: workflow '{name}' needs the image 'init'"):
        workflow.render(ImageJobSpec(prompt="x"), seed=1, output_prefix="p")
    rendered = workflow.render(ImageJobSpec(prompt="x"), seed=1, output_prefix="p",
                               images={"init": "comfykube/uid init.png"})
    (loader,) = [n for n in rendered.graph.values() if n["class_type"] == "LoadImage"]
    assert loader["inputs"]["image"] == "comfykube/uid init.png"
    assert rendered.expected_size is None


def test_upscale_uses_no_prompt_and_refuses_sampler_fields() -> None:
    workflow = SHIPPED.get("upscale")
    assert workflow.spec_fields == []
    with pytest.raises(InvalidSpec, match=r"spec\.steps: workflow 'upscale' does not use this field"):
        workflow.render(ImageJobSpec(prompt="x", steps=5), seed=1, output_prefix="p", images={"init": "a.png"})
    rendered = workflow.render(ImageJobSpec(prompt="x", inputs={"scale": 4}), seed=1, output_prefix="p",
                               images={"init": "a.png"})
    assert rendered.graph["11"]["inputs"]["scale_by"] == 4.0 and rendered.seed is None


EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_passes_the_operators_workflow_checks(path: Path) -> None:
    """Beyond the schema (test_crd): spec.inputs against the workflow, spec.graph rendered."""
    import yaml

    from comfykube.types import parse_spec
    from comfykube.workflows import render_raw_graph

    spec = parse_spec(yaml.safe_load(path.read_text(encoding="utf-8"))["spec"])
    if spec.graph is not None:
        rendered = render_raw_graph(spec, output_prefix="comfykube/uid")
        assert check_graph(rendered.graph, NODE_SCHEMAS, replaced={("4", "ckpt_name")}) == []
        return
    workflow = WorkflowLibrary([DEFAULT_WORKFLOWS_DIR]).get(spec.workflow)
    workflow.validate(spec)
