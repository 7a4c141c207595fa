"""Workflow templates: loading, checking bindings, rendering a graph for a spec.

A workflow is one JSON file in `workflows/` (the format is described in
`docs/workflows.md`):

```json
{"description": "...",
 "bindings": {"prompt": {"node": "6", "input": "text"}, ..., "outputPrefix": {...}},
 "parameters": {"denoise": {"targets": [{"node": "3", "input": "denoise"}],
                "type": "number", "minimum": 0, "maximum": 1, "default": 0.6}},
 "images": {"init": {"node": "10", "input": "image", "required": true}},
 "graph": {<ComfyUI API-format graph, as "Save (API)" exports it>}}
```

`bindings` maps ImageJob spec fields (camelCase, as in the CRD) to one node
input (`{"node", "input"}`) or several (`{"targets": [...]}`). `parameters`
are the workflow's own typed inputs (`spec.inputs`), `images` its named input
images (uploaded to ComfyUI, their filename substituted). A new workflow is a
new file, not new code. Substitution works on the parsed JSON, never on text,
so a prompt with quotes, braces, backslashes, newlines or emoji reaches ComfyUI
byte for byte.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfykube.comfyui.schema import ServerChoice, check_graph, input_spec, input_type, is_link
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
#: Bindings every workflow must declare: the output prefix (each job writes its own
#: files; ComfyUI re-reports an old filename on a cache hit, so a shared prefix could
#: hand one job another job's image). A workflow that samples binds the seed too (it is
#: recorded in status); one without a prompt binding (e.g. `upscale`) keeps the prompt
#: as the job's title.
REQUIRED_BINDINGS = ("outputPrefix",)
OUTPUT_PREFIX = "outputPrefix"

#: The ComfyUI input type each standard field must land in (checked against /object_info).
FIELD_INPUT_TYPES: dict[str, tuple[str, ...]] = {
    "prompt": ("STRING",), "negativePrompt": ("STRING",), "model": ("COMBO",),
    "width": ("INT",), "height": ("INT",), "steps": ("INT",), "cfg": ("FLOAT",),
    "sampler": ("COMBO",), "scheduler": ("COMBO",), "seed": ("INT",), "batchSize": ("INT",),
    OUTPUT_PREFIX: ("STRING",),
}

#: Parameter types → the JSON values they take and the ComfyUI input types they fit.
PARAMETER_TYPES: dict[str, tuple[str, ...]] = {
    "integer": ("INT", "FLOAT", "COMBO"),
    "number": ("FLOAT",),
    "string": ("STRING", "COMBO"),
    "boolean": ("BOOLEAN",),
}
#: Parameter names: what `--set name=value` and `spec.inputs` keys may be.
PARAMETER_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,62}$"
#: Longest string parameter when the workflow sets no maxLength (the prompt's bound).
DEFAULT_MAX_STRING = 4000
_PARAMETER_KEYS = frozenset(
    {"targets", "node", "input", "type", "description", "default", "minimum", "maximum", "enum", "pattern",
     "maxLength", "choicesFrom"}
)
_IMAGE_KEYS = frozenset({"node", "input", "description", "required"})


@dataclass(frozen=True)
class Binding:
    """One node input of the graph (a target of a spec field, parameter or image)."""

    node: str
    input: str


@dataclass(frozen=True)
class Parameter:
    """A typed input of a workflow (`spec.inputs.<name>`), written to one or more node inputs."""

    name: str
    type: str
    targets: tuple[Binding, ...]
    default: Any
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    max_length: int | None = None
    #: "server": the allowed values are what the running ComfyUI offers for the first target.
    choices_from: str | None = None

    def describe(self) -> str:
        """`number 0..1 (default 0.6)`: the type and bounds, as errors and `workflows` show them."""
        text = self.type
        if self.minimum is not None or self.maximum is not None:
            low = "" if self.minimum is None else _num(self.minimum)
            high = "" if self.maximum is None else _num(self.maximum)
            text += f" {low}..{high}"
        if self.enum is not None:
            text += f" one of {', '.join(self.enum)}"
        if self.choices_from == "server":
            text += " from the server's list"
        if self.pattern is not None:
            text += f" matching {self.pattern}"
        if self.max_length is not None:
            text += f" up to {self.max_length} characters"
        if self.default is not None:
            text += f" (default {json.dumps(self.default)})"
        return text

    def check(self, value: Any, where: str | None = None) -> Any:
        """`value` if it fits this parameter (ints widened for a number), else InvalidSpec."""
        where = where or f"spec.inputs.{self.name}"

        def refuse(why: str) -> InvalidSpec:
            return InvalidSpec(f"{where}: {why} (got {_shown(value)}); expected {self.describe()}")

        if self.type == "boolean":
            if not isinstance(value, bool):
                raise refuse("must be true or false")
            return value
        if self.type in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise refuse("must be an integer" if self.type == "integer" else "must be a number")
            if isinstance(value, float) and not math.isfinite(value):
                raise refuse("must be a finite number")
            if self.type == "integer":
                if isinstance(value, float):
                    if not value.is_integer():
                        raise refuse("must be an integer")
                    value = int(value)
            if self.minimum is not None and value < self.minimum:
                raise refuse(f"must be at least {_num(self.minimum)}")
            if self.maximum is not None and value > self.maximum:
                raise refuse(f"must be at most {_num(self.maximum)}")
            return float(value) if self.type == "number" else value
        if not isinstance(value, str):
            raise refuse("must be a string")
        limit = self.max_length if self.max_length is not None else DEFAULT_MAX_STRING
        if len(value) > limit:
            raise refuse(f"must be at most {limit} characters")
        if any(ord(char) < 0x20 and char not in "\t\n" for char in value):
            raise refuse("must not contain control characters")
        if self.enum is not None and value not in self.enum:
            raise refuse(f"must be one of {', '.join(self.enum)}")
        if self.pattern is not None and not re.search(self.pattern, value):
            raise refuse(f"must match {self.pattern}")
        return value

    def parse_text(self, text: str) -> Any:
        """The typed value of `--set name=TEXT`, checked; InvalidSpec when it does not fit."""
        value: Any = text
        if self.type == "boolean":
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "on", "1"):
                value = True
            elif lowered in ("false", "no", "off", "0"):
                value = False
        elif self.type == "integer":
            try:
                value = int(text.strip())
            except ValueError:
                pass
        elif self.type == "number":
            try:
                value = float(text.strip())
            except ValueError:
                pass
        return self.check(value, where=f"--set {self.name}")


@dataclass(frozen=True)
class InputImage:
    """A named input image: the uploaded file's name goes to a LoadImage-type node input."""

    name: str
    target: Binding
    description: str = ""
    required: bool = True


