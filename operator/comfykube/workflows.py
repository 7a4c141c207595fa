"""Workflow templates: loading, checking bindings, rendering a graph for a spec.

A workflow is one JSON file in `workflows/`:

```json
{"description": "...",
 "bindings": {"prompt": {"node": "6", "input": "text"}, ..., "outputPrefix": {...}},
 "graph": {<ComfyUI API-format graph, as "Save (API)" exports it>}}
```

`bindings` maps ImageJob spec fields (camelCase, as in the CRD) to a node
input. A new workflow is a new file, not new code. Substitution works on the
parsed JSON, never on text, so a prompt with quotes, braces, backslashes,
newlines or emoji reaches ComfyUI byte for byte.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfykube.errors import InvalidSpec, WorkflowError
from comfykube.types import WORKFLOW_NAME_PATTERN, ImageJobSpec

#: Spec fields a workflow may bind (camelCase, as in the CRD) → the ImageJobSpec attribute.
BINDABLE_FIELDS: dict[str, str] = {
    ImageJobSpec.model_fields[attribute].alias or attribute: attribute
    for attribute in (
        "prompt", "negative_prompt", "model", "width", "height", "steps", "cfg", "sampler", "scheduler", "seed",
        "batch_size",
    )
}
#: Bindings every workflow must declare: the text, the seed (recorded in status) and
#: the output prefix (each job writes its own files; ComfyUI re-reports an old filename
#: on a cache hit, so a shared prefix could hand one job another job's image).
REQUIRED_BINDINGS = ("prompt", "seed", "outputPrefix")
OUTPUT_PREFIX = "outputPrefix"


@dataclass(frozen=True)
class Binding:
    """Where one spec field goes: an input of a node in the graph."""

    node: str
    input: str


@dataclass(frozen=True)
class Workflow:
    """A loaded, checked workflow template."""

    name: str
    path: Path
    description: str
    graph: dict[str, Any]
    bindings: dict[str, Binding]

    def default(self, spec_field: str) -> Any:
        """The template's own value for a bound field (e.g. its default checkpoint)."""
        binding = self.bindings.get(spec_field)
        if binding is None:
            return None
        return self.graph[binding.node]["inputs"][binding.input]

    def render(self, spec: ImageJobSpec, *, seed: int, output_prefix: str) -> RenderedWorkflow:
        """The API-format graph for `spec`, with `seed` and `output_prefix` filled in.

        Raises InvalidSpec when the spec sets a field this workflow does not use:
        silently ignoring a negative prompt would render something the user did
        not ask for.
        """
        graph = copy.deepcopy(self.graph)
        values: dict[str, Any] = {}
        defaults = ImageJobSpec.model_fields
        for spec_field, attr in BINDABLE_FIELDS.items():
            value = seed if spec_field == "seed" else getattr(spec, attr)
            binding = self.bindings.get(spec_field)
            if binding is None:
                if spec_field != "seed" and value is not None and value != defaults[attr].default:
                    raise InvalidSpec(
                        f"spec.{spec_field}: workflow {self.name!r} does not use this field; "
                        f"fields it uses: {', '.join(sorted(self.bindings))}"
                    )
                continue
            if value is None:  # e.g. no model given: keep the workflow's default checkpoint
                value = self.default(spec_field)
            graph[binding.node]["inputs"][binding.input] = value
            values[spec_field] = value
        prefix = self.bindings[OUTPUT_PREFIX]
        graph[prefix.node]["inputs"][prefix.input] = output_prefix
        values[OUTPUT_PREFIX] = output_prefix
        # `_meta` is UI metadata; ComfyUI ignores it, but we keep requests minimal.
        for node in graph.values():
            node.pop("_meta", None)
        return RenderedWorkflow(workflow=self.name, graph=graph, values=values)


