"""The in-memory index of ImageJobs: newest first, filters, cursor paging, a change log.

It is a cache of the cluster, fed by one watch (`feed.py`) and rebuilt from a list
whenever that watch starts over; nothing lives only here.

- Order: a sorted list of `(-created, namespace, name)`; a page is a bisect and a
  short scan, so the first page costs the same with ten jobs or ten thousand.
- Changes: every upsert or delete bumps a sequence number; `changes_since(seq)`
  returns the keys changed after `seq` (each key once, its latest state), which is
  how live updates coalesce: a browser asking twice a second gets one entry per job
  however many watch events arrived in between.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from comfykube.types import Phase
from comfykube_web.jobs import JobView

#: Deleted keys remembered for live updates; a browser further behind reloads its grid.
TOMBSTONES = 5000


@dataclass(frozen=True)
class Filters:
    """What the grid shows: every field empty means "all"."""

    phase: str = ""
    requester: str = ""
    workflow: str = ""
    namespace: str = ""
    search: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        """From a request's query string (unknown phases match nothing, never raise)."""

        def get(name: str, limit: int = 200) -> str:
            return str(query.get(name, "")).strip()[:limit]

        return cls(
            phase=get("phase"),
            requester=get("requester"),
            workflow=get("workflow"),
            namespace=get("namespace"),
            search=get("q", 500),
        )

    def matches(self, job: JobView) -> bool:
        """True when the job passes every filter."""
        if self.phase and job.phase.value != self.phase:
            return False
        if self.namespace and job.namespace != self.namespace:
            return False
        if self.workflow and job.workflow != self.workflow:
            return False
        if self.requester and job.requester.key != self.requester:
            return False
        return not self.search or self.search.casefold() in job.prompt.casefold()

    @property
    def active(self) -> bool:
        """True when any filter is set."""
        return any((self.phase, self.requester, self.workflow, self.namespace, self.search))

    def query(self) -> dict[str, str]:
        """The non-empty filters as query parameters."""
        items = {
            "phase": self.phase,
            "requester": self.requester,
            "workflow": self.workflow,
            "namespace": self.namespace,
            "q": self.search,
        }
        return {k: v for k, v in items.items() if v}


SortKey = tuple[float, str, str]


def encode_cursor(key: SortKey) -> str:
    """A cursor for "older than this job" (opaque to users, parsed strictly)."""
    return f"{-key[0]!r}~{key[1]}~{key[2]}"


def decode_cursor(text: str) -> SortKey | None:
    """The sort key in a cursor, or None for anything malformed."""
    parts = text.split("~")
    if len(parts) != 3:
        return None
    try:
        created = float(parts[0])
    except ValueError:
        return None
    return (-created, parts[1], parts[2])


@dataclass(frozen=True)
class Page:
    """One page of the grid."""

    jobs: list[JobView]
    older: str | None  # cursor of the next (older) page, None on the last one


