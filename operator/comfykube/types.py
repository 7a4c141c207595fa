"""ImageJob types: the single source of truth for the schema.

Everything that accepts or shows an ImageJob uses these models: the CRD
(`crd.py` generates `crds/imagejob.yaml` from them), the CLI, the operator and
the Discord bot. Field names on the wire are camelCase, as Kubernetes wants;
Python code uses snake_case attributes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

API_GROUP = "comfykube.dev"
API_VERSION = "v1alpha1"
KIND = "ImageJob"
PLURAL = "imagejobs"
SINGULAR = "imagejob"
SHORT_NAMES = ["ij"]
CATEGORIES = ["comfy"]

#: Largest seed ComfyUI's KSampler accepts that also fits Kubernetes' int64.
MAX_SEED = 2**63 - 1
MAX_PROMPT_LENGTH = 4000
#: Presigned URLs cannot live longer than SigV4 allows (7 days).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600

# Names as ComfyUI spells them: lower-case identifiers (`euler_ancestral`).
COMFY_NAME_PATTERN = r"^[a-z0-9][a-z0-9_]{0,63}$"
WORKFLOW_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# Checkpoint file names as ComfyUI lists them (may contain a subfolder and spaces).
MODEL_NAME_PATTERN = r"^[^\x00-\x1f/\\][^\x00-\x1f\\]{0,254}$"
DISCORD_ID_PATTERN = r"^[0-9]{15,21}$"
#: Names of a workflow's input images (`init`, `mask`): identifiers, as in a workflow file.
IMAGE_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,62}$"
#: Object keys in the configured bucket: no leading slash, no control characters (RE2: no
#: look-arounds; `.`/`..` segments are refused by the operator's check).
S3_KEY_PATTERN = r"^[^/\x00-\x1f\x7f\\][^\x00-\x1f\x7f\\]*$"
KUBE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
#: Input images per job, and stored outputs per job (the bounds keep the CRD's lists finite).
MAX_INPUT_IMAGES = 8
MAX_OUTPUTS = 32
#: CEL: an input image names exactly one source.
ONE_SOURCE_RULE = "(has(self.url) ? 1 : 0) + (has(self.s3Key) ? 1 : 0) + (has(self.fromJob) ? 1 : 0) == 1"
#: spec.inputs: how many parameters one job may set, and the longest string value.
MAX_INPUTS = 64
MAX_INPUT_STRING = 4000
#: spec.graph: most nodes a raw graph may have.
MAX_GRAPH_NODES = 1000

#: One value of spec.inputs: a scalar (the workflow's parameter says which type).
InputValue = StrictBool | StrictInt | StrictFloat | Annotated[str, Field(max_length=MAX_INPUT_STRING)]


class Phase(enum.StrEnum):
    """Where an ImageJob is in its life. Terminal phases never change again."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    UPLOADING = "Uploading"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        """True for Succeeded, Failed and Cancelled."""
        return self in TERMINAL_PHASES


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})


class _Model(BaseModel):
    """Base: camelCase on the wire, unknown fields refused (as the CRD does)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict with camelCase keys and unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class DiscordNotify(_Model):
    """Where the bot posts a job's result when the job was not created from the chat."""

    # max_length repeats what the pattern already implies: the CRD's CEL cost
    # estimator (spec is compared with `self == oldSelf`) only reads maxLength.
    channel_id: Annotated[
        str, Field(pattern=DISCORD_ID_PATTERN, max_length=21, description="Discord channel id.")
    ]


class Notify(_Model):
    """Optional notification targets for the result."""

    discord: DiscordNotify | None = Field(default=None, description="Post the result to a Discord channel.")


class OutputSpec(_Model):
    """What happens to stored images."""

    delete_with_job: bool = Field(
        default=False, description="Delete the stored images when the ImageJob is deleted."
    )


class FromJob(_Model):
    """A stored output of another ImageJob in the same namespace."""

    name: Annotated[
        str, Field(pattern=KUBE_NAME_PATTERN, max_length=253, description="Name of the other ImageJob.")
    ]
    index: Annotated[int, Field(ge=0, le=MAX_OUTPUTS - 1, description="Which of its stored outputs (0: first).")] = 0


