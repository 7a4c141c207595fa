"""`comfykube workflow init`: turn a graph saved with ComfyUI's "Save (API)" into a workflow file.

The proposal binds what it recognises in core nodes: the sampler (KSampler:
seed on every sampler, steps, cfg, sampler, scheduler on the first one), the
prompt encoders (CLIPTextEncode reached from a sampler's positive/negative
input, through any conditioning nodes in between), the latent size
(EmptyLatentImage), the checkpoint (CheckpointLoaderSimple), the savers
(every `filename_prefix`), LoadImage/LoadImageMask as named images, LoRA and
upscale-model loaders as parameters whose values come from the server, and
the denoise of a sampler that starts from an image. Everything else stays as
the graph has it; the result loads with `load_workflow`, so it is valid by
construction, and a person reviews it before shipping.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from comfykube.comfyui.schema import is_link
from comfykube.errors import WorkflowError
from comfykube.workflows import parse_workflow

SAMPLERS = ("KSampler", "KSamplerAdvanced")
#: Input names of the seed on each sampler class.
SEED_INPUT = {"KSampler": "seed", "KSamplerAdvanced": "noise_seed"}
IMAGE_LOADERS = ("LoadImage", "LoadImageMask")


def _links(node: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for name, value in node["inputs"].items():
        if is_link(value):
            yield name, str(value[0])


def _source(graph: dict[str, Any], node_id: str, input_name: str) -> str | None:
    value = graph[node_id]["inputs"].get(input_name)
    return str(value[0]) if is_link(value) and str(value[0]) in graph else None


def _find_upstream(graph: dict[str, Any], start: str | None, classes: tuple[str, ...]) -> str | None:
    """The nearest node of `classes` reached by following links backwards from `start`."""
    seen: set[str] = set()
    queue = [start] if start is not None else []
    while queue:
        node_id = queue.pop(0)
        if node_id in seen or node_id not in graph:
            continue
        seen.add(node_id)
        if graph[node_id].get("class_type") in classes:
            return node_id
        queue.extend(source for _, source in _links(graph[node_id]))
    return None


def _sort_key(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def propose_workflow(graph: Any, *, description: str = "", path: Path = Path("proposed.json")) -> dict[str, Any]:
    """A workflow document for `graph` (API format); WorkflowError when the graph cannot be one."""
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise WorkflowError(
            f"{path}: this is ComfyUI's UI format; export the graph with \"Save (API)\" (enable the dev mode "
            "options in the settings if the menu lacks it)"
        )
    if isinstance(graph, dict) and isinstance(graph.get("graph"), dict) and "bindings" in graph:
        raise WorkflowError(f"{path}: this is already a workflow file")
    if isinstance(graph, dict) and isinstance(graph.get("prompt"), dict):
        graph = graph["prompt"]  # a POST /prompt body
    if not isinstance(graph, dict) or not graph:
        raise WorkflowError(f"{path}: expected an API-format graph: {{node id: {{class_type, inputs}}}}")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or not isinstance(
            node.get("inputs"), dict
        ):
            raise WorkflowError(f"{path}: node {node_id!r} needs 'class_type' and an 'inputs' object")
    ids = sorted(graph, key=_sort_key)
    by_class: dict[str, list[str]] = {}
    for node_id in ids:
        by_class.setdefault(graph[node_id]["class_type"], []).append(node_id)
    bindings: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    images: dict[str, Any] = {}
    notes: list[str] = []

    def value_input(node_id: str, name: str) -> bool:
        return name in graph[node_id]["inputs"] and not isinstance(graph[node_id]["inputs"][name], list)

    def target(node_id: str, name: str) -> dict[str, str]:
        return {"node": node_id, "input": name}

    samplers = [i for i in ids if graph[i]["class_type"] in SAMPLERS]
    seeds = [target(i, SEED_INPUT[graph[i]["class_type"]]) for i in samplers
             if value_input(i, SEED_INPUT[graph[i]["class_type"]])]
    if seeds:
        bindings["seed"] = seeds[0] if len(seeds) == 1 else {"targets": seeds}
    # The first sampler is the one fed by an empty latent, if any (the others refine it).
    def starts_empty(node_id: str) -> bool:
        latent = _source(graph, node_id, "latent_image")
        return latent is not None and graph[latent]["class_type"] == "EmptyLatentImage"

    first = next((i for i in samplers if starts_empty(i)), samplers[0] if samplers else None)
    if first is not None:
        for spec_field, name in (("steps", "steps"), ("cfg", "cfg"), ("sampler", "sampler_name"),
                                 ("scheduler", "scheduler")):
            if value_input(first, name):
                bindings[spec_field] = target(first, name)
        for spec_field, name in (("prompt", "positive"), ("negativePrompt", "negative")):
            encoder = _find_upstream(graph, _source(graph, first, name), ("CLIPTextEncode",))
            if encoder is not None and value_input(encoder, "text"):
                bindings[spec_field] = target(encoder, "text")
        latent = _source(graph, first, "latent_image")
        if latent is not None and graph[latent]["class_type"] == "EmptyLatentImage":
            for spec_field, name in (("width", "width"), ("height", "height"), ("batchSize", "batch_size")):
                if value_input(latent, name):
                    bindings[spec_field] = target(latent, name)
        elif latent is not None and value_input(first, "denoise"):
            parameters["denoise"] = {
                **target(first, "denoise"), "type": "number", "minimum": 0, "maximum": 1,
                "description": "How far to move away from the input image",
            }
        checkpoint = _find_upstream(graph, _source(graph, first, "model"), ("CheckpointLoaderSimple",))
        if checkpoint is not None and value_input(checkpoint, "ckpt_name"):
            bindings["model"] = target(checkpoint, "ckpt_name")
    elif not samplers:
        notes.append("no KSampler: the prompt is only the job's title")
    savers = [target(i, "filename_prefix") for i in ids if isinstance(graph[i]["inputs"].get("filename_prefix"), str)]
    if not savers:
        raise WorkflowError(
            f"{path}: no node has a filename_prefix (SaveImage or another saver): a job could not find its outputs"
        )
    bindings["outputPrefix"] = savers[0] if len(savers) == 1 else {"targets": savers}
    for index, node_id in enumerate(i for i in ids if graph[i]["class_type"] in IMAGE_LOADERS):
        if not value_input(node_id, "image"):
            continue
        is_mask = graph[node_id]["class_type"] == "LoadImageMask"
        name = "mask" if is_mask and "mask" not in images else ("init" if index == 0 else f"image{index + 1}")
        images[name] = {
            **target(node_id, "image"), "required": True,
            "description": "Mask image" if is_mask else "Input image (its alpha is the mask where a node uses one)",
        }
    for count, node_id in enumerate(by_class.get("LoraLoader", [])):
        suffix = "" if count == 0 else str(count + 1)
        if value_input(node_id, "lora_name"):
            parameters[f"lora{suffix}"] = {
                **target(node_id, "lora_name"), "type": "string", "choicesFrom": "server", "maxLength": 255,
                "description": "LoRA file as ComfyUI lists it",
            }
        strengths = [target(node_id, n) for n in ("strength_model", "strength_clip") if value_input(node_id, n)]
        if strengths:
            parameters[f"loraStrength{suffix}"] = {
                "targets": strengths, "type": "number", "minimum": -100, "maximum": 100,
                "description": "How strongly the LoRA applies (LoraLoader's own bounds)",
            }
    for count, node_id in enumerate(by_class.get("UpscaleModelLoader", [])):
        if value_input(node_id, "model_name"):
            parameters[f"upscaleModel{'' if count == 0 else count + 1}"] = {
                **target(node_id, "model_name"), "type": "string", "choicesFrom": "server", "maxLength": 255,
                "description": "Upscale model as ComfyUI lists it",
            }
    classes = sorted({n["class_type"] for n in graph.values()})
    document = {
        "description": description or f"Adopted with comfykube workflow init: {', '.join(classes)}."
        + (f" ({'; '.join(notes)})" if notes else ""),
        "bindings": bindings,
        "parameters": parameters,
        "images": images,
        "graph": graph,
    }
    if not parameters:
        del document["parameters"]
    if not images:
        del document["images"]
    parse_workflow(document, path)  # the proposal must load as it is
    return document