class JobIndex:
    """ImageJobs by key, in newest-first order, with a change log for live updates."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobView] = {}
        self._order: list[SortKey] = []
        self._by_sort: dict[SortKey, str] = {}
        self._log: OrderedDict[str, int] = OrderedDict()
        self._tombstones = 0
        #: Changes at or below this sequence number are forgotten (deleted keys pruned).
        self.floor = 0
        self.seq = 0
        self._changed = asyncio.Event()
        #: True once the first list has been loaded (readiness).
        self.synced = False
        self._choices: tuple[int, dict[str, list[tuple[str, str]]]] | None = None

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, key: str) -> JobView | None:
        """The job `namespace/name`, or None."""
        return self._jobs.get(key)

    def jobs(self) -> Iterable[JobView]:
        """Every job, in no particular order."""
        return self._jobs.values()

    # -- changes ------------------------------------------------------------

    def _bump(self, key: str) -> None:
        self.seq += 1
        self._log[key] = self.seq
        self._log.move_to_end(key)
        self._changed.set()
        self._changed = asyncio.Event()

    def upsert(self, job: JobView) -> None:
        """Add or replace a job."""
        old = self._jobs.get(job.key)
        if old is not None and old.uid != job.uid:
            self._unsort(old)
            old = None
        if old is None:
            bisect.insort(self._order, job.sort_key)
            self._by_sort[job.sort_key] = job.key
        self._jobs[job.key] = job
        self._bump(job.key)

    def remove(self, key: str) -> None:
        """Forget a deleted job."""
        old = self._jobs.pop(key, None)
        if old is None:
            return
        self._unsort(old)
        self._bump(key)
        self._tombstones += 1
        if self._tombstones > TOMBSTONES:
            self._prune()

    def _unsort(self, job: JobView) -> None:
        at = bisect.bisect_left(self._order, job.sort_key)
        if at < len(self._order) and self._order[at] == job.sort_key:
            del self._order[at]
        self._by_sort.pop(job.sort_key, None)

    def _prune(self) -> None:
        """Drop the oldest half of the tombstones (browsers behind them reload)."""
        drop = self._tombstones // 2
        for key, seq in list(self._log.items()):
            if drop <= 0:
                break
            if key not in self._jobs:
                del self._log[key]
                self.floor = max(self.floor, seq)
                drop -= 1
                self._tombstones -= 1

    def replace_all(self, jobs: Iterable[JobView]) -> None:
        """The result of a fresh list: what is not in it was deleted while nobody watched."""
        fresh = {job.key: job for job in jobs}
        for key in [k for k in self._jobs if k not in fresh]:
            self.remove(key)
        for job in fresh.values():
            old = self._jobs.get(job.key)
            if old is None or old.resource_version != job.resource_version or old.uid != job.uid:
                self.upsert(job)
        self.synced = True

    def changes_since(self, seq: int) -> tuple[int, list[tuple[str, JobView | None]], bool]:
        """(current seq, [(key, job or None when deleted)], reset) for changes after `seq`.

        `reset` is True when `seq` is older than what the log remembers: reload everything.
        """
        if seq < self.floor:
            return self.seq, [], True
        changed: list[tuple[str, JobView | None]] = []
        for key in reversed(self._log):
            if self._log[key] <= seq:
                break
            changed.append((key, self._jobs.get(key)))
        changed.reverse()
        return self.seq, changed, False

    async def wait(self, seq: int, patience: float) -> bool:
        """Wait up to `patience` seconds until something changed after `seq`; False when nothing did."""
        if self.seq > seq:
            return True
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), patience)
        except TimeoutError:
            return False
        return True

    # -- reading ------------------------------------------------------------

    def page(self, filters: Filters, *, limit: int, older_than: SortKey | None = None) -> Page:
        """Up to `limit` jobs matching `filters`, newest first, older than the cursor."""
        start = bisect.bisect_right(self._order, older_than) if older_than is not None else 0
        found: list[JobView] = []
        last: SortKey | None = None
        active = filters.active
        for at in range(start, len(self._order)):
            sort_key = self._order[at]
            job = self._jobs[self._by_sort[sort_key]]
            if active and not filters.matches(job):
                continue
            if len(found) == limit:
                return Page(found, encode_cursor(last) if last else None)
            found.append(job)
            last = sort_key
        return Page(found, None)

    def choices(self) -> dict[str, list[tuple[str, str]]]:
        """Values for the filter menus: (value, label) for requesters, workflows, namespaces, phases."""
        if self._choices is not None and self._choices[0] == self.seq:
            return self._choices[1]
        requesters: dict[str, str] = {}
        workflows: set[str] = set()
        namespaces: set[str] = set()
        for job in self._jobs.values():
            requesters[job.requester.key] = job.requester.label
            workflows.add(job.workflow)
            namespaces.add(job.namespace)
        result = {
            "phase": [(p.value, p.value) for p in Phase],
            "requester": sorted(requesters.items(), key=lambda item: item[1]),
            "workflow": [(w, w) for w in sorted(workflows)],
            "namespace": [(n, n) for n in sorted(namespaces)],
        }
        self._choices = (self.seq, result)
        return result


__all__ = ["Filters", "JobIndex", "Page", "decode_cursor", "encode_cursor"]