@dataclass(frozen=True)
class RenderedWorkflow:
    """A graph ready for POST /prompt, and the values that went into it."""

    workflow: str
    graph: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint the graph loads, if the workflow binds one."""
        return self.values.get("model")

    @property
    def sampler(self) -> str | None:
        """The sampler name in the graph, if bound."""
        return self.values.get("sampler")

    @property
    def scheduler(self) -> str | None:
        """The scheduler name in the graph, if bound."""
        return self.values.get("scheduler")


def load_workflow(path: Path) -> Workflow:
    """Load and check one workflow file; errors name the file and the binding."""
    import re

    name = path.stem
    if not re.match(WORKFLOW_NAME_PATTERN, name):
        raise WorkflowError(f"{path}: workflow file names must match {WORKFLOW_NAME_PATTERN}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"{path}: cannot read workflow: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("graph"), dict):
        raise WorkflowError(f"{path}: expected an object with 'graph' (ComfyUI API format) and 'bindings'")
    graph: dict[str, Any] = data["graph"]
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs"), dict):
            raise WorkflowError(f"{path}: node {node_id!r} needs 'class_type' and an 'inputs' object")
    raw_bindings = data.get("bindings")
    if not isinstance(raw_bindings, dict):
        raise WorkflowError(f"{path}: 'bindings' must map spec fields to {{node, input}}")
    bindings: dict[str, Binding] = {}
    for spec_field, target in raw_bindings.items():
        where = f"{path}: binding {spec_field!r}"
        if spec_field not in BINDABLE_FIELDS and spec_field != OUTPUT_PREFIX:
            allowed = ", ".join([*BINDABLE_FIELDS, OUTPUT_PREFIX])
            raise WorkflowError(f"{where}: unknown spec field (allowed: {allowed})")
        if not isinstance(target, dict) or set(target) != {"node", "input"}:
            raise WorkflowError(f"{where}: must be {{\"node\": ID, \"input\": NAME}}")
        node_id, input_name = str(target["node"]), str(target["input"])
        if node_id not in graph:
            raise WorkflowError(f"{where}: node {node_id!r} is not in the graph")
        if input_name not in graph[node_id]["inputs"]:
            raise WorkflowError(
                f"{where}: node {node_id!r} ({graph[node_id]['class_type']}) has no input {input_name!r}"
            )
        if isinstance(graph[node_id]["inputs"][input_name], list):
            raise WorkflowError(f"{where}: input {input_name!r} of node {node_id!r} is a link, not a value")
        bindings[spec_field] = Binding(node_id, input_name)
    missing = [name for name in REQUIRED_BINDINGS if name not in bindings]
    if missing:
        raise WorkflowError(f"{path}: missing required binding(s): {', '.join(missing)}")
    return Workflow(
        name=name,
        path=path,
        description=str(data.get("description", "")),
        graph=graph,
        bindings=bindings,
    )


class WorkflowLibrary:
    """All workflows from one or more directories; later directories override earlier ones."""

    def __init__(self, directories: Iterable[Path]) -> None:
        self.workflows: dict[str, Workflow] = {}
        for directory in directories:
            if directory is None or not Path(directory).is_dir():
                continue
            for path in sorted(Path(directory).glob("*.json")):
                workflow = load_workflow(path)
                self.workflows[workflow.name] = workflow

    @classmethod
    def from_settings(cls, settings: Any) -> WorkflowLibrary:
        """The shipped workflows plus the deployment's extra ones."""
        dirs = [settings.workflows_dir]
        if settings.extra_workflows_dir:
            dirs.append(settings.extra_workflows_dir)
        return cls(dirs)

    def names(self) -> list[str]:
        """Workflow names, sorted."""
        return sorted(self.workflows)

    def get(self, name: str) -> Workflow:
        """The workflow called `name`, or InvalidSpec listing the ones that exist."""
        try:
            return self.workflows[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise InvalidSpec(f"spec.workflow: unknown workflow {name!r} (available: {known})") from None