class InputImage(_Model):
    """One named input image of the workflow, from exactly one source."""

    # CRD marker: exactly one source, as the operator checks too (`_one_source`).
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": ONE_SOURCE_RULE,
                    "message": "each image needs exactly one of url, s3Key or fromJob",
                }
            ]
        }
    )

    name: Annotated[
        str,
        Field(pattern=IMAGE_NAME_PATTERN, max_length=63, description="The workflow's image name, e.g. init."),
    ]
    url: Annotated[
        str | None,
        Field(
            pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20\x7f]+$",
            max_length=2048,
            description="http(s) URL to fetch the image from (private addresses refused by default).",
        ),
    ] = None
    s3_key: Annotated[
        str | None,
        Field(pattern=S3_KEY_PATTERN, max_length=1024, description="Object key in the configured bucket."),
    ] = None
    from_job: FromJob | None = Field(default=None, description="A stored output of another ImageJob.")

    @field_validator("s3_key")
    @classmethod
    def _key_has_no_dot_segments(cls, value: str | None) -> str | None:
        if value is not None and any(part in ("", ".", "..") for part in value.split("/")):
            raise ValueError("s3Key must not have empty, '.' or '..' segments")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> InputImage:
        given = [name for name in ("url", "s3Key", "fromJob") if getattr(self, _ATTR[name]) is not None]
        if len(given) != 1:
            found = f" (got {', '.join(given)})" if given else ""
            raise ValueError(f"image {self.name!r} needs exactly one of url, s3Key or fromJob{found}")
        return self

    @property
    def source(self) -> str:
        """`url`, `s3Key` or `fromJob`: which source this entry uses."""
        return next(name for name in ("url", "s3Key", "fromJob") if getattr(self, _ATTR[name]) is not None)


_ATTR = {"url": "url", "s3Key": "s3_key", "fromJob": "from_job"}


class ImageJobSpec(_Model):
    """What to render. Immutable once the ImageJob exists."""

    # CRD marker (read by crd.py, like a kubebuilder XValidation marker): the API
    # server refuses spec changes, so a running job never renders something else.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec is immutable: create a new ImageJob instead"}
            ]
        }
    )

    prompt: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_PROMPT_LENGTH,
            description="What the picture shows.",
            # CRD marker: the API server refuses a prompt of only white space, as parse_spec does.
            json_schema_extra={
                "x-kubernetes-validations": [
                    {"rule": r"self.matches('\\S')", "message": "prompt must contain some text, not only white space"}
                ]
            },
        ),
    ]
    negative_prompt: Annotated[
        str, Field(max_length=MAX_PROMPT_LENGTH, description="What the picture must not show.")
    ] = ""
    workflow: Annotated[
        str,
        Field(
            pattern=WORKFLOW_NAME_PATTERN,
            max_length=63,
            description="Workflow template name from workflows/.",
        ),
    ] = "t2i_basic"
    model: Annotated[
        str | None,
        Field(
            pattern=MODEL_NAME_PATTERN,
            max_length=255,
            description="Checkpoint file as ComfyUI lists it; omitted: the workflow's default.",
        ),
    ] = None
    width: Annotated[int, Field(ge=64, le=2048, multiple_of=8, description="Image width in pixels.")] = 512
    height: Annotated[int, Field(ge=64, le=2048, multiple_of=8, description="Image height in pixels.")] = 512
    steps: Annotated[int, Field(ge=1, le=150, description="Sampling steps.")] = 20
    cfg: Annotated[float, Field(ge=0, le=30, description="Classifier-free guidance scale.")] = 7.0
    sampler: Annotated[
        str,
        Field(
            pattern=COMFY_NAME_PATTERN,
            max_length=64,
            description="ComfyUI sampler name, e.g. euler_ancestral.",
        ),
    ] = "euler"
    scheduler: Annotated[
        str,
        Field(pattern=COMFY_NAME_PATTERN, max_length=64, description="ComfyUI scheduler name, e.g. karras."),
    ] = "normal"
    seed: Annotated[
        int | None,
        Field(ge=0, le=MAX_SEED, description="Noise seed; omitted: random, recorded in status.seed."),
    ] = None
    batch_size: Annotated[int, Field(ge=1, le=8, description="Images rendered in one run.")] = 1
    timeout_seconds: Annotated[
        int | None,
        Field(
            ge=1,
            le=7 * 24 * 3600,
            description="Deadline for the whole job; omitted: the deployment's default.",
        ),
    ] = None
    ttl_seconds_after_finished: Annotated[
        int | None,
        Field(ge=0, le=365 * 24 * 3600, description="Delete the ImageJob this long after it finished."),
    ] = None
    images: list[InputImage] | None = Field(
        default=None,
        max_length=MAX_INPUT_IMAGES,
        description="The workflow's input images by name, each fetched and checked before submit.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    output: OutputSpec | None = Field(default=None, description="What happens to the stored images.")
    notify: Notify | None = Field(default=None, description="Where to announce the result.")
    # --- workflow inputs (issue #10): parameters and a raw graph; kept together for merges.
    inputs: Annotated[
        dict[str, InputValue] | None,
        Field(
            max_length=MAX_INPUTS,
            description=(
                "The workflow's own parameters, name → scalar (see `comfykube workflows NAME`); "
                "checked against the workflow by the operator."
            ),
        ),
    ] = None
    graph: Annotated[
        dict[str, Any] | None,
        Field(
            max_length=MAX_GRAPH_NODES,
            description=(
                "A raw ComfyUI API-format graph instead of a workflow; accepted only when the "
                "deployment sets ALLOW_RAW_GRAPHS=true."
            ),
        ),
    ] = None

    @field_validator("images")
    @classmethod
    def _image_names_unique(cls, value: list[InputImage] | None) -> list[InputImage] | None:
        names = [image.name for image in value or ()]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"image name(s) given more than once: {', '.join(twice)}")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must contain some text, not only white space")
        return value


