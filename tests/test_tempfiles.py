"""Download directories of killed processes are swept; nothing else is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfykube import tempfiles


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_only_our_directories_of_dead_owners_are_removed(tmp_path: Path, dead_pid: int, live_pid: int) -> None:
    stale = tmp_path / f"comfykube-{dead_pid}-x1y2"
    (stale / "deep").mkdir(parents=True)
    (stale / "deep" / "comfy-1.part").write_bytes(b"\0" * 4096)
    busy = tmp_path / f"comfykube-{live_pid}-busy"  # another process downloading right now
    busy.mkdir()
    lookalikes = [tmp_path / "comfykube-cache", tmp_path / f"comfykube-{dead_pid}", tmp_path / f"other-{dead_pid}-x"]
    for path in lookalikes:
        path.mkdir()
    a_file = tmp_path / f"comfykube-{dead_pid}-file"
    a_file.write_text("not a directory")
    link = tmp_path / f"comfykube-{dead_pid}-link"
    link.symlink_to(busy)

    assert tempfiles.sweep(tmp_path) == [stale]
    assert not stale.exists()
    assert busy.is_dir() and all(p.is_dir() for p in lookalikes) and a_file.is_file() and link.is_symlink()


def test_a_restarted_container_reuses_the_pid_and_its_old_directories_go(tmp_path: Path) -> None:
    # PID 1 again after a restart: at start-up nothing with our own pid can be ours yet.
    old = tmp_path / f"comfykube-{os.getpid()}-before"
    old.mkdir()
    assert tempfiles.sweep(tmp_path) == [old]


def test_job_dirs_carry_the_owner_pid_and_vanish_after_use(tmp_path: Path) -> None:
    with tempfiles.job_dir(tmp_path) as made:
        assert Path(made).name.startswith(f"comfykube-{os.getpid()}-")
        assert tempfiles.sweep(tmp_path / "missing") == []  # an absent parent is no error
    assert list(tmp_path.iterdir()) == []
