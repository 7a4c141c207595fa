"""Which ImageJobs belong to this operator: its shard's label selector.

A farm larger than one process runs one operator per shard (`--namespace` lists
and/or `--selector comfykube.dev/shard=a`). kopf's peering only pauses a second
operator, it does not elect one, so shards must never overlap: the selector is
applied by the API server to kopf's list and watch (kopf never sees, and so never
touches, a job of another shard: no daemon, no finalizer, no annotation), to the
maintenance loop's listing (TTL, URL refresh), and once more here on the client
side, in the handlers' filters, in case a server ignored it.

Kubernetes label selector syntax: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
`k notin (a,b)`, `k`, `!k`, joined by commas (all must hold).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from comfykube.names import LABEL_SHARD as SHARD_LABEL

_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s+\(([^()]*)\)$")
_EQUALITY = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")


@dataclass(frozen=True)
class Requirement:
    """One term of a selector."""

    key: str
    op: str  # "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy this term."""
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op == "in":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class Selector:
    """A parsed label selector; the empty one matches everything."""

    text: str
    requirements: tuple[Requirement, ...]

    @classmethod
    def parse(cls, text: str | None) -> Selector:
        """Parse `text`; ValueError names the term that is not a label selector."""
        text = (text or "").strip()
        return cls(text, tuple(_parse_term(term) for term in _split_terms(text)) if text else ())

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with `labels` is in this shard."""
        found = labels or {}
        return all(r.matches(found) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    terms.append(current.strip())
    return terms


def _parse_term(term: str) -> Requirement:
    if match := _SET.match(term):
        values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
        if not values or not all(re.fullmatch(_VALUE, v) for v in values):
            raise ValueError(f"label selector term {term!r}: bad value list")
        return Requirement(match.group(1), match.group(2), values)
    if match := _EQUALITY.match(term):
        op = "notin" if match.group(2) == "!=" else "in"
        return Requirement(match.group(1), op, frozenset({match.group(3)}))
    if match := _EXISTS.match(term):
        return Requirement(match.group(2), "!exists" if match.group(1) else "exists")
    raise ValueError(f"{term!r} is not a label selector term (e.g. {SHARD_LABEL}=a, key!=v, key in (a,b), !key)")
