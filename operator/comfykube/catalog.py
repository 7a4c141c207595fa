"""What one ComfyUI offers: checkpoints, LoRAs, upscale models, samplers and schedulers.

`comfykube models` prints it, so a person picks `--model`, `--sampler` and `--scheduler` from
names the server really has (`/models/{folder}` and `/object_info/KSampler`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from comfykube.comfyui.client import ComfyClient


@dataclasses.dataclass(frozen=True)
class Catalog:
    """The names a ComfyUI accepts, each list as the server ordered it."""

    url: str
    checkpoints: list[str]
    loras: list[str]
    upscale_models: list[str]
    samplers: list[str]
    schedulers: list[str]

    def wire(self) -> dict[str, Any]:
        """JSON form (`comfykube models --json`), camelCase like the ImageJob."""
        return {
            "url": self.url,
            "checkpoints": self.checkpoints,
            "loras": self.loras,
            "upscaleModels": self.upscale_models,
            "samplers": self.samplers,
            "schedulers": self.schedulers,
        }

    def text(self) -> str:
        """A plain listing, one heading per kind and one name per line."""
        sections = [
            ("checkpoints (--model)", self.checkpoints),
            ("LoRAs", self.loras),
            ("upscale models", self.upscale_models),
            ("samplers (--sampler)", self.samplers),
            ("schedulers (--scheduler)", self.schedulers),
        ]
        lines = [f"ComfyUI {self.url}"]
        for heading, names in sections:
            lines.append(f"{heading}: {len(names)}")
            lines.extend(f"  {name}" for name in names)
        return "\n".join(lines) + "\n"


async def read_catalog(comfy: ComfyClient) -> Catalog:
    """Ask the ComfyUI behind `comfy`; ComfyUIUnavailable when it does not answer."""
    samplers, schedulers = await comfy.sampler_options()
    return Catalog(
        url=comfy.base_url,
        checkpoints=await comfy.models_in("checkpoints"),
        loras=await comfy.models_in("loras"),
        upscale_models=await comfy.models_in("upscale_models"),
        samplers=list(samplers),
        schedulers=list(schedulers),
    )
