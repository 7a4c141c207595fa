"""pytest fixtures for the S3 stand-in (nanio on loopback).

- `s3_server` (session): a shared running `NanioServer`; use `.endpoint`,
  `.url`, `.access_key`, `.secret_key`. Do not stop it.
- `s3_bucket` (function): a fresh bucket name (not yet created; `ensure_ready()` creates it).
- `s3_settings` (function): `Settings` for `s3_server` + `s3_bucket`, local output under tmp_path.
- `s3_server_private` (function): a server of your own that the test may
  `stop()`, `start()` or `restart()` (same port and data); stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from comfykube.settings import Settings
from tests.standins.s3 import NanioServer, unique_bucket


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NanioServer]:
    """One nanio for the whole session (about 0.6 s to start)."""
    server = NanioServer(tmp_path_factory.mktemp("nanio") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket() -> str:
    """A bucket name no other test uses."""
    return unique_bucket()


@pytest.fixture
def s3_settings(s3_server: NanioServer, s3_bucket: str, tmp_path: Path) -> Settings:
    """Settings for the shared server and this test's bucket."""
    return s3_server.settings(s3_bucket, output_dir=tmp_path / "local-output")


@pytest.fixture
def s3_server_private(tmp_path: Path) -> Iterator[NanioServer]:
    """A nanio only this test uses, so it may stop and restart it."""
    server = NanioServer(tmp_path / "nanio-private" / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
