"""pytest fixtures for the fake Discord API (see ``tests.standins.discord``).

- ``fake_discord``: a started :class:`FakeDiscord` on 127.0.0.1 (function scope), with discord.py
  already pointed at it (``Route.BASE``, ``DEFAULT_GATEWAY``, ``Asset.BASE``; restored afterwards).
- ``run_discord_bot``: ``async with run_discord_bot(client) as client:`` starts a real discord.py
  client in the test's loop against ``fake_discord`` with the fake's token, waits until it is ready
  and closes it at exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest_asyncio

from tests.standins.discord import FakeDiscord, point_discord_at, run_bot


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started fake Discord, discord.py pointed at it for the test's duration."""
    fake = FakeDiscord()
    await fake.start()
    try:
        with point_discord_at(fake):
            yield fake
    finally:
        await fake.stop()


@pytest_asyncio.fixture
async def run_discord_bot(
    fake_discord: FakeDiscord,
) -> Callable[..., AbstractAsyncContextManager[Any]]:
    """``run_discord_bot(client, timeout=10.0)`` → async context manager running ``client``."""

    def runner(client: Any, *, timeout: float = 10.0) -> AbstractAsyncContextManager[Any]:
        return run_bot(client, fake_discord.token, fake_discord, timeout=timeout)

    return runner
