"""Showing text from users and from kubectl in Discord literally, and reading it the way people see it.

`escape` and `code` keep a prompt or a model name from turning into markdown
(masked links, mentions, a code span broken by a backtick). `fold` is what
the deny-list matches against: NFKC-folded (full-width and styled letters
become plain ones), zero-width and other invisible format characters removed,
so "ｇｏｒｅ" or "go\u200bre" cannot slip past a pattern for "gore".
"""

from __future__ import annotations

import re
import unicodedata

#: Characters Discord's markdown gives a meaning to anywhere in a line (emphasis, code, spoilers,
#: masked links; `<` starts mentions, custom emoji and timestamps).
_INLINE = re.compile(r"([\\*_~`|\[\]()<])")
#: ... and at the start of a line (headings, quotes, lists, subtext).
_LINE_START = re.compile(r"^(\s*)([#>+-])", re.MULTILINE)
_ORDERED = re.compile(r"^(\s*\d+)\.", re.MULTILINE)


def escape(text: str) -> str:
    """`text` shown literally in Discord: markdown escaped, no masked links, no mentions, no control characters.

    Prompts and model names come from users and from kubectl; unescaped, a prompt could
    render a masked link (`[click](https://evil)`) or break out of a code span.
    """
    cleaned = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    escaped = _INLINE.sub(r"\\\1", cleaned)
    return _ORDERED.sub(r"\1\\.", _LINE_START.sub(r"\1\\\2", escaped))


def code(text: str) -> str:
    """`text` in a code span that a backtick inside cannot end (it is shown as a look-alike)."""
    cleaned = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    return f"`{cleaned.replace('`', 'ˋ') or ' '}`"


def fold(text: str) -> str:
    """`text` as the deny-list reads it: NFKC-folded, without invisible format characters (Cf)."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")


__all__ = ["code", "escape", "fold"]
