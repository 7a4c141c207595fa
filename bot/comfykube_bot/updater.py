"""Edits of job messages: throttled, coalesced, and sent by the right credential.

Throttle and coalescing (`Throttle`, pure): at most one edit per message per
`interval` seconds. States that arrive in between replace each other; only the
newest is sent when the interval is over. A final state (the result) is sticky:
progress that arrives after it is dropped.

Which credential (`MessageUpdater`):

- while the interaction that created the message is younger than 15 minutes
  (minus a minute of margin) the edit goes through its webhook token. That
  endpoint does not count against the bot's per-channel limits and works even
  where the bot user cannot see the channel;
- after that, after a restart (tokens are never stored), or as soon as Discord
  answers 401/50027 or 404/10015 (a clock skew or an early expiry), the bot
  token edits the same message: `channels/{channel}/messages/{message}`.

A **private** target (an ephemeral job message, `/settings` private replies)
exists for the interaction token only: Discord has no bot-token route to an
ephemeral message. Its edits go through the token or not at all; once the
token is unusable the answer is `NO_TOKEN`, and the caller delivers elsewhere
(a DM), never in the channel.

Discord answers handled: 401/10015 → switch to the bot token; 404/10008 →
the message is gone (the caller decides whether to post a new one); 413/40005
→ too large (the caller shrinks the files).

One retry layer: discord.py itself waits out 429s (`retry_after`) and retries
500/502/504/524 and connection resets, five tries per call. When such an
answer still reaches the updater, discord.py has already given up, so it is
counted and the edit fails (no second layer multiplying the attempts). Only
what discord.py does not retry — other 5xx such as 503, and connection errors
— is retried here with backoff. Edits are counted in
`comfykube_bot_message_edits_total`, posts in `comfykube_bot_messages_posted_total`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import enum
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord

from comfykube_bot.metrics import BotMetrics
from comfykube_bot.render import MessagePayload
from comfykube_bot.views import build_view

log = logging.getLogger(__name__)

#: Stop using an interaction token this long before Discord's 15 minutes are over.
TOKEN_MARGIN_SECONDS = 60.0
#: Attempts per edit for what discord.py does not retry itself (503 and other 5xx, connection errors).
MAX_ATTEMPTS = 5
#: Answers discord.py retries itself (five tries) before raising: not retried again here.
RETRIED_BY_DISCORD_PY = frozenset({429, 500, 502, 504, 524})


class Outcome(enum.Enum):
    """How an edit or post ended."""

    SENT = "sent"
    GONE = "gone"  # the message (or channel) no longer exists
    TOO_LARGE = "too_large"  # an attachment exceeded the upload limit
    FAILED = "failed"  # anything else (permissions, repeated server errors)
    SUPERSEDED = "superseded"  # a newer final state replaced it before it was sent
    NO_TOKEN = "no_token"  # a private (ephemeral) message whose interaction token is no longer usable
    CLOSED = "closed"  # the user does not take direct messages from the bot (403/50007)


# --------------------------------------------------------------------------- throttle (pure)


@dataclass
class _Slot:
    pending: Any = None
    has_pending: bool = False
    scheduled: bool = False
    last_sent: float | None = None
    final: bool = False


class Throttle:
    """Per-key coalescing throttle driven by an explicit clock (tests pass a fake one).

    `offer()` stores the newest state and says whether a send must be scheduled
    (and after how long); `take()` hands out the newest state when that time has
    come. Between the two, newer offers simply replace the stored state.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._slots: dict[Any, _Slot] = {}
        self.coalesced = 0

    def offer(self, key: Any, state: Any, now: float, *, final: bool = False) -> float | None:
        """Store `state` for `key`; returns the delay before sending, or None if a send is already due."""
        slot = self._slots.setdefault(key, _Slot())
        if slot.final and not final:
            return None  # the result is shown (or about to be): progress can no longer replace it
        if slot.has_pending:
            self.coalesced += 1
        slot.pending, slot.has_pending = state, True
        slot.final = slot.final or final
        if slot.scheduled:
            return None
        slot.scheduled = True
        if slot.last_sent is None:
            return 0.0
        return max(0.0, slot.last_sent + self.interval - now)

    def take(self, key: Any, now: float) -> Any:
        """The newest state for `key` (None if nothing is pending); marks it sent at `now`."""
        slot = self._slots.get(key)
        if slot is None or not slot.has_pending:
            if slot is not None:
                slot.scheduled = False
            return None
        state = slot.pending
        slot.pending, slot.has_pending, slot.scheduled = None, False, False
        slot.last_sent = now
        return state

    def is_final(self, key: Any) -> bool:
        """True once a final state was offered for `key`."""
        slot = self._slots.get(key)
        return bool(slot and slot.final)

    def forget(self, key: Any) -> None:
        """Drop everything known about `key`."""
        self._slots.pop(key, None)

    def __len__(self) -> int:
        return len(self._slots)


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    """Where a job message is: channel, message, and (for 15 minutes) the interaction webhook."""

    channel_id: int
    message_id: int
    guild_id: int | None = None
    #: An ephemeral message: only its interaction token reaches it (no bot-token fallback).
    private: bool = False


