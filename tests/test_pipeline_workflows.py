"""The shipped workflows with parameters end to end: pipeline → ComfyUI stand-in → nanio.

Every refusal (unknown parameter, out of bounds, a LoRA the server lacks, a raw graph
without ALLOW_RAW_GRAPHS) is shown to reach ComfyUI with nothing: no submission.
The image workflows (img2img, inpaint, upscale) run end to end with the upload path
(tests of spec.images); their rendering is tested in test_shipped_workflows.py.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfykube.comfyui.client import ComfyClient
from comfykube.errors import InvalidSpec, PreflightFailed
from comfykube.pipeline import JobIdentity, Pipeline
from comfykube.storage import MinioStore
from comfykube.types import ImageJobSpec, Phase, parse_spec
from tests import test_pipeline
from tests.test_pipeline import WORKFLOWS, new_job

# The same pipeline on the ComfyUI stand-in and nanio as the core pipeline tests (fixtures).
store = test_pipeline.store
pipeline = test_pipeline.pipeline


def submissions(comfyui: Any) -> int:
    return sum(comfyui.stats()["submissions"].values())


def sent_graph(comfyui: Any, job: JobIdentity) -> dict[str, Any]:
    graph: dict[str, Any] = comfyui.history[job.uid]["prompt"][2]  # [number, id, graph, extra, outputs]
    return graph


async def test_t2i_lora_renders_with_a_lora_from_the_server(pipeline: Pipeline, comfyui: Any) -> None:
    job = new_job("lora")
    spec = ImageJobSpec(prompt="a fox", workflow="t2i_lora", width=64, height=64, steps=2, seed=3,
                        inputs={"lora": "styles/ink wash.safetensors", "strength": 0.6})
    status = await pipeline.run(spec, job)
    assert status.phase is Phase.SUCCEEDED and status.image_count == 1 and status.seed == 3
    lora = sent_graph(comfyui, job)["10"]["inputs"]
    assert (lora["lora_name"], lora["strength_model"], lora["strength_clip"]) == ("styles/ink wash.safetensors",
                                                                                    0.6, 0.6)


async def test_a_lora_the_server_lacks_fails_in_preflight_with_did_you_mean(pipeline: Pipeline, comfyui: Any) -> None:
    spec = ImageJobSpec(prompt="a fox", workflow="t2i_lora", inputs={"lora": "detail-tweaker.safetensor"})
    with pytest.raises(PreflightFailed) as caught:
        await pipeline.run(spec, new_job())
    message = caught.value.message
    assert "lora (LoraLoader.lora_name) 'detail-tweaker.safetensor' is not offered by this ComfyUI" in message
    assert "did you mean 'detail-tweaker.safetensors'?" in message
    assert "styles/ink wash.safetensors" in message  # the allowed list
    assert submissions(comfyui) == 0


async def test_a_lora_installed_after_the_list_was_cached_is_found(pipeline: Pipeline, comfyui: Any) -> None:
    with pytest.raises(PreflightFailed):
        await pipeline.run(ImageJobSpec(prompt="p", workflow="t2i_lora", inputs={"lora": "new.safetensors"}), new_job())
    comfyui.configure(loras=["new.safetensors"])
    status = await pipeline.run(ImageJobSpec(prompt="p", workflow="t2i_lora", width=64, height=64, steps=1,
                                             inputs={"lora": "new.safetensors"}), new_job())
    assert status.phase is Phase.SUCCEEDED


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"strenght": 1.0}, r"spec\.inputs\.strenght: workflow 't2i_lora' has no parameter 'strenght'; "
                            r"its parameters: lora .*strength \(number -4\.\.4"),
        ({"lora": "x.safetensors", "strength": 9}, r"spec\.inputs\.strength: must be at most 4 \(got 9\)"),
    ],
)
async def test_bad_inputs_are_refused_before_comfyui_is_asked(
    store: MinioStore, inputs: dict[str, Any], message: str
) -> None:
    # Nothing listens on the port: any request would end in ComfyUIUnavailable, not InvalidSpec.
    async with ComfyClient(f"http://127.0.0.1:{free_port()}", timeout=2) as comfy:
        pipeline = Pipeline(comfy=comfy, store=store, workflows=WORKFLOWS, health_retries=0)
        with pytest.raises(InvalidSpec, match=message):
            await pipeline.run(ImageJobSpec(prompt="p", workflow="t2i_lora", inputs=inputs), new_job())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_hires_fix_runs_two_passes_with_one_seed(pipeline: Pipeline, comfyui: Any) -> None:
    job = new_job("hires")
    spec = ImageJobSpec(prompt="a castle", workflow="hires_fix", width=64, height=96, steps=2, seed=11,
                        inputs={"hiresScale": 2, "hiresSteps": 1})
    status = await pipeline.run(spec, job)
    (image,) = status.images
    assert (image.width, image.height) == (128, 192)
    graph = sent_graph(comfyui, job)
    assert graph["3"]["inputs"]["seed"] == graph["12"]["inputs"]["seed"] == 11


async def test_sdxl_basic_renders_at_its_own_default_size(pipeline: Pipeline, comfyui: Any) -> None:
    spec = ImageJobSpec(prompt="a harbour", workflow="sdxl_basic", steps=1, inputs={"width": 768})
    status = await pipeline.run(spec, new_job("sdxl"))
    (image,) = status.images
    assert (image.width, image.height) == (768, 1024)


async def test_raw_graph_is_refused_unless_the_deployment_allows_it(pipeline: Pipeline, comfyui: Any) -> None:
    graph = WORKFLOWS.get("t2i_basic").graph
    with pytest.raises(InvalidSpec, match=r"spec\.graph: raw graphs are not accepted .*ALLOW_RAW_GRAPHS=true"):
        await pipeline.run(ImageJobSpec(prompt="p", graph=graph), new_job())
    assert submissions(comfyui) == 0


async def test_allowed_raw_graph_runs_under_the_jobs_own_prefix(pipeline: Pipeline, comfyui: Any) -> None:
    pipeline.allow_raw_graphs = True
    graph = {**WORKFLOWS.get("t2i_basic").graph}
    graph["5"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 80, "batch_size": 2}}
    job = new_job("raw")
    status = await pipeline.run(ImageJobSpec(prompt="my own graph", graph=graph), job)
    assert status.phase is Phase.SUCCEEDED and status.image_count == 2 and status.seed is None
    assert {(i.width, i.height) for i in status.images} == {(64, 80)}
    assert sent_graph(comfyui, job)["9"]["inputs"]["filename_prefix"] == job.output_prefix


async def test_raw_graph_without_a_saver_or_with_workflow_fields_is_refused(pipeline: Pipeline, comfyui: Any) -> None:
    pipeline.allow_raw_graphs = True
    graph = {k: v for k, v in WORKFLOWS.get("t2i_basic").graph.items() if k != "9"}
    with pytest.raises(InvalidSpec, match=r"spec\.graph: no node has a filename_prefix"):
        await pipeline.run(ImageJobSpec(prompt="p", graph=graph), new_job())
    with pytest.raises(InvalidSpec, match=r"spec\.steps: not used with spec\.graph"):
        await pipeline.run(ImageJobSpec(prompt="p", steps=3, graph=WORKFLOWS.get("t2i_basic").graph), new_job())
    assert submissions(comfyui) == 0


CAPTURES = Path(__file__).parent / "data" / "comfyui"


async def test_standin_refuses_a_missing_lora_as_comfyui_0_3_64_did(comfyui: Any) -> None:
    """Without preflight, the stand-in answers a missing LoRA with the real server's 400 (capture 95)."""
    capture = json.loads((CAPTURES / "95_post_prompt_error_lora_not_installed.json").read_text(encoding="utf-8"))
    comfyui.configure(loras=[], checkpoints=["random-sd15.safetensors"])
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{comfyui.url}/prompt", json={"prompt": capture["request"]["json"]["prompt"]})
    assert response.status_code == capture["response"]["status"]
    assert response.json() == capture["response"]["body"]