class Progress(_Model):
    """Sampler steps done out of the total, as ComfyUI reports them."""

    value: Annotated[int, Field(ge=0)] = 0
    max: Annotated[int, Field(ge=0)] = 0


class OutputKind(enum.StrEnum):
    """What a stored output is: a still picture, an animation, a video or a sound."""

    IMAGE = "image"
    ANIMATION = "animation"
    VIDEO = "video"
    AUDIO = "audio"


class StoredImage(_Model):
    """One verified output in the object store (a picture, animation, video or sound; see kind)."""

    kind: OutputKind = Field(default=OutputKind.IMAGE, description="image, animation, video or audio.")
    key: str = Field(description="Object key in the bucket.")
    bytes: Annotated[int, Field(ge=1, description="Size in bytes, verified after upload.")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the stored bytes.")]
    content_type: str = Field(description="MIME type, e.g. image/png.")
    width: int | None = Field(default=None, description="Decoded width in pixels.")
    height: int | None = Field(default=None, description="Decoded height in pixels.")
    frames: int | None = Field(default=None, ge=1, description="Frames of an animation.")
    node: str | None = Field(default=None, max_length=64, description="The graph node that produced it.")
    url: str | None = Field(default=None, description="Presigned GET URL.")
    url_expires_at: str | None = Field(default=None, description="When url stops working (RFC 3339).")
    thumbnail_key: str | None = Field(
        default=None, description="Object key of a small WebP preview beside the image (made once, when stored)."
    )


class LivePreview(_Model):
    """Where the latest live preview of a running job is (written once, when the first is stored).

    The object itself is overwritten at most once per `intervalSeconds` while the job
    runs and deleted when it ends; status carries no URL (a presigned URL in status is
    a credential copied to everyone who can read the object).
    """

    key: str = Field(max_length=1024, description="Object key of the preview (a small JPEG) in the bucket.")
    interval_seconds: float = Field(gt=0, le=3600, description="The object is replaced at most this often.")
    started_at: str | None = Field(default=None, description="When the first preview was stored (RFC 3339).")


class Condition(_Model):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=316)]
    status: Annotated[str, Field(pattern=r"^(True|False|Unknown)$")]
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)]
    message: Annotated[str, Field(max_length=32768)] = ""
    # format is a CRD-only marker (the server checks RFC 3339, as for metav1.Condition).
    last_transition_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    observed_generation: Annotated[int | None, Field(ge=0)] = None


