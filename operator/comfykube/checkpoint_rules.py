"""Which checkpoints a deployment lets jobs use, and which ones it never picks on its own. Pure.

Three lists of globs (case-insensitive, matched against the name as ComfyUI
lists it and against its last path part, as the bot's NSFW globs are):

- `CHECKPOINT_ALLOW`: when set, only matching checkpoints may be used at all;
- `CHECKPOINT_DENY`: never used; a spec naming one is refused (`InvalidSpec`);
- `CHECKPOINT_RESTRICTED`: used only when a spec names it, never as the
  automatic fallback for a workflow default that is not installed (the chart
  fills it with the bot's NSFW globs, so a safe-for-work request can never
  end up on an NSFW checkpoint because the default was missing).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass


def _matches(name: str, pattern: str) -> bool:
    lowered = name.lower()
    base = lowered.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(lowered, pattern) or fnmatch.fnmatchcase(base, pattern)


def _first_match(name: str, patterns: Iterable[str]) -> str | None:
    return next((p for p in patterns if _matches(name, p)), None)


@dataclass(frozen=True)
class CheckpointRules:
    """The deployment's checkpoint lists (globs, lower-cased)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    restricted: tuple[str, ...] = ()

    @classmethod
    def of(cls, allow: Iterable[str] = (), deny: Iterable[str] = (), restricted: Iterable[str] = ()) -> CheckpointRules:
        """Rules from the configured lists (case does not matter)."""
        return cls(
            tuple(p.lower() for p in allow), tuple(p.lower() for p in deny), tuple(p.lower() for p in restricted)
        )

    def refusal(self, name: str) -> str | None:
        """Why `name` may not be used at all (naming the setting and the pattern), or None."""
        denied = _first_match(name, self.deny)
        if denied is not None:
            return f"checkpoint {name!r} is refused by this deployment (CHECKPOINT_DENY pattern {denied!r})"
        if self.allow and _first_match(name, self.allow) is None:
            return (
                f"checkpoint {name!r} is not allowed by this deployment (CHECKPOINT_ALLOW: {', '.join(self.allow)})"
            )
        return None

    def is_restricted(self, name: str) -> bool:
        """True when `name` may only be used when a spec names it."""
        return _first_match(name, self.restricted) is not None

    def fallbacks(self, installed: Iterable[str]) -> list[str]:
        """The installed checkpoints that may stand in for a missing workflow default, in order."""
        return [n for n in installed if self.refusal(n) is None and not self.is_restricted(n)]


__all__ = ["CheckpointRules"]
