"""Temporary download directories: named after the process that owns them, swept at start-up.

Images are downloaded into a directory of their own before they are stored. A
process killed mid-download (SIGKILL, OOM) cannot clean up, so every directory
carries its owner's pid (`comfykube-<pid>-<random>`) and each CLI run and each
operator start removes the ones left behind: only directories with our prefix,
and only those whose owner is gone (or is this very process, which at start-up
has created none yet: a container restart reuses the pid).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "comfykube-"
_OWNED = re.compile(rf"^{re.escape(PREFIX)}(\d+)-[A-Za-z0-9_]+$")


def job_dir(parent: Path | None = None) -> tempfile.TemporaryDirectory[str]:
    """A new temporary directory owned by this process (removed when the context exits)."""
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-", dir=parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def sweep(parent: Path | None = None) -> list[Path]:
    """Remove download directories left by dead processes; the removed paths.

    Call it at start-up, before this process creates any directory of its own.
    """
    root = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError as exc:
        log.info("cannot list %s for stale downloads: %s", root, exc)
        return removed
    me = os.getpid()
    for entry in entries:
        match = _OWNED.match(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(match.group(1))
        if pid != me and _alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    if removed:
        log.info("removed %d download director%s left by killed processes", len(removed),
                 "y" if len(removed) == 1 else "ies")
    return removed