@dataclass(frozen=True)
class Workflow:
    """A loaded, checked workflow template."""

    name: str
    path: Path
    description: str
    graph: dict[str, Any]
    bindings: dict[str, tuple[Binding, ...]]
    parameters: dict[str, Parameter] = field(default_factory=dict)
    images: dict[str, InputImage] = field(default_factory=dict)

    @property
    def spec_fields(self) -> list[str]:
        """The standard spec fields this workflow uses (camelCase), in BINDABLE_FIELDS order."""
        return [name for name in BINDABLE_FIELDS if name in self.bindings]

    @property
    def output_size_follows_spec(self) -> bool:
        """Whether every output is spec.width × spec.height (text-to-image without rescaling)."""
        if not {"width", "height"} <= set(self.bindings) or self.images:
            return False
        return not any(_rescales(node.get("class_type", "")) for node in self.graph.values())

    def summary(self) -> dict[str, Any]:
        """What `comfykube workflows NAME --json` prints: description, parameters, images, fields used."""
        return {
            "name": self.name,
            "description": self.description,
            "specFields": self.spec_fields,
            "parameters": {
                name: {
                    key: value
                    for key, value in {
                        "type": p.type,
                        "description": p.description or None,
                        "default": p.default,
                        "minimum": p.minimum,
                        "maximum": p.maximum,
                        "enum": list(p.enum) if p.enum is not None else None,
                        "pattern": p.pattern,
                        "maxLength": p.max_length,
                        "choicesFrom": p.choices_from,
                        "targets": [{"node": t.node, "input": t.input} for t in p.targets],
                    }.items()
                    if value is not None
                }
                for name, p in self.parameters.items()
            },
            "images": {
                name: {"description": i.description, "required": i.required, "node": i.target.node,
                       "input": i.target.input}
                for name, i in self.images.items()
            },
            "path": str(self.path),
        }

    def default(self, spec_field: str) -> Any:
        """The template's own value for a bound field (e.g. its default checkpoint)."""
        targets = self.bindings.get(spec_field)
        if not targets:
            return None
        return self.graph[targets[0].node]["inputs"][targets[0].input]

    def check_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every parameter's value: the spec's (checked) or the default. InvalidSpec names the bad one."""
        given = dict(inputs or {})
        unknown = sorted(set(given) - set(self.parameters))
        if unknown:
            raise InvalidSpec(
                f"spec.inputs.{unknown[0]}: workflow {self.name!r} has no parameter {unknown[0]!r}; "
                f"its parameters: {self.describe_parameters()}"
            )
        values: dict[str, Any] = {}
        for name, parameter in self.parameters.items():
            values[name] = parameter.check(given[name]) if name in given else parameter.default
        return values

    def describe_parameters(self) -> str:
        """`denoise (number 0..1 (default 0.6)), …` or `none`."""
        if not self.parameters:
            return "none"
        return ", ".join(f"{name} ({p.describe()})" for name, p in self.parameters.items())

    def check_images(self, names: Collection[str]) -> None:
        """InvalidSpec when `names` (the spec's images) has one this workflow lacks or misses a required one."""
        unknown = sorted(set(names) - set(self.images))
        declared = ", ".join(self.images) or "none"
        if unknown:
            raise InvalidSpec(
                f"spec.images: workflow {self.name!r} has no input image {unknown[0]!r} (its images: {declared})"
            )
        missing = [image for image in self.images.values() if image.required and image.name not in names]
        if missing:
            image = missing[0]
            what = f": {image.description}" if image.description else ""
            raise InvalidSpec(f"spec.images: workflow {self.name!r} needs the image {image.name!r}{what}")

    def validate(self, spec: ImageJobSpec, *, image_names: Collection[str] | None = None) -> None:
        """Every check `render` makes that needs no ComfyUI: fields used, inputs, images (if given)."""
        self._check_fields(spec)
        self.check_inputs(spec.inputs)
        if image_names is not None:
            self.check_images(image_names)

    def _check_fields(self, spec: ImageJobSpec) -> None:
        defaults = ImageJobSpec.model_fields
        for spec_field, attr in BINDABLE_FIELDS.items():
            value = getattr(spec, attr)
            if spec_field in self.bindings or spec_field in ("seed", "prompt"):
                continue
            if value is not None and value != defaults[attr].default:
                hint = f"; set spec.inputs.{spec_field} instead" if spec_field in self.parameters else ""
                raise InvalidSpec(
                    f"spec.{spec_field}: workflow {self.name!r} does not use this field; "
                    f"fields it uses: {', '.join(sorted(self.bindings))}{hint}"
                )

    def render(
        self,
        spec: ImageJobSpec,
        *,
        seed: int,
        output_prefix: str,
        images: Mapping[str, str] | None = None,
    ) -> RenderedWorkflow:
        """The API-format graph for `spec`, with `seed`, `output_prefix` and uploaded `images` filled in.

        `images` maps an image name to the filename ComfyUI stored the upload under.
        Raises InvalidSpec when the spec sets a field this workflow does not use
        (silently ignoring a negative prompt would render something the user did
        not ask for), an input is unknown or out of bounds, or a required image
        is missing.
        """
        self._check_fields(spec)
        inputs = self.check_inputs(spec.inputs)
        uploaded = dict(images or {})
        self.check_images(uploaded)
        graph = copy.deepcopy(self.graph)
        values: dict[str, Any] = {}
        for spec_field, attr in BINDABLE_FIELDS.items():
            targets = self.bindings.get(spec_field)
            if not targets:
                continue
            value = seed if spec_field == "seed" else getattr(spec, attr)
            if value is None:  # e.g. no model given: keep the workflow's default checkpoint
                value = self.default(spec_field)
            for target in targets:
                graph[target.node]["inputs"][target.input] = value
            values[spec_field] = value
        for target in self.bindings[OUTPUT_PREFIX]:
            graph[target.node]["inputs"][target.input] = output_prefix
        values[OUTPUT_PREFIX] = output_prefix
        choices: list[ServerChoice] = []
        for name, parameter in self.parameters.items():
            for target in parameter.targets:
                graph[target.node]["inputs"][target.input] = inputs[name]
            if parameter.choices_from == "server":
                first = parameter.targets[0]
                choices.append(
                    ServerChoice(name, self.graph[first.node]["class_type"], first.input, str(inputs[name]))
                )
        for name, filename in uploaded.items():
            target = self.images[name].target
            graph[target.node]["inputs"][target.input] = filename
        # `_meta` is UI metadata; ComfyUI ignores it, but we keep requests minimal.
        for node in graph.values():
            node.pop("_meta", None)
        return RenderedWorkflow(
            workflow=self.name,
            graph=graph,
            values=values,
            inputs=inputs,
            images=uploaded,
            server_choices=tuple(choices),
            expected_size=(spec.width, spec.height) if self.output_size_follows_spec else None,
            expected_count=spec.batch_size if "batchSize" in self.bindings else None,
        )

    def check_schema(self, schema: Mapping[str, Any]) -> list[str]:
        """Problems of this workflow against node schemas (`/object_info`), each naming the file and entry."""
        return schema_problems(self.path, self.graph, self.bindings, self.parameters, self.images, schema)


@dataclass(frozen=True)
class RenderedWorkflow:
    """A graph ready for POST /prompt, and the values that went into it."""

    workflow: str
    graph: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    #: Every parameter's value (the spec's or the default).
    inputs: dict[str, Any] = field(default_factory=dict)
    #: Image name → the uploaded filename written into the graph.
    images: dict[str, str] = field(default_factory=dict)
    #: Values the running ComfyUI must offer (`choicesFrom: server`), for preflight.
    server_choices: tuple[ServerChoice, ...] = ()
    #: Size every output must have, when the workflow fixes it; None: any size.
    expected_size: tuple[int, int] | None = None
    #: How many outputs the prompt must produce, when known.
    expected_count: int | None = None

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

    @property
    def seed(self) -> int | None:
        """The seed written into the graph (None for a raw graph)."""
        return self.values.get("seed")


RAW_GRAPH_WORKFLOW = "(spec.graph)"


def render_raw_graph(spec: ImageJobSpec, *, output_prefix: str) -> RenderedWorkflow:
    """A raw API-format graph (`spec.graph`) with the job's own prefix on every saver.

    Output prefix discipline: every node with a string `filename_prefix` input
    (SaveImage, SaveAnimatedWEBP, SaveVideo, SaveAudio, …) writes under the
    job's prefix, so two jobs never report each other's files. A graph without
    one is refused: the job could not tell its outputs apart. The standard
    fields other than the prompt (kept as the job's title) and `spec.inputs`
    do not apply to a raw graph and are refused when set.
    """
    graph = spec.graph
    if not isinstance(graph, dict) or not graph:
        raise InvalidSpec("spec.graph: must be a non-empty API-format graph (node id → {class_type, inputs})")
    defaults = ImageJobSpec.model_fields
    for spec_field, attr in BINDABLE_FIELDS.items():
        if spec_field == "prompt":
            continue
        value = getattr(spec, attr)
        if value is not None and value != defaults[attr].default:
            raise InvalidSpec(f"spec.{spec_field}: not used with spec.graph (set it in the graph itself)")
    if spec.workflow != defaults["workflow"].default:
        raise InvalidSpec("spec.workflow: give either a workflow or spec.graph, not both")
    if spec.inputs:
        raise InvalidSpec("spec.inputs: parameters belong to workflows; with spec.graph set values in the graph")
    rendered = copy.deepcopy(graph)
    savers = 0
    for node_id, node in rendered.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or not isinstance(
            node.get("inputs"), dict
        ):
            raise InvalidSpec(f"spec.graph: node {node_id!r} needs 'class_type' and an 'inputs' object")
        node.pop("_meta", None)
        if isinstance(node["inputs"].get("filename_prefix"), str):
            node["inputs"]["filename_prefix"] = output_prefix
            savers += 1
    if not savers:
        raise InvalidSpec(
            "spec.graph: no node has a filename_prefix (SaveImage or another saver); "
            "the job could not tell its outputs from other jobs'"
        )
    return RenderedWorkflow(
        workflow=RAW_GRAPH_WORKFLOW, graph=rendered, values={OUTPUT_PREFIX: output_prefix}
    )


# ------------------------------------------------------------------------------------ loading


def _parse_targets(where: str, raw: Any, graph: dict[str, Any], *, allow_extra: frozenset[str]) -> tuple[Binding, ...]:
    """`{"node", "input"}` or `{"targets": [{"node", "input"}, ...]}` → checked targets."""
    if not isinstance(raw, dict):
        raise WorkflowError(f"{where}: must be {{\"node\": ID, \"input\": NAME}} or {{\"targets\": [...]}}")
    extra = set(raw) - allow_extra - {"node", "input", "targets"}
    if extra:
        raise WorkflowError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    if "targets" in raw:
        if "node" in raw or "input" in raw:
            raise WorkflowError(f"{where}: give either targets or node/input, not both")
        items = raw["targets"]
        if not isinstance(items, list) or not items:
            raise WorkflowError(f"{where}: targets must be a non-empty list of {{\"node\", \"input\"}}")
    else:
        items = [{"node": raw.get("node"), "input": raw.get("input")}]
    targets: list[Binding] = []
    for item in items:
        if not isinstance(item, dict) or set(item) != {"node", "input"} or None in item.values():
            raise WorkflowError(f"{where}: each target must be {{\"node\": ID, \"input\": NAME}}")
        node_id, input_name = str(item["node"]), str(item["input"])
        if node_id not in graph:
            raise WorkflowError(f"{where}: node {node_id!r} is not in the graph")
        if input_name not in graph[node_id]["inputs"]:
            raise WorkflowError(
                f"{where}: node {node_id!r} ({graph[node_id]['class_type']}) has no input {input_name!r}"
            )
        if is_link(graph[node_id]["inputs"][input_name]) or isinstance(graph[node_id]["inputs"][input_name], list):
            raise WorkflowError(f"{where}: input {input_name!r} of node {node_id!r} is a link, not a value")
        target = Binding(node_id, input_name)
        if target in targets:
            raise WorkflowError(f"{where}: target {node_id}.{input_name} is listed twice")
        targets.append(target)
    return tuple(targets)


def _check_entry(where: str, what: str, name: str, raw: Any, keys: frozenset[str], shape: str) -> None:
    """The checks every named entry (parameter, image) shares: its name, an object, known keys."""
    if not re.match(PARAMETER_NAME_PATTERN, name):
        raise WorkflowError(f"{where}: {what} names must match {PARAMETER_NAME_PATTERN}")
    if not isinstance(raw, dict):
        raise WorkflowError(f"{where}: must be {shape}")
    extra = set(raw) - keys
    if extra:
        raise WorkflowError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")


def _parse_parameter(where: str, name: str, raw: Any, graph: dict[str, Any]) -> Parameter:
    _check_entry(where, "parameter", name, raw, _PARAMETER_KEYS, "an object with targets (or node/input) and type")
    targets = _parse_targets(where, raw, graph, allow_extra=_PARAMETER_KEYS)
    kind = raw.get("type")
    if kind not in PARAMETER_TYPES:
        raise WorkflowError(f"{where}: type must be one of {', '.join(PARAMETER_TYPES)} (got {kind!r})")
    bounds: dict[str, float | None] = {}
    for key in ("minimum", "maximum"):
        bound = raw.get(key)
        if bound is not None and (kind not in ("integer", "number") or isinstance(bound, bool)
                                  or not isinstance(bound, int | float)):
            raise WorkflowError(f"{where}: {key} needs a number and an integer or number parameter")
        bounds[key] = bound
    enum = raw.get("enum")
    if enum is not None and (kind != "string" or not isinstance(enum, list) or not enum
                             or not all(isinstance(v, str) for v in enum)):
        raise WorkflowError(f"{where}: enum must be a non-empty list of strings on a string parameter")
    pattern = raw.get("pattern")
    if pattern is not None:
        if kind != "string" or not isinstance(pattern, str):
            raise WorkflowError(f"{where}: pattern must be a string on a string parameter")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise WorkflowError(f"{where}: pattern {pattern!r} is not a regular expression: {exc}") from None
    max_length = raw.get("maxLength")
    if max_length is not None and (kind != "string" or isinstance(max_length, bool)
                                   or not isinstance(max_length, int) or max_length < 1):
        raise WorkflowError(f"{where}: maxLength must be a positive integer on a string parameter")
    choices_from = raw.get("choicesFrom")
    if choices_from is not None and (choices_from != "server" or kind != "string"):
        raise WorkflowError(f"{where}: choicesFrom may only be \"server\", on a string parameter")
    parameter = Parameter(
        name=name,
        type=kind,
        targets=targets,
        default=None,
        description=str(raw.get("description", "")),
        minimum=bounds["minimum"],
        maximum=bounds["maximum"],
        enum=tuple(enum) if enum is not None else None,
        pattern=pattern,
        max_length=max_length,
        choices_from=choices_from,
    )
    first = targets[0]
    default = raw["default"] if "default" in raw else graph[first.node]["inputs"][first.input]
    try:
        default = parameter.check(default, where=f"{where}: default")
    except InvalidSpec as exc:
        raise WorkflowError(exc.message) from None
    return Parameter(**{**parameter.__dict__, "default": default})


def _parse_image(where: str, name: str, raw: Any, graph: dict[str, Any]) -> InputImage:
    _check_entry(where, "image", name, raw, _IMAGE_KEYS, '{"node": ID, "input": NAME, "required": true}')
    (target,) = _parse_targets(where, {"node": raw.get("node"), "input": raw.get("input")}, graph,
                               allow_extra=frozenset())
    required = raw.get("required", True)
    if not isinstance(required, bool):
        raise WorkflowError(f"{where}: required must be true or false")
    if not isinstance(graph[target.node]["inputs"][target.input], str):
        raise WorkflowError(f"{where}: input {target.input!r} of node {target.node!r} must hold a file name")
    return InputImage(name=name, target=target, description=str(raw.get("description", "")), required=required)


def load_workflow(path: Path, *, schema: Mapping[str, Any] | None = None) -> Workflow:
    """Load and check one workflow file; errors name the file and the entry.

    With `schema` (an `/object_info` answer) the graph and every binding,
    parameter and image are also checked against the node schemas.
    """
    name = path.stem
    if not re.match(WORKFLOW_NAME_PATTERN, name):
        raise WorkflowError(f"{path}: workflow file names must match {WORKFLOW_NAME_PATTERN}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"{path}: cannot read workflow: {exc}") from None
    return parse_workflow(data, path, schema=schema)


def parse_workflow(data: Any, path: Path, *, schema: Mapping[str, Any] | None = None) -> Workflow:
    """Check a workflow document (already parsed JSON); `path` names it in errors and gives its name."""
    if not isinstance(data, dict) or not isinstance(data.get("graph"), dict):
        raise WorkflowError(f"{path}: expected an object with 'graph' (ComfyUI API format) and 'bindings'")
    unknown = set(data) - {"description", "bindings", "parameters", "images", "graph"}
    if unknown:
        raise WorkflowError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    graph: dict[str, Any] = data["graph"]
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs"), dict):
            raise WorkflowError(f"{path}: node {node_id!r} needs 'class_type' and an 'inputs' object")
    raw_bindings = data.get("bindings")
    if not isinstance(raw_bindings, dict):
        raise WorkflowError(f"{path}: 'bindings' must map spec fields to {{node, input}}")
    bindings: dict[str, tuple[Binding, ...]] = {}
    for spec_field, target in raw_bindings.items():
        where = f"{path}: binding {spec_field!r}"
        if spec_field not in BINDABLE_FIELDS and spec_field != OUTPUT_PREFIX:
            allowed = ", ".join([*BINDABLE_FIELDS, OUTPUT_PREFIX])
            raise WorkflowError(f"{where}: unknown spec field (allowed: {allowed})")
        bindings[spec_field] = _parse_targets(where, target, graph, allow_extra=frozenset())
    missing = [field_ for field_ in REQUIRED_BINDINGS if field_ not in bindings]
    if missing:
        raise WorkflowError(f"{path}: missing required binding(s): {', '.join(missing)}")
    raw_parameters = data.get("parameters", {})
    if not isinstance(raw_parameters, dict):
        raise WorkflowError(f"{path}: 'parameters' must map names to typed parameters")
    parameters = {
        key: _parse_parameter(f"{path}: parameter {key!r}", key, value, graph) for key, value in raw_parameters.items()
    }
    raw_images = data.get("images", {})
    if not isinstance(raw_images, dict):
        raise WorkflowError(f"{path}: 'images' must map names to {{node, input}}")
    images = {key: _parse_image(f"{path}: image {key!r}", key, value, graph) for key, value in raw_images.items()}
    owners: dict[Binding, str] = {}
    for label, targets in [
        *((f"binding {k!r}", v) for k, v in bindings.items()),
        *((f"parameter {k!r}", v.targets) for k, v in parameters.items()),
        *((f"image {k!r}", (v.target,)) for k, v in images.items()),
    ]:
        for target in targets:
            if target in owners:
                raise WorkflowError(
                    f"{path}: {label}: node {target.node!r} input {target.input!r} is already bound by {owners[target]}"
                )
            owners[target] = label
    workflow = Workflow(
        name=path.stem,
        path=path,
        description=str(data.get("description", "")),
        graph=graph,
        bindings=bindings,
        parameters=parameters,
        images=images,
    )
    if schema is not None:
        problems = workflow.check_schema(schema)
        if problems:
            raise WorkflowError("; ".join(problems))
    return workflow


def schema_problems(
    path: Path,
    graph: Mapping[str, Any],
    bindings: Mapping[str, tuple[Binding, ...]],
    parameters: Mapping[str, Parameter],
    images: Mapping[str, InputImage],
    schema: Mapping[str, Any],
) -> list[str]:
    """Each binding, parameter and image against the node input it targets, then the whole graph."""
    problems: list[str] = []
    replaced: set[tuple[str, str]] = set()

    def fits(label: str, target: Binding, accepted: tuple[str, ...]) -> None:
        replaced.add((target.node, target.input))
        class_type = graph[target.node]["class_type"]
        info = schema.get(class_type)
        if not isinstance(info, dict):
            return  # the graph check reports the unknown class once
        spec = input_spec(info, target.input)
        if spec is None:
            problems.append(f"{path}: {label}: node {target.node!r} ({class_type}) has no input {target.input!r}")
            return
        kind = input_type(spec)
        if kind not in accepted:
            problems.append(
                f"{path}: {label}: node {target.node!r} ({class_type}) input {target.input!r} is {kind}, "
                f"which does not fit (needs {' or '.join(accepted)})"
            )

    for spec_field, targets in bindings.items():
        for target in targets:
            fits(f"binding {spec_field!r}", target, FIELD_INPUT_TYPES[spec_field])
    for name, parameter in parameters.items():
        accepted = ("COMBO",) if parameter.choices_from == "server" else PARAMETER_TYPES[parameter.type]
        for target in parameter.targets:
            fits(f"parameter {name!r}", target, accepted)
    for name, image in images.items():
        fits(f"image {name!r}", image.target, ("COMBO",))
    problems.extend(f"{path}: {problem}" for problem in check_graph(graph, schema, replaced=replaced))
    return problems


class WorkflowLibrary:
    """All workflows from one or more directories; later directories override earlier ones."""

    def __init__(self, directories: Iterable[Path], *, schema: Mapping[str, Any] | None = None) -> None:
        self.workflows: dict[str, Workflow] = {}
        for directory in directories:
            if directory is None or not Path(directory).is_dir():
                continue
            for path in sorted(Path(directory).glob("*.json")):
                workflow = load_workflow(path, schema=schema)
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


def _rescales(class_type: str) -> bool:
    """Node classes that change the picture's size after sampling (upscalers, scalers)."""
    return any(word in class_type for word in ("Upscale", "ScaleBy", "ImageScale", "LatentUpscale"))


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, bool | int | float | str) or value is None else type(value).__name__
    return text if len(text) <= 60 else text[:59] + "…"