class ImageJobStatus(_Model):
    """What happened. Written only by the operator (or the CLI's --json output)."""

    phase: Phase = Phase.PENDING
    reason: str | None = Field(default=None, description="Machine-readable CamelCase cause of the phase.")
    message: str | None = Field(default=None, description="Human-readable detail.")
    prompt_id: str | None = Field(default=None, description="ComfyUI prompt id (the ImageJob uid).")
    backend: str | None = Field(default=None, description="ComfyUI backend that ran the job.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="Seed actually used.")
    model: str | None = Field(
        default=None, max_length=255, description="Checkpoint actually used (a fallback when the default is missing)."
    )
    progress: Progress | None = None
    progress_text: str | None = Field(
        default=None, description="Steps done/total for `kubectl get`, e.g. 12/20 (mirrors progress)."
    )
    queue_position: int | None = Field(default=None, ge=0, description="Prompts ahead in ComfyUI's queue.")
    preview: LivePreview | None = Field(
        default=None, description="The live preview while the job runs (removed when it ends)."
    )
    # Every stored output (pictures, animations, videos, sounds), each with its kind and
    # content type; the bound also keeps the CRD's lists finite.
    images: list[StoredImage] = Field(
        default_factory=list,
        max_length=MAX_OUTPUTS,
        description="Every stored output, in the order ComfyUI reported them, each with its kind.",
    )
    image_count: int = Field(
        default=0, ge=0, le=MAX_OUTPUTS, description="len(images), for `kubectl get` (jsonPath cannot count)."
    )
    url: str | None = Field(default=None, description="Presigned URL of the first output.")
    start_time: str | None = None
    completion_time: str | None = None
    submissions: int = Field(
        default=0, ge=0,
        description="How often the prompt was sent to ComfyUI (each counted just before it is sent).",
    )
    observed_generation: int | None = None
    # CRD markers: conditions are a map keyed by type, so server-side apply merges them per type.
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )

    @classmethod
    def from_wire(cls, data: Any) -> ImageJobStatus:
        """Status as read back from the API server; fields that do not validate are dropped.

        Status is data: an object edited by hand (or by an older version) must not stop
        the operator, so a bad field is forgotten rather than trusted or fatal.
        """
        if not isinstance(data, dict):
            return cls()
        fields = {key: value for key, value in data.items() if key in _STATUS_WIRE_NAMES}
        while True:
            try:
                return cls.model_validate(fields)
            except ValidationError as exc:
                bad = {str(err["loc"][0]) for err in exc.errors() if err.get("loc")}
                if not bad & set(fields):
                    return cls()
                for key in bad:
                    fields.pop(key, None)

    def with_derived(self) -> ImageJobStatus:
        """This status with the mirror fields (`imageCount`, `progressText`) filled from their sources."""
        text = f"{self.progress.value}/{self.progress.max}" if self.progress is not None else None
        return self.model_copy(update={"image_count": len(self.images), "progress_text": text})

    def wire_fields(self, names: Iterable[str]) -> dict[str, Any]:
        """The wire (camelCase, JSON-ready) values of just these fields, for a merge patch.

        Unlike `wire()`, an unset top-level field is kept as None: in a merge patch that
        removes it. Nested objects leave their unset fields out, as `wire()` does.
        """
        fields = type(self).model_fields
        wanted = set(names)
        unknown = wanted - set(fields)
        if unknown:
            raise KeyError(f"not ImageJobStatus fields: {sorted(unknown)}")
        present = self.model_dump(mode="json", by_alias=True, exclude_none=True, include=wanted)
        return {fields[name].alias or name: present.get(fields[name].alias or name) for name in wanted}



#: The camelCase names of every status field, as they appear on the wire.
_STATUS_WIRE_NAMES = frozenset(
    {info.alias or name for name, info in ImageJobStatus.model_fields.items()} | set(ImageJobStatus.model_fields)
)


def describe_validation_error(error: ValidationError, prefix: str = "spec") -> str:
    """One readable line per problem, naming the field as the user wrote it.

    `spec.width: must be a multiple of 8 (got 513)` reads better than pydantic's
    multi-line default and never leaks internal type names.
    """
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item.get("loc", ()))
        where = f"{prefix}.{loc}" if loc else prefix
        msg = item.get("msg", "invalid")
        if item.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif item.get("type") == "missing":
            msg = "is required"
        got = item.get("input")
        shown = ""
        if item.get("type") not in ("missing",) and isinstance(got, str | int | float | bool) and got != "":
            text = repr(got)
            shown = f" (got {text[:60]}{'…' if len(text) > 60 else ''})"
        lines.append(f"{where}: {msg}{shown}")
    return "; ".join(lines)


def parse_spec(data: dict[str, Any]) -> ImageJobSpec:
    """Validate a spec as it arrives from YAML, the API or the chat.

    Raises `comfykube.errors.InvalidSpec` with a message naming each bad field.
    """
    from comfykube.errors import InvalidSpec

    if not isinstance(data, dict):
        raise InvalidSpec("spec must be a mapping")
    try:
        return ImageJobSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidSpec(describe_validation_error(exc)) from None
