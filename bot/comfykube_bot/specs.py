"""Slash-command options → a validated `ImageJobSpec` → an ImageJob manifest.

Validation is the CRD's own (`comfykube.types.ImageJobSpec`, the model behind
`parse_spec`), so a value the API server would refuse is refused here first,
with a message that names the *option* the user typed (`steps`, not
`spec.steps`) and the allowed range read from the same model.

Precedence: a typed option wins over the same inline flag (`steps:30` beats
`--steps 20` in the prompt); `--no` text is appended to `negative`; explicit
`width`/`height` win over `aspect`.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any

import annotated_types
from pydantic import ValidationError

from comfykube.names import (
    ANN_CHANNEL,
    ANN_INTERACTION,
    ANN_MESSAGE,
    ANN_PRIVATE,
    ANN_REROLL_OF,
    ANN_SIGNATURE,
    ANN_SPOILER,
    ANN_UPLOAD_LIMIT,
    LABEL_CHANNEL,
    LABEL_GUILD,
    LABEL_MANAGED_BY,
    LABEL_REQUESTER,
    MANAGED_BY_BOT,
)
from comfykube.types import MAX_SEED, ImageJobSpec
from comfykube_bot.flags import parse_ratio
from comfykube_bot.signing import Signer

#: Aspect choices offered by /imagine (≤ 25: Discord's limit for static choices).
ASPECTS = ["1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21"]
#: Most elongated ratio accepted from inline `--ar`.
MAX_ASPECT = 4.0
#: Largest integer a Discord INTEGER option can carry (2^53 - 1); inline --seed goes up to MAX_SEED.
DISCORD_MAX_INT = 2**53 - 1

#: Slash-command option → spec field (camelCase, as on the wire).
OPTION_TO_FIELD = {
    "prompt": "prompt",
    "negative": "negativePrompt",
    "workflow": "workflow",
    "model": "model",
    "width": "width",
    "height": "height",
    "steps": "steps",
    "cfg": "cfg",
    "seed": "seed",
    "count": "batchSize",
}
FIELD_TO_OPTION = {v: k for k, v in OPTION_TO_FIELD.items()}


class OptionError(ValueError):
    """A user-facing problem with one option; `option` names it as the user typed it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.message = message


@dataclass
class ImagineOptions:
    """What the user asked for, as typed (None = not given)."""

    prompt: str
    negative: str | None = None
    aspect: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    seed: int | None = None
    model: str | None = None
    workflow: str | None = None
    count: int | None = None
    spoiler: bool = False
    #: A `discord.Attachment` to start from (img2img, see uploads.py) and how far to move from it.
    image: Any = None
    strength: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def merged_with_flags(self, flags: dict[str, Any], text: str) -> ImagineOptions:
        """These options with inline-flag values filled in where no typed option was given."""
        merged = ImagineOptions(**{k: v for k, v in self.__dict__.items() if k != "extra"})
        merged.prompt = text
        for name, value in flags.items():
            if name == "negative":
                merged.negative = f"{merged.negative}, {value}" if merged.negative else value
            elif getattr(merged, name, None) is None:
                setattr(merged, name, value)
        return merged


def field_bounds(spec_field: str) -> dict[str, Any]:
    """`{"ge": 1, "le": 150, "multiple_of": None, ...}` for a spec field, read from ImageJobSpec."""
    attr = next(name for name, info in ImageJobSpec.model_fields.items() if (info.alias or name) == spec_field)
    out: dict[str, Any] = {"ge": None, "le": None, "multiple_of": None, "min_length": None, "max_length": None}
    for meta in ImageJobSpec.model_fields[attr].metadata:
        if isinstance(meta, annotated_types.Ge):
            out["ge"] = meta.ge
        elif isinstance(meta, annotated_types.Le):
            out["le"] = meta.le
        elif isinstance(meta, annotated_types.MultipleOf):
            out["multiple_of"] = meta.multiple_of
        elif isinstance(meta, annotated_types.MinLen):
            out["min_length"] = meta.min_length
        elif isinstance(meta, annotated_types.MaxLen):
            out["max_length"] = meta.max_length
        else:  # pydantic's combined metadata object carries the same constraints as attributes
            for key in out:
                value = getattr(meta, key, None)
                if value is not None:
                    out[key] = value
    return out


def allowed_text(spec_field: str) -> str:
    """Human text for a field's allowed values: `between 1 and 150`, `a multiple of 8 from 64 to 2048`."""
    b = field_bounds(spec_field)
    if b["min_length"] is not None or b["max_length"] is not None:
        return f"{b['min_length'] or 0} to {b['max_length']} characters long"
    lo, hi, step = b["ge"], b["le"], b["multiple_of"]
    if step is not None and lo is not None and hi is not None:
        return f"a multiple of {step} from {lo} to {hi}"
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    if lo is not None:
        return f"at least {lo}"
    if hi is not None:
        return f"at most {hi}"
    return "a valid value"


def describe_errors(error: ValidationError) -> OptionError:
    """The first problem of a spec validation, worded for the option the user typed."""
    problems: list[str] = []
    first_option = "prompt"
    for item in error.errors():
        loc = [str(part) for part in item.get("loc", ())]
        spec_field = loc[0] if loc else ""
        option = FIELD_TO_OPTION.get(spec_field, spec_field or "options")
        if not problems:
            first_option = option
        got = item.get("input")
        shown = f" (got {got!r})" if isinstance(got, int | float | str) and not isinstance(got, bool) else ""
        if isinstance(got, str) and len(got) > 40:
            shown = f" (got {len(got)} characters)" if item.get("type", "").startswith("string_") else ""
        kind = item.get("type", "")
        if kind in {
            "greater_than_equal",
            "less_than_equal",
            "multiple_of",
            "string_too_short",
            "string_too_long",
            "int_parsing",
            "float_parsing",
        }:
            problems.append(f"`{option}` must be {allowed_text(spec_field)}{shown}")
        elif kind == "string_pattern_mismatch":
            problems.append(f"`{option}` has characters that are not allowed{shown}")
        else:
            msg = str(item.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"`{option}`: {msg}{shown}")
    return OptionError(first_option, "; ".join(problems))