@dataclass
class _Token:
    webhook: discord.Webhook
    deadline: float  # monotonic time after which the token is not used
    dead: bool = False


@dataclass
class _Queued:
    payload: MessagePayload
    target: Target
    waiters: list[asyncio.Future[Outcome]] = field(default_factory=list)


def message_kwargs(payload: MessagePayload, *, for_new: bool = False) -> dict[str, Any]:
    """discord.py keyword arguments for a payload (built fresh for every attempt: files are consumed)."""
    kwargs: dict[str, Any] = {
        "content": payload.content,
        "embeds": [discord.Embed.from_dict(e) for e in payload.embeds],
        "view": build_view(payload.buttons),
        "allowed_mentions": discord.AllowedMentions(
            everyone=False,
            roles=False,
            users=[discord.Object(payload.mention_user)] if payload.mention_user else False,
        ),
    }
    if payload.files is not None:
        files = [discord.File(io.BytesIO(f.data), filename=f.filename, spoiler=f.spoiler) for f in payload.files]
        kwargs["files" if for_new else "attachments"] = files
    if for_new and kwargs["view"] is None:
        del kwargs["view"]
    return kwargs


class MessageUpdater:
    """Throttled, coalesced job message edits (see the module docstring)."""

    def __init__(
        self,
        client: discord.Client,
        *,
        interval: float,
        metrics: BotMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.clock = clock
        self.throttle = Throttle(interval)
        self._queued: dict[int, _Queued] = {}
        self._tokens: dict[int, _Token] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._last_fingerprint: dict[int, tuple[Any, ...]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Messages that already show their final state: later progress for them is dropped. Bounded,
        # because every other per-message structure is freed once the final state is out.
        self._finalized: collections.OrderedDict[int, None] = collections.OrderedDict()
        # (when it was sent, message id, route) of each successful edit: for tests and the bench.
        self.edit_log: list[tuple[float, int, str]] = []

    # ------------------------------------------------------------------ tokens

    def register_token(self, message_id: int, webhook: discord.Webhook, expires_at: dt.datetime) -> None:
        """Remember the interaction webhook that may edit `message_id` until `expires_at` (minus a margin)."""
        remaining = (expires_at - discord.utils.utcnow()).total_seconds() - TOKEN_MARGIN_SECONDS
        self._tokens[message_id] = _Token(webhook, self.clock() + remaining)

    def remember(self, message_id: int, payload: MessagePayload) -> None:
        """Record what a freshly posted message shows, so the same state is not sent again as an edit."""
        self._last_fingerprint[message_id] = payload.fingerprint()

    def token_usable(self, message_id: int) -> bool:
        """True while edits of `message_id` may still go through the interaction token."""
        token = self._tokens.get(message_id)
        return token is not None and not token.dead and self.clock() < token.deadline

    # ------------------------------------------------------------------ queueing

    def update(self, target: Target, payload: MessagePayload) -> asyncio.Future[Outcome]:
        """Queue `payload` for the message; returns a future with the outcome of the edit that shows it.

        The future resolves with SUPERSEDED if a newer final state replaced it, or
        SENT at once when the message already shows exactly this state.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        key = target.message_id
        if not payload.final and (self.throttle.is_final(key) or key in self._finalized):
            future.set_result(Outcome.SUPERSEDED)
            return future
        queued = self._queued.get(key)
        if queued is not None and not payload.final and queued.payload.final:
            future.set_result(Outcome.SUPERSEDED)
            return future
        if queued is not None and payload.files is None and queued.payload.files is not None and not payload.final:
            # `files=None` means "leave the attachments as they are", and they would have been the
            # replaced state's: keep its files (a live preview followed by a progress edit keeps it).
            payload = dataclasses.replace(payload, files=queued.payload.files)
        if queued is not None:
            # Waiters of the replaced state learn the outcome of the state that replaced it,
            # except a replaced final state: its caller must know it was not what got sent.
            if queued.payload.final:
                for waiter in queued.waiters:
                    if not waiter.done():
                        waiter.set_result(Outcome.SUPERSEDED)
                queued.waiters = []
            self.metrics.coalesced.inc()
        waiters = [*(queued.waiters if queued else []), future]
        self._queued[key] = _Queued(payload, target, waiters)
        delay = self.throttle.offer(key, payload, self.clock(), final=payload.final)
        self.metrics.tracked_messages.set(len(self._queued))
        if delay is not None:
            task = asyncio.create_task(self._flush_later(key, delay), name=f"edit-{key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    async def _flush_later(self, key: int, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            queued = self._queued.pop(key, None)
            self.throttle.take(key, self.clock())
            self.metrics.tracked_messages.set(len(self._queued))
            if queued is None:
                return
            fingerprint = queued.payload.fingerprint()
            if self._last_fingerprint.get(key) == fingerprint:
                outcome = Outcome.SENT  # Discord already shows exactly this
            else:
                outcome = await self.send_edit(queued.target, queued.payload)
                if outcome is Outcome.SENT:
                    self._last_fingerprint[key] = fingerprint
            for waiter in queued.waiters:
                if not waiter.done():
                    waiter.set_result(outcome)
            if outcome in (Outcome.GONE, Outcome.NO_TOKEN) or (queued.payload.final and outcome is Outcome.SENT):
                if outcome is Outcome.SENT:
                    self._finalized[key] = None
                    while len(self._finalized) > 10000:
                        self._finalized.popitem(last=False)
                if key not in self._queued:  # nothing newer is waiting: free everything about it
                    self.forget(key)
                    self._locks.pop(key, None)

    def forget(self, message_id: int) -> None:
        """Drop all state about a message (deleted, or its job is gone)."""
        self.throttle.forget(message_id)
        self._tokens.pop(message_id, None)
        self._last_fingerprint.pop(message_id, None)
        queued = self._queued.pop(message_id, None)
        if queued is not None:
            for waiter in queued.waiters:
                if not waiter.done():
                    waiter.set_result(Outcome.GONE)
        self.metrics.tracked_messages.set(len(self._queued))

    async def aclose(self) -> None:
        """Cancel pending edits (at shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------ sending

    async def send_edit(self, target: Target, payload: MessagePayload) -> Outcome:
        """Edit the message now (no throttle), choosing the token or the bot token; see the module docstring."""
        use_token = self.token_usable(target.message_id)
        if target.private and not use_token:
            self.metrics.edits.labels(route="token", outcome="no_token").inc()
            return Outcome.NO_TOKEN
        attempt = 0
        while attempt < MAX_ATTEMPTS:
            attempt += 1
            route = "token" if use_token else "bot"
            # The throttle is about when edits are sent; the answer's latency varies.
            sent_at = self.clock()
            try:
                kwargs = message_kwargs(payload)
                if use_token:
                    await self._tokens[target.message_id].webhook.edit_message(target.message_id, **kwargs)
                else:
                    channel = self.client.get_partial_messageable(target.channel_id, guild_id=target.guild_id)
                    await channel.get_partial_message(target.message_id).edit(**kwargs)
            except discord.HTTPException as exc:
                if use_token and (exc.status == 401 or exc.code in (50027, 10015)):
                    # The token died (15 minutes, or a skewed clock): the bot token takes over for good.
                    log.info("interaction token for message %s no longer works (%s); %s", target.message_id,
                             exc.code or exc.status, "it is private" if target.private else "using the bot token")
                    self._tokens[target.message_id].dead = True
                    self.metrics.edits.labels(route=route, outcome="token_expired").inc()
                    if target.private:
                        return Outcome.NO_TOKEN  # an ephemeral message has no bot-token route
                    use_token = False
                    attempt -= 1  # switching credentials is not a failed attempt
                    continue
                outcome = await self._classify(exc, route, attempt)
                if outcome is None:
                    continue
                return outcome
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.metrics.edits.labels(route=route, outcome="error").inc()
                log.info("editing message %s failed (%s); retrying", target.message_id, exc)
                await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            self.metrics.edits.labels(route=route, outcome="ok").inc()
            self.edit_log.append((sent_at, target.message_id, route))
            if len(self.edit_log) > 10000:
                del self.edit_log[:5000]
            return Outcome.SENT
        return Outcome.FAILED

    async def post(self, channel_id: int, payload: MessagePayload, *, guild_id: int | None = None) -> tuple[
        Outcome, int | None
    ]:
        """Post a new message with the bot token; returns the outcome and the message id."""
        attempt = 0
        while attempt < MAX_ATTEMPTS:
            attempt += 1
            try:
                channel = self.client.get_partial_messageable(channel_id, guild_id=guild_id)
                message = await channel.send(**message_kwargs(payload, for_new=True))
            except discord.HTTPException as exc:
                outcome = await self._classify(exc, "post", attempt)
                if outcome is None:
                    continue
                return outcome, None
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("posting to channel %s failed (%s); retrying", channel_id, exc)
                await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            self.metrics.posts.labels(outcome="ok").inc()
            self._last_fingerprint[message.id] = payload.fingerprint()
            return Outcome.SENT, message.id
        self.metrics.posts.labels(outcome="failed").inc()
        return Outcome.FAILED, None

    def _counted(self, route: str, outcome: str) -> None:
        """Edits by credential in the edits counter; posts (`route == "post"`) in the posts counter."""
        if route == "post":
            self.metrics.posts.labels(outcome=outcome).inc()
        else:
            self.metrics.edits.labels(route=route, outcome=outcome).inc()

    async def _classify(self, exc: discord.HTTPException, route: str, attempt: int) -> Outcome | None:
        """Turn an HTTP error into an outcome, or None after waiting when the call should be retried."""
        if exc.status == 429:
            # discord.py waited out and retried the 429s already; this one is what was left.
            self.metrics.rate_limited.labels(source="bot").inc()
            self._counted(route, "rate_limited")
            log.warning("Discord kept rate limiting a %s request after discord.py's retries", route)
            return Outcome.FAILED
        if exc.code == 50007:  # "Cannot send messages to this user": their DMs are closed to the bot
            self._counted(route, "closed")
            return Outcome.CLOSED
        if exc.status == 404 or exc.code in (10008, 10003):
            self._counted(route, "gone")
            return Outcome.GONE
        if exc.status == 413 or exc.code == 40005:
            self._counted(route, "too_large")
            return Outcome.TOO_LARGE
        if exc.status >= 500 and exc.status not in RETRIED_BY_DISCORD_PY and attempt < MAX_ATTEMPTS:
            self._counted(route, "server_error")
            await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
            return None
        self._counted(route, "failed")
        log.warning("Discord refused a %s request: %s %s", route, exc.status, exc.text[:200] if exc.text else "")
        return Outcome.FAILED


__all__ = ["TOKEN_MARGIN_SECONDS", "MessageUpdater", "Outcome", "Target", "Throttle", "message_kwargs"]
