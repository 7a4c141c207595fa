"""Reading an ImageJob's spec and status back into the types, tolerantly.

The reader (the bot, the maintenance loop) may be older or newer than the
writer: an older operator leaves fields out or spells a value differently, a
newer one adds fields. A reader must not crash on that, and must not guess
either: a field that does not validate is left out (its default applies), a
list item that does not validate is dropped, and everything else is read
through the same models that generate the CRD.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from comfykube.types import ImageJobSpec, ImageJobStatus

M = TypeVar("M", bound=BaseModel)


def _without_bad_parts(data: dict[str, Any], error: ValidationError) -> dict[str, Any] | None:
    """`data` without the fields (or list items) the error points at; None when nothing could be removed."""
    out = dict(data)
    drop_items: dict[str, set[int]] = {}
    removed = False
    for item in error.errors():
        loc = item.get("loc") or ()
        if not loc or not isinstance(loc[0], str):
            continue
        name = loc[0]
        if name not in out:
            # pydantic reports the alias on the wire; a missing required field cannot be removed.
            continue
        value = out[name]
        if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(value, list):
            drop_items.setdefault(name, set()).add(loc[1])
        else:
            out.pop(name)
            removed = True
    for name, indexes in drop_items.items():
        value = out.get(name)
        if isinstance(value, list):
            out[name] = [v for i, v in enumerate(value) if i not in indexes]
            removed = True
    return out if removed else None


def _tolerant(model: type[M], data: Any) -> M | None:
    current: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
    for _ in range(64):  # each round removes at least one part; bounded anyway
        try:
            return model.model_validate(current)
        except ValidationError as exc:
            reduced = _without_bad_parts(current, exc)
            if reduced is None:
                return None
            current = reduced
    return None


def read_status(data: Any) -> ImageJobStatus:
    """The status as the types see it; unreadable parts fall back to their defaults."""
    return _tolerant(ImageJobStatus, data) or ImageJobStatus()


def read_spec(data: Any) -> ImageJobSpec:
    """The spec as the types see it; unreadable parts fall back to their defaults.

    A spec without a readable prompt (the API server's schema makes that rare) reads
    as one with an empty-looking placeholder, so it can still be shown and refused.
    """
    parsed = _tolerant(ImageJobSpec, data)
    if parsed is not None:
        return parsed
    fixed = dict(data) if isinstance(data, dict) else {}
    fixed["prompt"] = "(no readable prompt)"
    return _tolerant(ImageJobSpec, fixed) or ImageJobSpec(prompt="(no readable prompt)")


__all__ = ["read_spec", "read_status"]
