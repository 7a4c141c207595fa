"""Spec validation: the same rules everywhere, with messages that name the field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfykube.errors import InvalidSpec
from comfykube.types import MAX_SEED, ImageJobSpec, ImageJobStatus, Phase, parse_spec

BOUNDS = {
    "width": (64, 2048),
    "height": (64, 2048),
    "steps": (1, 150),
    "batchSize": (1, 8),
    "seed": (0, MAX_SEED),
}


def test_defaults_match_the_issue() -> None:
    spec = parse_spec({"prompt": "a fox"})
    assert (spec.workflow, spec.width, spec.height, spec.steps, spec.batch_size) == ("t2i_basic", 512, 512, 20, 1)
    assert spec.seed is None and spec.timeout_seconds is None


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(8, 256).map(lambda n: n * 8),
    height=st.integers(8, 256).map(lambda n: n * 8),
    steps=st.integers(1, 150),
    cfg=st.floats(0, 30, allow_nan=False),
    seed=st.integers(0, MAX_SEED),
    batch=st.integers(1, 8),
)
def test_every_in_range_spec_is_accepted(width: int, height: int, steps: int, cfg: float, seed: int,
                                         batch: int) -> None:
    spec = parse_spec({"prompt": "p", "width": width, "height": height, "steps": steps, "cfg": cfg,
                       "seed": seed, "batchSize": batch})
    assert spec.wire()["width"] == width and spec.seed == seed


@settings(max_examples=150, deadline=None)
@given(data=st.data(), field=st.sampled_from(sorted(BOUNDS)))
def test_out_of_range_values_are_refused_naming_the_field(data: st.DataObject, field: str) -> None:
    low, high = BOUNDS[field]
    value = data.draw(st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1)))
    with pytest.raises(InvalidSpec) as info:
        parse_spec({"prompt": "p", field: value})
    assert f"spec.{field}" in info.value.message


@pytest.mark.parametrize("width", [65, 100, 513, 2047])
def test_width_must_be_a_multiple_of_8(width: int) -> None:
    with pytest.raises(InvalidSpec, match=rf"spec.width: .*multiple of 8 \(got {width}\)"):
        parse_spec({"prompt": "p", "width": width})


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_blank_prompt_is_refused(prompt: str) -> None:
    with pytest.raises(InvalidSpec, match="spec.prompt"):
        parse_spec({"prompt": prompt})


def test_missing_prompt_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="spec.prompt: is required"):
        parse_spec({})


def test_unknown_field_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="spec.widht: unknown field"):
        parse_spec({"prompt": "p", "widht": 512})


@pytest.mark.parametrize("sampler", ["euler-a", "Euler", "euler a", ""])
def test_sampler_must_look_like_a_comfyui_name(sampler: str) -> None:
    with pytest.raises(InvalidSpec, match="spec.sampler"):
        parse_spec({"prompt": "p", "sampler": sampler})


def test_error_message_holds_no_pydantic_internals() -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_spec({"prompt": "p", "steps": "many"})
    assert "pydantic" not in info.value.message and "\n" not in info.value.message


def test_spec_not_a_mapping_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="mapping"):
        parse_spec(["prompt"])  # type: ignore[arg-type]


def test_camel_case_round_trip() -> None:
    spec = ImageJobSpec(prompt="p", negative_prompt="n", batch_size=2, timeout_seconds=900)
    wire = spec.wire()
    assert wire["negativePrompt"] == "n" and wire["batchSize"] == 2 and wire["timeoutSeconds"] == 900
    assert parse_spec(wire) == spec


def test_terminal_phases() -> None:
    assert {p for p in Phase if p.terminal} == {Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED}
    assert ImageJobStatus().phase is Phase.PENDING
