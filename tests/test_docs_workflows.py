"""The workflow files shown in docs/workflows.md load, against the real node schemas of ComfyUI 0.3.64."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from comfykube.types import ImageJobSpec
from comfykube.workflows import parse_workflow
from tests.test_shipped_workflows import NODE_SCHEMAS

DOC = Path(__file__).resolve().parents[1] / "docs" / "workflows.md"
SNIPPETS = re.findall(r"<!-- workflow: ([a-z0-9_]+) -->\n```json\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_doc_shows_complete_workflows() -> None:
    assert [name for name, _ in SNIPPETS] == ["inpaint_mask", "upscale_soft"]


@pytest.mark.parametrize(("name", "text"), SNIPPETS, ids=[name for name, _ in SNIPPETS])
def test_doc_workflow_loads_and_renders(name: str, text: str) -> None:
    workflow = parse_workflow(json.loads(text), Path(f"{name}.json"), schema=NODE_SCHEMAS)
    images = {image: f"comfykube/u/{image}.png" for image in workflow.images}
    rendered = workflow.render(ImageJobSpec(prompt="a test"), seed=5, output_prefix="comfykube/u", images=images)
    assert rendered.images == images
    for image in workflow.images.values():
        assert rendered.graph[image.target.node]["inputs"][image.target.input] == images[image.name]