async def test_standin_lists_loras_and_upscale_models_in_the_real_shapes(comfyui: Any) -> None:
    async with httpx.AsyncClient() as http:
        lora = (await http.get(f"{comfyui.url}/object_info/LoraLoader")).json()["LoraLoader"]
        upscale = (await http.get(f"{comfyui.url}/object_info/UpscaleModelLoader")).json()["UpscaleModelLoader"]
        folders = [(await http.get(f"{comfyui.url}/models/{f}")).json() for f in ("loras", "upscale_models")]
    assert lora["input"]["required"]["lora_name"][0] == folders[0] == ["detail-tweaker.safetensors",
                                                                         "styles/ink wash.safetensors"]
    assert upscale["input"]["required"]["model_name"] == ["COMBO", {"multiselect": False, "options": folders[1]}]


async def test_an_upscale_model_the_server_lacks_fails_in_preflight_before_the_image_is_fetched(
    pipeline: Pipeline, comfyui: Any
) -> None:
    """UpscaleModelLoader lists its choices in the newer `["COMBO", {"options"}]` shape; preflight reads it."""
    spec = parse_spec({
        "prompt": "bigger", "workflow": "upscale_model", "inputs": {"upscaleModel": "8x-nope.pth"},
        # Never fetched: preflight refuses first (the address is unresolvable anyway).
        "images": [{"name": "init", "url": "https://images.invalid/photo.png"}],
    })
    with pytest.raises(PreflightFailed) as caught:
        await pipeline.run(spec, new_job())
    assert "upscaleModel (UpscaleModelLoader.model_name) '8x-nope.pth' is not offered" in caught.value.message
    assert "4x-UltraSharp.pth, RealESRGAN_x2.pth" in caught.value.message
    assert submissions(comfyui) == 0 and comfyui.stats()["uploads"] == []