def size_for_aspect(aspect: str, base: int) -> tuple[int, int]:
    """Width and height (multiples of 64) with about `base`² pixels in the given ratio."""
    try:
        rw, rh = parse_ratio(aspect)
    except ValueError as exc:
        raise OptionError("aspect", f"`aspect` must be a ratio such as 16:9 ({exc})") from None
    ratio = rw / rh
    if not 1 / MAX_ASPECT <= ratio <= MAX_ASPECT:
        raise OptionError("aspect", f"`aspect` must be between 1:{MAX_ASPECT:g} and {MAX_ASPECT:g}:1 (got {aspect})")
    area = base * base

    def snap(value: float) -> int:
        return int(min(2048, max(64, round(value / 64) * 64)))

    return snap(math.sqrt(area * ratio)), snap(math.sqrt(area / ratio))


def build_spec(
    options: ImagineOptions,
    *,
    base_size: int = 512,
    max_count: int = 4,
    ttl_seconds: int | None = None,
    notify_channel: str | None = None,
) -> ImageJobSpec:
    """Validate `options` into an ImageJobSpec; raises OptionError naming the bad option."""
    if options.count is not None and not 1 <= options.count <= max_count:
        raise OptionError("count", f"`count` must be between 1 and {max_count} (got {options.count})")
    width, height = options.width, options.height
    if options.aspect and (width is None or height is None):
        aw, ah = size_for_aspect(options.aspect, base_size)
        rw, rh = parse_ratio(options.aspect)
        if width is None and height is None:
            width, height = aw, ah
        elif width is None:
            assert height is not None
            width = max(8, round(height * rw / rh / 8) * 8)
        else:
            height = max(8, round(width * rh / rw / 8) * 8)
    elif width is None and height is None:
        width = height = base_size
    data: dict[str, Any] = {"prompt": options.prompt}
    values = {
        "negativePrompt": options.negative,
        "workflow": options.workflow,
        "model": options.model,
        "width": width,
        "height": height,
        "steps": options.steps,
        "cfg": options.cfg,
        "seed": options.seed,
        "batchSize": options.count,
        "ttlSecondsAfterFinished": ttl_seconds,
    }
    data.update({k: v for k, v in values.items() if v is not None})
    if notify_channel:
        data["notify"] = {"discord": {"channelId": notify_channel}}
    try:
        return ImageJobSpec.model_validate(data)
    except ValidationError as exc:
        raise describe_errors(exc) from None


def new_seed() -> int:
    """A random seed in ComfyUI's and Kubernetes' common range (for Reroll)."""
    return secrets.randbelow(min(MAX_SEED, DISCORD_MAX_INT) + 1)


def reroll_spec(spec: ImageJobSpec) -> ImageJobSpec:
    """The same spec with a new seed; fields only the original job needed (notify) are dropped."""
    data = {k: v for k, v in spec.wire().items() if k not in ("notify",)}
    data["seed"] = new_seed()
    try:
        return ImageJobSpec.model_validate(data)
    except ValidationError as exc:
        raise describe_errors(exc) from None


@dataclass(frozen=True)
class Origin:
    """Who asked, where, and which message will show the job."""

    user_id: int
    guild_id: int | None
    channel_id: int
    message_id: int | None
    interaction_id: int | None = None
    upload_limit: int | None = None
    spoiler: bool = False
    reroll_of: str | None = None
    #: Private replies: the job message is ephemeral, a late result goes by DM (docs/bot.md).
    private: bool = False


def job_name(interaction_id: int) -> str:
    """The ImageJob name for an interaction: unique, and the same if Discord delivers it twice."""
    return f"ij-{interaction_id}"


def build_manifest(
    spec: ImageJobSpec, name: str, origin: Origin, *, namespace: str = "default", signer: Signer | None = None
) -> dict[str, Any]:
    """The ImageJob body (metadata + spec) the bot creates, signed when a signer is given."""
    labels = {
        LABEL_REQUESTER: str(origin.user_id),
        LABEL_GUILD: str(origin.guild_id) if origin.guild_id else "dm",
        LABEL_CHANNEL: str(origin.channel_id),
        LABEL_MANAGED_BY: MANAGED_BY_BOT,
    }
    annotations = {ANN_CHANNEL: str(origin.channel_id)}
    if origin.message_id is not None:
        annotations[ANN_MESSAGE] = str(origin.message_id)
    if origin.interaction_id is not None:
        annotations[ANN_INTERACTION] = str(origin.interaction_id)
    if origin.upload_limit:
        annotations[ANN_UPLOAD_LIMIT] = str(origin.upload_limit)
    if origin.spoiler:
        annotations[ANN_SPOILER] = "true"
    if origin.reroll_of:
        annotations[ANN_REROLL_OF] = origin.reroll_of
    if origin.private:
        annotations[ANN_PRIVATE] = "true"
    if signer is not None:
        annotations[ANN_SIGNATURE] = signer.sign(namespace, name, labels, annotations)
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations}, "spec": spec.wire()}


__all__ = [
    "ASPECTS",
    "DISCORD_MAX_INT",
    "ImagineOptions",
    "OptionError",
    "Origin",
    "allowed_text",
    "build_manifest",
    "build_spec",
    "field_bounds",
    "job_name",
    "new_seed",
    "reroll_spec",
    "size_for_aspect",
]
