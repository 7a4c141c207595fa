"""Midjourney-style inline flags inside a prompt: `a cat --ar 16:9 --seed 42 --no text, logo`.

`parse_inline_flags` splits the prompt into the text and a dict of options
named like the slash command's options (`aspect`, `seed`, `negative`, `steps`,
`cfg`). Values are converted but not range-checked: the same spec validation
that checks typed options checks these too, so the bounds live in one place.

Phone keyboards turn `--` into an em or en dash; `—ar` is accepted as `--ar`.
An unknown `--word` is refused rather than sent to the model as text: a typo
such as `--sed 42` would otherwise silently render with a random seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

#: flag (without dashes) → (option name, how many value tokens: 1, or 0 = "rest until the next flag").
FLAGS: dict[str, tuple[str, int]] = {
    "ar": ("aspect", 1),
    "aspect": ("aspect", 1),
    "seed": ("seed", 1),
    "no": ("negative", 0),
    "steps": ("steps", 1),
    "cfg": ("cfg", 1),
}

_FLAG = re.compile(r"^(?:--|—|–)([A-Za-z][A-Za-z0-9_-]*)$")
_RATIO = re.compile(r"^(\d{1,4})\s*[:x×/]\s*(\d{1,4})$")


class FlagError(ValueError):
    """A flag is unknown, lacks a value or has one of the wrong type; `flag` names it."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag
        self.message = message


@dataclass
class ParsedPrompt:
    """The prompt without its flags, and the options the flags set."""

    text: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_ratio(value: str) -> tuple[int, int]:
    """`"16:9"` → (16, 9); also `16x9`, `16/9`. Raises ValueError on anything else."""
    match = _RATIO.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a ratio like 16:9")
    w, h = int(match.group(1)), int(match.group(2))
    if w == 0 or h == 0:
        raise ValueError(f"{value!r} has a zero side")
    return w, h


def _convert(flag: str, option: str, raw: str) -> Any:
    if option == "aspect":
        try:
            w, h = parse_ratio(raw)
        except ValueError as exc:
            raise FlagError(flag, f"--{flag} expects a ratio such as 16:9 ({exc})") from None
        return f"{w}:{h}"
    if option in ("seed", "steps"):
        if not re.fullmatch(r"\d{1,20}", raw):
            raise FlagError(flag, f"--{flag} expects a whole number (got {raw!r})")
        return int(raw)
    if option == "cfg":
        try:
            value = float(raw)
        except ValueError:
            raise FlagError(flag, f"--{flag} expects a number such as 7.5 (got {raw!r})") from None
        if value != value or value in (float("inf"), float("-inf")):  # NaN/inf are not guidance scales
            raise FlagError(flag, f"--{flag} expects a finite number (got {raw!r})")
        return value
    return raw


def parse_inline_flags(prompt: str) -> ParsedPrompt:
    """Split `prompt` into text and options; see the module docstring. Raises FlagError."""
    tokens = prompt.split()
    text: list[str] = []
    options: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        match = _FLAG.match(token)
        if match is None:
            text.append(token)
            i += 1
            continue
        flag = match.group(1).lower()
        if flag not in FLAGS:
            known = ", ".join(f"--{name}" for name in FLAGS if name != "aspect")
            raise FlagError(flag, f"unknown flag --{flag} (known flags: {known})")
        option, arity = FLAGS[flag]
        i += 1
        if arity == 1:
            if i >= len(tokens) or _FLAG.match(tokens[i]):
                raise FlagError(flag, f"--{flag} needs a value")
            value = _convert(flag, option, tokens[i])
            i += 1
        else:
            words: list[str] = []
            while i < len(tokens) and not _FLAG.match(tokens[i]):
                words.append(tokens[i])
                i += 1
            if not words:
                raise FlagError(flag, f"--{flag} needs the things to leave out, e.g. --{flag} text, blur")
            value = " ".join(words)
            if option in options:  # `--no a --no b` → "a, b"
                value = f"{options[option]}, {value}"
        options[option] = value
    if not options:
        # No flags: keep the prompt exactly as typed (line breaks and spacing can matter to a model).
        return ParsedPrompt(text=prompt.strip(), options={})
    return ParsedPrompt(text=" ".join(text), options=options)


__all__ = ["FLAGS", "FlagError", "ParsedPrompt", "parse_inline_flags", "parse_ratio"]
