"""A fake Discord API (REST + gateway) on loopback that a REAL discord.py 2.7.1 client talks to.

Why a fake server and not mocks: mocks of ``discord.Interaction`` check nothing about Discord's
contract. This server makes a real ``discord.Client``/``commands.Bot`` log in, connect to the gateway,
sync its command tree, receive ``INTERACTION_CREATE`` and answer through the very HTTP calls it
would send to Discord, and it enforces the rules peer bots broke: one initial response within 3 s,
15-minute interaction tokens, message/component/upload limits, 429s with ``retry_after``.

In-process use (the usual case)::

    async with FakeDiscord() as fake, run_bot(bot, fake.token, fake):
        handle = await fake.slash_command("imagine", {"prompt": "a cat"})
        response = await handle.wait_response()        # the initial callback (type 4/5/...)
        await fake.wait_for(lambda: handle.followup_ids)
        fake.message(handle.original_message_id).contents  # every version of the message

Public API (all on ``FakeDiscord`` unless noted):

- lifecycle/addresses: ``start()``/``stop()``/``async with``, ``api_base``, ``gateway_url``, ``cdn_base``,
  ``env()``, ``token``, ``application_id`` (= ``bot_user_id``), ``upload_limit`` (mutable);
- config: ``guilds`` (``GuildSpec``/``ChannelSpec``/``RoleSpec``/``MemberSpec``; default one guild with
  ``channel_id`` (general), ``nsfw_channel_id``, ``role_ids``, ``user_ids`` alice/bob/mod);
- clock: ``now()``, ``wall_now()``, ``advance(seconds)``;
- injection: ``slash_command``, ``autocomplete``, ``click``, ``submit_modal`` → ``InteractionHandle``
  (``wait_response(timeout)``, ``response``, ``rejected``, ``original``, ``followups``, ``choices``);
  ``dispatch(event, data)`` for raw gateway events; ``post_message`` to seed a bot message;
  ``request_reconnect()``/``invalidate_sessions()`` for RESUME paths;
- observation: ``requests`` (``RecordedRequest``), ``requests_to``, ``wait_for_request``, ``wait_for``,
  ``unhandled``, ``sessions``, ``commands(guild_id)``/``command(name)``, ``messages_in(cid)``,
  ``message(mid)`` (``FakeMessage`` with ``history``/``versions``/``contents``), ``uploads`` (attachment
  options, served at signed CDN URLs ``/cdn/ephemeral-attachments/APP/ID/NAME?ex=&is=&hm=`` that stop
  working after ``attachment_url_lifetime``, 404 otherwise), ``attachment_fetches``;
- faults: ``fail_next(method, path_regex, status, code=0, retry_after=None, *, times=1, is_global=False)``;
- module helpers: ``point_discord_at(fake)``, ``run_bot(client, token, fake)``, ``make_png(w, h, pad_to=)``.

``point_discord_at(fake)`` (used by ``run_bot``) sets three class attributes of discord.py and
restores them afterwards:

- ``discord.http.Route.BASE`` = ``fake.api_base`` (``http://127.0.0.1:PORT/api/v10``): every REST call,
  interaction callbacks and webhooks included;
- ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` = ``fake.gateway_url``
  (``ws://127.0.0.1:PORT/gateway``): a normal client never asks ``/gateway/bot``;
- ``discord.asset.Asset.BASE`` = ``fake.cdn_base`` (``http://127.0.0.1:PORT/cdn``).

A bot started as a SUBPROCESS cannot be patched from the test; it must honour these env vars at start
(``fake.env()`` returns them) and apply them to the same three attributes before ``client.start``:

- ``DISCORD_API_BASE``    e.g. ``http://127.0.0.1:PORT/api/v10`` → ``discord.http.Route.BASE``
- ``DISCORD_GATEWAY_URL`` e.g. ``ws://127.0.0.1:PORT/gateway``  → ``DiscordWebSocket.DEFAULT_GATEWAY``
  (wrap in ``yarl.URL``)
- ``DISCORD_CDN_BASE``    (optional) e.g. ``http://127.0.0.1:PORT/cdn`` → ``discord.asset.Asset.BASE``
- ``DISCORD_TOKEN``       the bot token the fake accepts (``fake.token``)

The fake keeps its own clock: real monotonic time plus whatever ``fake.advance(seconds)`` added. The
3 s response deadline and the 15-minute token lifetime are measured on it, and snowflakes/timestamps
are derived from it, so advancing the fake does not advance the bot's ``utcnow()`` (exactly the skew a
bot meets when it keeps a token past its lifetime).

Behaviour worth knowing (all modelled on Discord's documented or observed behaviour):

- JSON answers carry ``Content-Type: application/json`` exactly (discord.py ignores bodies otherwise).
- Gateway frames are zlib-stream compressed when the client asks for ``compress=zlib-stream``
  (discord.py's default), else plain text.
- The first followup after a type-5 (deferred) response fills the loading message (same id, same
  ephemerality); later followups are new messages.
- A webhook token is unusable until the interaction was acknowledged (404 10015), after its lifetime
  401 50027; a second initial response is 400 40060; after the deadline 404 10062.
- ``POST /users/@me/channels`` (Create DM, ``{"recipient_id": ...}``) returns the one DM channel
  (type 1) of that user, the same one their DM interactions come from; an id nobody has is 404 10013. A
  message to a member whose ``accepts_dms`` is False is 403 50007 ("Cannot send messages to this user").
  ``dm_channel_id(user_id)`` names that channel for tests.
"""

# Test helpers here take a plain ``timeout`` argument on purpose (the brief's API: wait_response(timeout)).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import math
import re
import secrets
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import yarl
from aiohttp import BodyPartReader, WSMsgType, web

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1420070400000
API_VERSION = 10
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
INTERACTION_DEADLINE_S = 3.0
TOKEN_LIFETIME_S = 15 * 60.0

# Fixed ids so test failures print readable numbers. The bot user id equals the application id,
# as it does for every modern Discord application.
APPLICATION_ID = 1100000000000000001
GUILD_ID = 1200000000000000001
GENERAL_CHANNEL_ID = 1300000000000000001
NSFW_CHANNEL_ID = 1300000000000000002
ARTIST_ROLE_ID = 1400000000000000001
MODERATOR_ROLE_ID = 1400000000000000002
ALICE_ID = 1500000000000000001
BOB_ID = 1500000000000000002
MOD_ID = 1500000000000000003

# Permission bits (Discord's values) used to build realistic member/app permissions.
P_VIEW_CHANNEL = 1 << 10
P_SEND_MESSAGES = 1 << 11
P_MANAGE_MESSAGES = 1 << 13
P_EMBED_LINKS = 1 << 14
P_ATTACH_FILES = 1 << 15
P_READ_HISTORY = 1 << 16
P_USE_APP_COMMANDS = 1 << 31
P_ADMINISTRATOR = 1 << 3
EVERYONE_PERMISSIONS = (
    P_VIEW_CHANNEL | P_SEND_MESSAGES | P_EMBED_LINKS | P_ATTACH_FILES | P_READ_HISTORY | P_USE_APP_COMMANDS
)
ALL_PERMISSIONS = (1 << 53) - 1

# Message flags.
F_EPHEMERAL = 1 << 6
F_LOADING = 1 << 7
F_COMPONENTS_V2 = 1 << 15

# Interaction types and callback types.
IT_PING, IT_COMMAND, IT_COMPONENT, IT_AUTOCOMPLETE, IT_MODAL = 1, 2, 3, 4, 5
CB_PONG, CB_MESSAGE, CB_DEFERRED, CB_DEFERRED_UPDATE, CB_UPDATE, CB_AUTOCOMPLETE, CB_MODAL = 1, 4, 5, 6, 7, 8, 9
ALLOWED_CALLBACKS: dict[int, frozenset[int]] = {
    IT_PING: frozenset({CB_PONG}),
    IT_COMMAND: frozenset({CB_MESSAGE, CB_DEFERRED, CB_MODAL}),
    IT_COMPONENT: frozenset({CB_MESSAGE, CB_DEFERRED, CB_DEFERRED_UPDATE, CB_UPDATE, CB_MODAL}),
    IT_AUTOCOMPLETE: frozenset({CB_AUTOCOMPLETE}),
    IT_MODAL: frozenset({CB_MESSAGE, CB_DEFERRED, CB_DEFERRED_UPDATE, CB_UPDATE}),
}

ERROR_MESSAGES: dict[int, str] = {
    0: "General error",
    10003: "Unknown Channel",
    10004: "Unknown Guild",
    10008: "Unknown Message",
    10013: "Unknown User",
    10015: "Unknown Webhook",
    10062: "Unknown interaction",
    10063: "Unknown application command",
    40005: "Request entity too large",
    40060: "Interaction has already been acknowledged.",
    50001: "Missing Access",
    50006: "Cannot send an empty message",
    50007: "Cannot send messages to this user",
    50027: "Invalid Webhook Token",
    50035: "Invalid Form Body",
}

# Chat-input names: lowercase letters/digits (any script), '-' and '_', 1..32 characters.
_CHAT_NAME_RE = re.compile(r"^[-_'\w]{1,32}$")
_FILE_FIELD_RE = re.compile(r"^files\[(\d+)\]$")


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass
class RoleSpec:
    """A guild role; ``id == guild id`` is the @everyone role."""

    id: int
    name: str
    permissions: int = 0
    position: int = 0


@dataclass
class ChannelSpec:
    """A guild text channel (type 0); ``nsfw`` is Discord's age-restricted flag."""

    id: int
    name: str
    nsfw: bool = False
    type: int = 0
    position: int = 0
    topic: str | None = None


@dataclass
class MemberSpec:
    """A guild member; ``roles`` are role ids (never the @everyone role)."""

    id: int
    username: str
    roles: tuple[int, ...] = ()
    bot: bool = False
    nick: str | None = None
    #: False: the user's privacy settings refuse DMs from the bot (messages there are 403 50007).
    accepts_dms: bool = True


@dataclass
class GuildSpec:
    """A guild the bot is in; sent as GUILD_CREATE after READY."""

    id: int
    name: str
    channels: list[ChannelSpec]
    roles: list[RoleSpec]
    members: list[MemberSpec]
    owner_id: int = MOD_ID
    premium_tier: int = 0


def default_guild() -> GuildSpec:
    """One guild with a general and an NSFW channel, artist/moderator roles and three users."""
    return GuildSpec(
        id=GUILD_ID,
        name="comfykube-test",
        channels=[
            ChannelSpec(GENERAL_CHANNEL_ID, "general", nsfw=False, position=0),
            ChannelSpec(NSFW_CHANNEL_ID, "nsfw-art", nsfw=True, position=1),
        ],
        roles=[
            RoleSpec(GUILD_ID, "@everyone", EVERYONE_PERMISSIONS, 0),
            RoleSpec(ARTIST_ROLE_ID, "artist", 0, 1),
            RoleSpec(MODERATOR_ROLE_ID, "moderator", P_MANAGE_MESSAGES, 2),
        ],
        members=[
            MemberSpec(ALICE_ID, "alice", (ARTIST_ROLE_ID,)),
            MemberSpec(BOB_ID, "bob", ()),
            MemberSpec(MOD_ID, "mod", (MODERATOR_ROLE_ID,)),
        ],
        owner_id=MOD_ID,
    )


# --------------------------------------------------------------------------------------------------
# Records the tests read
# --------------------------------------------------------------------------------------------------


@dataclass
class RecordedFile:
    """One uploaded multipart file part, bytes kept exactly as received."""

    field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One REST request as the fake saw it (``path`` is relative to ``/api/v10``)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[RecordedFile]
    at: float
    token: str | None
    auth: str | None
    status: int = 0
    response: Any = None
    injected: bool = False


@dataclass
class StoredAttachment:
    """An attachment of a stored message; ``url`` is served by the fake."""

    id: int
    filename: str
    content_type: str | None
    data: bytes
    url: str
    description: str | None = None

    def payload(self) -> JSON:
        """Discord's attachment object."""
        out: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            out["description"] = self.description
        size = _png_size(self.data)
        if size is not None:
            out["width"], out["height"] = size
        return out


@dataclass
class FakeMessage:
    """A message stored by the fake, with every previous version kept in ``history``."""

    id: int
    channel_id: int
    guild_id: int | None
    content: str
    embeds: list[JSON]
    components: list[JSON]
    flags: int
    attachments: list[StoredAttachment]
    timestamp: dt.datetime
    kind: str  # "channel" (bot token), "interaction" (original response), "followup"
    type: int = 0
    interaction_id: int | None = None
    edited_timestamp: dt.datetime | None = None
    deleted: bool = False
    history: list[JSON] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        """True for messages only the invoking user sees (flag 64)."""
        return bool(self.flags & F_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while a deferred response still shows "thinking…"."""
        return bool(self.flags & F_LOADING)

    def snapshot(self) -> JSON:
        """The visible state of this version (for ``history``)."""
        return {
            "content": self.content,
            "embeds": json.loads(json.dumps(self.embeds)),
            "components": json.loads(json.dumps(self.components)),
            "flags": self.flags,
            "attachments": [a.filename for a in self.attachments],
            "edited_timestamp": self.edited_timestamp,
        }

    @property
    def versions(self) -> list[JSON]:
        """All versions, oldest first, the current one last."""
        return [*self.history, self.snapshot()]

    @property
    def contents(self) -> list[str]:
        """The content of every version, oldest first."""
        return [v["content"] for v in self.versions]

    def custom_ids(self) -> list[str]:
        """Every custom_id in the message's components (any nesting)."""
        return [c["custom_id"] for c in _walk_components(self.components) if "custom_id" in c]


@dataclass
class CallbackRecord:
    """The accepted initial response to an interaction."""

    type: int
    data: JSON | None
    files: list[RecordedFile]
    at: float


class InteractionHandle:
    """An interaction the fake sent to the bot, and what the bot did with it."""

    def __init__(
        self,
        fake: FakeDiscord,
        payload: JSON,
        *,
        created_at: float,
        upload_limit: int,
    ) -> None:
        self._fake = fake
        self.payload = payload
        self.id: int = int(payload["id"])
        self.token: str = payload["token"]
        self.type: int = payload["type"]
        self.guild_id: int | None = int(payload["guild_id"]) if payload.get("guild_id") else None
        self.channel_id: int = int(payload["channel_id"])
        user = payload["member"]["user"] if "member" in payload else payload["user"]
        self.user_id: int = int(user["id"])
        self.message_id: int | None = int(payload["message"]["id"]) if "message" in payload else None
        self.created_at = created_at
        self.upload_limit = upload_limit
        self.response: CallbackRecord | None = None
        self.rejected: list[tuple[int, int]] = []  # (status, code) of refused callbacks
        self.original_message_id: int | None = None
        self.followup_ids: list[int] = []
        self._responded = asyncio.Event()

    def __repr__(self) -> str:
        return f"<InteractionHandle id={self.id} type={self.type} response={self.response and self.response.type}>"

    async def wait_response(self, timeout: float = 5.0) -> CallbackRecord:
        """Wait (real time) for the bot's initial response and return it."""
        try:
            await asyncio.wait_for(self._responded.wait(), timeout)
        except TimeoutError:
            seen = [f"{r.method} {r.path} -> {r.status}" for r in self._fake.requests[-10:]]
            raise TimeoutError(
                f"bot did not answer interaction {self.id} within {timeout}s; last requests: {seen}"
            ) from None
        assert self.response is not None
        return self.response

    @property
    def original(self) -> FakeMessage | None:
        """The message the initial response created or updated (None before/without one)."""
        if self.original_message_id is None:
            return None
        return self._fake.message(self.original_message_id)

    @property
    def followups(self) -> list[FakeMessage]:
        """Followup messages sent with this interaction's token."""
        return [self._fake.message(mid) for mid in self.followup_ids]

    @property
    def choices(self) -> list[JSON]:
        """The autocomplete choices of a type-8 response."""
        if self.response is None or self.response.type != CB_AUTOCOMPLETE:
            raise AssertionError(f"interaction {self.id} has no autocomplete response: {self.response}")
        return list((self.response.data or {}).get("choices", []))


@dataclass(eq=False)
class GatewaySession:
    """A gateway session (survives reconnects when the client RESUMEs)."""

    session_id: str
    identify: JSON
    seq: int = 0
    sent: list[JSON] = field(default_factory=list)
    resumable: bool = True
    resumes: int = 0
    heartbeats: int = 0
    compressed: bool = False
    conn: _Connection | None = None

    @property
    def intents(self) -> int | None:
        """The intents the client identified with."""
        return self.identify.get("intents")

    @property
    def connected(self) -> bool:
        """True while a websocket is attached."""
        return self.conn is not None and not self.conn.ws.closed


@dataclass(eq=False)  # hashed by identity: kept in a set of live connections
class _Connection:
    ws: web.WebSocketResponse
    compressor: Any  # zlib compressobj or None (plain text frames)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: GatewaySession | None = None
    heartbeats: int = 0

    async def send(self, payload: JSON) -> None:
        text = json.dumps(payload)
        # The compressor is one zlib stream per connection: compress+send under one lock so frames
        # reach the client in the order the stream was produced.
        async with self.lock:
            if self.ws.closed:
                return
            if self.compressor is not None:
                data = self.compressor.compress(text.encode()) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(text)


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: int
    retry_after: float | None
    message: str | None
    times: int
    is_global: bool


class DiscordError(Exception):
    """Raised inside handlers; becomes Discord's JSON error body."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str | None = None,
        *,
        errors: JSON | None = None,
        headers: Mapping[str, str] | None = None,
        extra: JSON | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message or ERROR_MESSAGES.get(code, '')}")
        self.status = status
        self.code = code
        self.message = message or ERROR_MESSAGES.get(code, "General error")
        self.errors = errors
        self.headers = dict(headers or {})
        self.extra = extra or {}

    def body(self) -> JSON:
        """Discord's error body."""
        out: JSON = {"message": self.message, "code": self.code}
        if self.errors:
            out["errors"] = self.errors
        out.update(self.extra)
        return out


class _FormErrors:
    """Collects Discord's nested 50035 ``errors`` object (``{"content": {"_errors": [...]}}``)."""

    def __init__(self) -> None:
        self.errors: JSON = {}

    def add(self, path: Sequence[str | int], code: str, message: str) -> None:
        node = self.errors
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def raise_if_any(self) -> None:
        if self.errors:
            raise DiscordError(400, 50035, errors=self.errors)


@dataclass
class _Ctx:
    request: web.Request
    match: re.Match[str]
    rec: RecordedRequest
    body: Any
    files: list[RecordedFile]


Handler = Callable[[_Ctx], Awaitable[Any]]


# --------------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------------


class FakeDiscord:
    """Fake Discord REST API + gateway on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        application_id: int = APPLICATION_ID,
        bot_name: str = "comfykube-test",
        guilds: Sequence[GuildSpec] | None = None,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        interaction_deadline: float = INTERACTION_DEADLINE_S,
        token_lifetime: float = TOKEN_LIFETIME_S,
        heartbeat_interval_ms: int = 41250,
        app_permissions: int = EVERYONE_PERMISSIONS | P_MANAGE_MESSAGES,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.bot_user_id = application_id
        self.bot_name = bot_name
        self.guilds: list[GuildSpec] = list(guilds) if guilds is not None else [default_guild()]
        self.upload_limit = upload_limit
        self.interaction_deadline = interaction_deadline
        self.token_lifetime = token_lifetime
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.app_permissions = app_permissions
        self.host = host
        self.port = port

        self.requests: list[RecordedRequest] = []
        self.unhandled: list[RecordedRequest] = []
        self.sessions: list[GatewaySession] = []
        self.interactions: dict[int, InteractionHandle] = {}
        self._by_token: dict[str, InteractionHandle] = {}
        self._messages: dict[int, FakeMessage] = {}
        self.uploads: dict[int, StoredAttachment] = {}  # attachment options sent with slash commands
        #: Signs the CDN URLs of those uploads (Discord's ``ex``/``is``/``hm`` query; unsigned → 404).
        self._cdn_key = secrets.token_bytes(16)
        #: How long a signed attachment URL works (Discord: 24 h).
        self.attachment_url_lifetime = 24 * 3600.0
        #: Requests for uploaded attachments, as (path, status) — what the bot downloaded.
        self.attachment_fetches: list[tuple[str, int]] = []
        self._dm_channels: dict[int, JSON] = {}
        self._commands: dict[int | None, list[JSON]] = {}
        self._command_ids: dict[tuple[int | None, int, str], int] = {}
        self._failures: list[_Failure] = []
        self._connections: set[_Connection] = set()

        self._offset = 0.0
        self._mono0 = time.monotonic()
        self._wall0 = dt.datetime.now(dt.UTC)
        self._last_snowflake = 0
        self._runner: web.AppRunner | None = None
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = self._build_routes()

    # ----- lifecycle --------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        """Bind to ``host:port`` (port 0 picks a free one) and serve."""
        # aiohttp's default body cap is 1 MiB; allow well beyond the upload limit so that the fake,
        # not aiohttp, answers oversized uploads with Discord's 413/40005.
        app = web.Application(client_max_size=max(64 * 1024 * 1024, self.upload_limit * 12))
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{cid}/{aid}/{filename}", self._serve_attachment)
        app.router.add_get("/cdn/ephemeral-attachments/{owner}/{aid}/{filename}", self._serve_upload)
        app.router.add_get("/cdn/{tail:.*}", self._serve_cdn)
        app.router.add_route("*", "/api/{tail:.*}", self._api)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close gateway sockets and stop serving."""
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----- addresses --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """Value for ``discord.http.Route.BASE``."""
        return f"{self.base_url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        """Value for ``DiscordWebSocket.DEFAULT_GATEWAY`` (and READY's ``resume_gateway_url``)."""
        return f"ws://{self.host}:{self.port}/gateway"

    @property
    def cdn_base(self) -> str:
        """Value for ``discord.asset.Asset.BASE``."""
        return f"{self.base_url}/cdn"

    def env(self) -> dict[str, str]:
        """Environment for a bot subprocess pointed at this fake."""
        return {
            "DISCORD_API_BASE": self.api_base,
            "DISCORD_GATEWAY_URL": self.gateway_url,
            "DISCORD_CDN_BASE": self.cdn_base,
            "DISCORD_TOKEN": self.token,
        }

    # ----- clock ------------------------------------------------------------------------------

    def now(self) -> float:
        """Fake monotonic seconds: real elapsed time plus everything ``advance`` added."""
        return time.monotonic() + self._offset

    def wall_now(self) -> dt.datetime:
        """Fake UTC wall clock (used for snowflakes and timestamps)."""
        return self._wall0 + dt.timedelta(seconds=self.now() - self._mono0)

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward (token lifetimes, deadlines, timestamps)."""
        if seconds < 0:
            raise ValueError("the fake clock only moves forward")
        self._offset += seconds

    def snowflake(self) -> int:
        """A new, strictly increasing snowflake stamped with the fake wall clock."""
        ms = int(self.wall_now().timestamp() * 1000)
        value = ((ms - DISCORD_EPOCH_MS) << 22) | (1 << 17)
        value = max(value, self._last_snowflake + 1)
        self._last_snowflake = value
        return value

    # ----- config lookups ---------------------------------------------------------------------

    @property
    def guild(self) -> GuildSpec:
        """The first configured guild."""
        return self.guilds[0]

    @property
    def guild_id(self) -> int:
        """Id of the first configured guild."""
        return self.guild.id

    @property
    def channel_id(self) -> int:
        """The first non-NSFW text channel of the first guild."""
        return next(c.id for c in self.guild.channels if not c.nsfw)

    @property
    def nsfw_channel_id(self) -> int:
        """The first NSFW text channel of the first guild."""
        return next(c.id for c in self.guild.channels if c.nsfw)

    @property
    def role_ids(self) -> dict[str, int]:
        """Role name → id for the first guild."""
        return {r.name: r.id for r in self.guild.roles}

    @property
    def user_ids(self) -> dict[str, int]:
        """Member username → id for the first guild."""
        return {m.username: m.id for m in self.guild.members}

    def _guild(self, guild_id: int) -> GuildSpec | None:
        return next((g for g in self.guilds if g.id == guild_id), None)

    def _channel(self, channel_id: int) -> tuple[GuildSpec | None, ChannelSpec | None]:
        for g in self.guilds:
            for c in g.channels:
                if c.id == channel_id:
                    return g, c
        return None, None

    # ----- observation helpers ----------------------------------------------------------------

    def message(self, message_id: int) -> FakeMessage:
        """A stored message (deleted ones too, with ``deleted=True``); KeyError if never seen."""
        return self._messages[int(message_id)]

    def messages_in(self, channel_id: int, *, include_deleted: bool = False) -> list[FakeMessage]:
        """Messages of a channel, oldest first (ephemeral ones included, see ``.ephemeral``)."""
        return [m for m in self._messages.values() if m.channel_id == channel_id and (include_deleted or not m.deleted)]

    def commands(self, guild_id: int | None = None) -> list[JSON]:
        """Registered application commands (global, or of one guild)."""
        return list(self._commands.get(guild_id, []))

    def command(self, name: str, guild_id: int | None = None, type: int = 1) -> JSON | None:
        """One registered command by name."""
        return next((c for c in self._commands.get(guild_id, []) if c["name"] == name and c["type"] == type), None)

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        """Recorded requests whose method matches (``*`` = any) and path matches ``path_regex``."""
        pattern = re.compile(path_regex)
        return [r for r in self.requests if method in ("*", r.method) and pattern.search(r.path)]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
        """Poll ``predicate`` (real time) until it returns something truthy; return that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.01)

    async def wait_for_request(
        self, method: str, path_regex: str, *, count: int = 1, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """Wait until at least ``count`` matching requests were answered; return them."""

        def answered() -> list[RecordedRequest] | None:
            found = [r for r in self.requests_to(method, path_regex) if r.status]
            return found if len(found) >= count else None

        return await self.wait_for(answered, timeout, f"{count}x {method} {path_regex}")

    # ----- fault injection --------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        code: int = 0,
        retry_after: float | None = None,
        *,
        message: str | None = None,
        times: int = 1,
        is_global: bool = False,
    ) -> None:
        """Answer the next ``times`` matching requests with an error instead of handling them.

        ``path_regex`` is searched in the path after ``/api/v10`` (anchor it if needed); ``method``
        may be ``*``. A 429 carries ``retry_after`` (default 0.05 s), ``Via`` and ``X-RateLimit-*``
        headers, so discord.py sleeps and retries like it does against Discord.
        """
        self._failures.append(
            _Failure(method.upper(), re.compile(path_regex), status, code, retry_after, message, times, is_global)
        )

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        for failure in self._failures:
            if failure.method in ("*", method) and failure.pattern.search(path):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _failure_error(self, failure: _Failure) -> DiscordError:
        if failure.status != 429:
            return DiscordError(failure.status, failure.code, failure.message)
        retry_after = 0.05 if failure.retry_after is None else failure.retry_after
        reset = time.time() + retry_after
        headers = {
            # discord.py only retries a 429 that carries Via (otherwise it assumes a Cloudflare ban).
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{reset:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Bucket": "fakebucket",
            "X-RateLimit-Scope": "global" if failure.is_global else "user",
        }
        if failure.is_global:
            headers["X-RateLimit-Global"] = "true"
        extra: JSON = {"retry_after": retry_after, "global": failure.is_global}
        error = DiscordError(
            429, failure.code, failure.message or "You are being rate limited.", headers=headers, extra=extra
        )
        return error

    # ----- HTTP plumbing ----------------------------------------------------------------------

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        app = r"(?P<app>\d+)"
        guild = r"(?P<gid>\d+)"
        table: list[tuple[str, str, Handler]] = [
            ("GET", r"/users/@me", self._h_me),
            ("POST", r"/users/@me/channels", self._h_create_dm),
            ("GET", r"/oauth2/applications/@me", self._h_app_info),
            ("GET", r"/applications/@me", self._h_app_info),
            ("GET", r"/gateway", self._h_gateway),
            ("GET", r"/gateway/bot", self._h_gateway_bot),
            ("GET", rf"/applications/{app}/commands", self._h_get_commands),
            ("PUT", rf"/applications/{app}/commands", self._h_put_commands),
            ("POST", rf"/applications/{app}/commands", self._h_post_command),
            ("GET", rf"/applications/{app}/guilds/{guild}/commands", self._h_get_commands),
            ("PUT", rf"/applications/{app}/guilds/{guild}/commands", self._h_put_commands),
            ("POST", rf"/applications/{app}/guilds/{guild}/commands", self._h_post_command),
            ("DELETE", rf"/applications/{app}/commands/(?P<cmd>\d+)", self._h_delete_command),
            ("DELETE", rf"/applications/{app}/guilds/{guild}/commands/(?P<cmd>\d+)", self._h_delete_command),
            ("POST", r"/interactions/(?P<iid>\d+)/(?P<token>[^/]+)/callback", self._h_callback),
            ("POST", rf"/webhooks/{app}/(?P<token>[^/]+)", self._h_followup),
            ("GET", rf"/webhooks/{app}/(?P<token>[^/]+)/messages/(?P<mid>@original|\d+)", self._h_wh_get),
            ("PATCH", rf"/webhooks/{app}/(?P<token>[^/]+)/messages/(?P<mid>@original|\d+)", self._h_wh_edit),
            ("DELETE", rf"/webhooks/{app}/(?P<token>[^/]+)/messages/(?P<mid>@original|\d+)", self._h_wh_delete),
            ("GET", r"/channels/(?P<cid>\d+)", self._h_get_channel),
            ("GET", r"/channels/(?P<cid>\d+)/messages", self._h_list_messages),
            ("POST", r"/channels/(?P<cid>\d+)/messages", self._h_create_message),
            ("GET", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)", self._h_get_message),
            ("PATCH", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)", self._h_edit_message),
            ("DELETE", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)", self._h_delete_message),
            ("GET", rf"/guilds/{guild}", self._h_get_guild),
            ("GET", rf"/guilds/{guild}/channels", self._h_guild_channels),
            ("GET", rf"/guilds/{guild}/members/(?P<uid>\d+)", self._h_guild_member),
        ]
        return [(m, re.compile(f"^{p}$"), h) for m, p, h in table]

    @staticmethod
    def _json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
        # Exactly "application/json": aiohttp's json_response adds "; charset=utf-8", which makes
        # discord.py treat the body as text (login then crashes).
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        return web.Response(status=status, body=json.dumps(payload).encode(), headers=hdrs)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[RecordedFile]]:
        ctype = request.content_type
        if ctype.startswith("multipart/"):
            payload: Any = None
            files: list[RecordedFile] = []
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    continue  # nested multipart: Discord does not use it
                name = part.name or ""
                data = bytes(await part.read(decode=False))
                if name == "payload_json":
                    payload = json.loads(data.decode())
                else:
                    files.append(RecordedFile(name, part.filename or name, part.headers.get("Content-Type"), data))
            return payload, files
        raw = await request.read()
        if not raw:
            return None, []
        try:
            return json.loads(raw), []
        except ValueError:
            raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None

    async def _api(self, request: web.Request) -> web.StreamResponse:
        m = re.match(r"^/api/v\d+(?P<rest>/.*)$", request.path)
        path = m.group("rest") if m else request.path
        rec = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            json=None,
            files=[],
            at=self.now(),
            token=None,
            auth=request.headers.get("Authorization"),
        )
        self.requests.append(rec)
        try:
            body, files = await self._read_body(request)
            rec.json, rec.files = body, files
            for method, pattern, handler in self._routes:
                match = pattern.match(path)
                if match is None or method != request.method:
                    continue
                rec.token = match.groupdict().get("token")
                failure = self._take_failure(request.method, path)
                if failure is not None:
                    rec.injected = True
                    raise self._failure_error(failure)
                result = await handler(_Ctx(request, match, rec, body, files))
                if result is None:
                    rec.status = 204
                    return web.Response(status=204)
                rec.status, rec.response = 200, result
                return self._json_response(200, result)
            self.unhandled.append(rec)
            raise DiscordError(404, 0, "404: Not Found")
        except DiscordError as exc:
            rec.status, rec.response = exc.status, exc.body()
            return self._json_response(exc.status, exc.body(), exc.headers)

    def _require_bot(self, ctx: _Ctx) -> None:
        if ctx.rec.auth != f"Bot {self.token}":
            raise DiscordError(401, 0, "401: Unauthorized")

    def _require_app(self, ctx: _Ctx) -> None:
        if int(ctx.match.group("app")) != self.application_id:
            raise DiscordError(403, 50001)

    async def _serve_attachment(self, request: web.Request) -> web.StreamResponse:
        aid = int(request.match_info["aid"])
        for msg in self._messages.values():
            for att in msg.attachments:
                if att.id == aid:
                    return web.Response(body=att.data, content_type=att.content_type or "application/octet-stream")
        if aid in self.uploads:
            upload = self.uploads[aid]
            return web.Response(body=upload.data, content_type=upload.content_type or "application/octet-stream")
        return web.Response(status=404, text="asset not found")

    def _signed_upload_url(self, aid: int, filename: str) -> str:
        """A CDN URL like Discord's for a slash-command upload: ``…/ephemeral-attachments/APP/ID/NAME?ex&is&hm``."""
        path = f"/cdn/ephemeral-attachments/{self.application_id}/{aid}/{quote(filename)}"
        issued = int(self.wall_now().timestamp())
        query = f"ex={issued + int(self.attachment_url_lifetime):x}&is={issued:x}"
        return f"{self.base_url}{path}?{query}&hm={self._cdn_signature(path, query)}&"

    def _cdn_signature(self, path: str, query: str) -> str:
        return hmac.new(self._cdn_key, f"{path}?{query}".encode(), hashlib.sha256).hexdigest()

    async def _serve_upload(self, request: web.Request) -> web.StreamResponse:
        """An uploaded attachment, as Discord's CDN serves it: only with a valid, unexpired signature."""
        status, response = self._upload_response(request)
        self.attachment_fetches.append((request.path, status))
        return response

    def _upload_response(self, request: web.Request) -> tuple[int, web.StreamResponse]:
        gone = web.Response(status=404, text="This content is no longer available.")
        ex, issued, hm = (request.query.get(k, "") for k in ("ex", "is", "hm"))
        try:
            expires = int(ex, 16)
        except ValueError:
            return 404, gone
        expected = self._cdn_signature(request.raw_path.split("?")[0], f"ex={ex}&is={issued}")
        if not hmac.compare_digest(hm, expected) or expires < self.wall_now().timestamp():
            return 404, gone
        upload = self.uploads.get(int(request.match_info["aid"])) if request.match_info["aid"].isdigit() else None
        if upload is None or quote(upload.filename) != quote(request.match_info["filename"]):
            return 404, gone
        return 200, web.Response(body=upload.data, content_type=upload.content_type or "application/octet-stream")

    async def _serve_cdn(self, request: web.Request) -> web.StreamResponse:
        # Avatars/icons: every asset is the same 1x1 PNG, enough for a bot that fetches one.
        return web.Response(body=TINY_PNG, content_type="image/png")

    # ----- payload builders -------------------------------------------------------------------

    def _iso(self, when: dt.datetime | None = None) -> str:
        return (when or self.wall_now()).isoformat()

    def bot_user_payload(self) -> JSON:
        """The bot's user object."""
        return {
            "id": str(self.bot_user_id),
            "username": self.bot_name,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "flags": 0,
            "public_flags": 0,
            "mfa_enabled": False,
            "verified": True,
            "email": None,
            "locale": "en-US",
        }

    @staticmethod
    def _user_payload(member: MemberSpec) -> JSON:
        return {
            "id": str(member.id),
            "username": member.username,
            "discriminator": "0",
            "global_name": member.username.title(),
            "avatar": None,
            "bot": member.bot,
            "public_flags": 0,
        }

    def _member_payload(self, guild: GuildSpec, member: MemberSpec, *, with_permissions: bool = False) -> JSON:
        out: JSON = {
            "user": self._user_payload(member),
            "roles": [str(r) for r in member.roles],
            "nick": member.nick,
            "avatar": None,
            "joined_at": self._iso(self._wall0 - dt.timedelta(days=30)),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_permissions:
            out["permissions"] = str(self._permissions(guild, member.roles))
        return out

    @staticmethod
    def _permissions(guild: GuildSpec, roles: Iterable[int]) -> int:
        role_ids = set(roles) | {guild.id}
        value = 0
        for role in guild.roles:
            if role.id in role_ids:
                value |= role.permissions
        return ALL_PERMISSIONS if value & P_ADMINISTRATOR else value

    @staticmethod
    def _channel_payload(guild: GuildSpec | None, channel: ChannelSpec) -> JSON:
        out: JSON = {
            "id": str(channel.id),
            "type": channel.type,
            "name": channel.name,
            "position": channel.position,
            "permission_overwrites": [],
            "nsfw": channel.nsfw,
            "topic": channel.topic,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }
        if guild is not None:
            out["guild_id"] = str(guild.id)
        return out

    def _guild_payload(self, guild: GuildSpec) -> JSON:
        bot = MemberSpec(self.bot_user_id, self.bot_name, (), bot=True)
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": guild.premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "features": [],
            "roles": [
                {
                    "id": str(r.id),
                    "name": r.name,
                    "permissions": str(r.permissions),
                    "position": r.position,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
                for r in guild.roles
            ],
            "emojis": [],
            "stickers": [],
            "channels": [self._channel_payload(None, c) for c in guild.channels],
            "threads": [],
            "members": [self._member_payload(guild, m) for m in [bot, *guild.members]],
            "member_count": len(guild.members) + 1,
            "large": False,
            "unavailable": False,
            "joined_at": self._iso(self._wall0 - dt.timedelta(days=30)),
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "max_members": 500000,
            "vanity_url_code": None,
            "premium_progress_bar_enabled": False,
        }

    def message_payload(self, msg: FakeMessage) -> JSON:
        """The message object as Discord returns it."""
        out: JSON = {
            "id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "author": self.bot_user_payload(),
            "content": msg.content,
            "timestamp": self._iso(msg.timestamp),
            "edited_timestamp": self._iso(msg.edited_timestamp) if msg.edited_timestamp else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.payload() for a in msg.attachments],
            "embeds": msg.embeds,
            "components": msg.components,
            "pinned": False,
            "type": msg.type,
            "flags": msg.flags,
        }
        if msg.guild_id is not None:
            out["guild_id"] = str(msg.guild_id)
        if msg.interaction_id is not None:
            handle = self.interactions.get(msg.interaction_id)
            out["webhook_id"] = str(self.application_id)
            out["application_id"] = str(self.application_id)
            if handle is not None:
                out["interaction_metadata"] = {
                    "id": str(handle.id),
                    "type": handle.type,
                    "user": (handle.payload.get("member") or {}).get("user") or handle.payload.get("user"),
                    "authorizing_integration_owners": handle.payload["authorizing_integration_owners"],
                }
        return out

    # ----- message validation and storage ------------------------------------------------------

    def _validate_message(
        self, body: JSON, files: list[RecordedFile], *, attachments_total: int, limit: int, creating: bool
    ) -> None:
        for f in files:
            if len(f.data) > limit:
                raise DiscordError(413, 40005)
        errors = _FormErrors()
        content = body.get("content")
        if content is not None:
            if not isinstance(content, str):
                errors.add(["content"], "BASE_TYPE_STRING", "Must be a string.")
            elif len(content) > 2000:
                errors.add(["content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        embeds = body.get("embeds") or []
        if len(embeds) > 10:
            errors.add(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        total = 0
        for i, embed in enumerate(embeds):
            total += _validate_embed(embed, ["embeds", i], errors)
        if total > 6000:
            errors.add(["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        if attachments_total > 10:
            errors.add(["attachments"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        flags = int(body.get("flags") or 0)
        _validate_components(body.get("components") or [], flags, errors)
        errors.raise_if_any()
        if creating and not (
            content or embeds or body.get("components") or files or body.get("sticker_ids") or body.get("poll")
        ):
            raise DiscordError(400, 50006)

    def _make_attachments(
        self,
        channel_id: int,
        spec: list[JSON] | None,
        files: list[RecordedFile],
        existing: list[StoredAttachment],
    ) -> list[StoredAttachment]:
        by_index: dict[int, RecordedFile] = {}
        for pos, f in enumerate(files):
            m = _FILE_FIELD_RE.match(f.field)
            by_index[int(m.group(1)) if m else pos] = f

        def new(f: RecordedFile, meta: JSON | None = None) -> StoredAttachment:
            aid = self.snowflake()
            filename = (meta or {}).get("filename") or f.filename
            url = f"{self.base_url}/attachments/{channel_id}/{aid}/{quote(filename)}"
            return StoredAttachment(aid, filename, f.content_type, f.data, url, (meta or {}).get("description"))

        if spec is None:
            return [*existing, *(new(f) for f in by_index.values())]
        kept: list[StoredAttachment] = []
        used: set[int] = set()
        old = {a.id: a for a in existing}
        errors = _FormErrors()
        for i, meta in enumerate(spec):
            try:
                aid = int(meta["id"])
            except (KeyError, TypeError, ValueError):
                errors.add(["attachments", i, "id"], "BASE_TYPE_REQUIRED", "This field is required")
                continue
            if aid in by_index and aid not in used:
                used.add(aid)
                kept.append(new(by_index[aid], meta))
            elif aid in old:
                kept.append(old[aid])
            else:
                errors.add(["attachments", i, "id"], "ATTACHMENT_NOT_FOUND", "Unknown attachment")
        errors.raise_if_any()
        # Uploaded files that payload_json did not describe are still attached (Discord does so).
        kept.extend(new(f) for idx, f in by_index.items() if idx not in used)
        return kept

    def _create_message(
        self,
        channel_id: int,
        guild_id: int | None,
        body: JSON,
        files: list[RecordedFile],
        *,
        kind: str,
        limit: int,
        interaction: InteractionHandle | None = None,
        msg_type: int = 0,
        flags_mask: int = 0,
    ) -> FakeMessage:
        spec = body.get("attachments")
        total = len(spec) if spec is not None else len(files)
        self._validate_message(body, files, attachments_total=max(total, len(files)), limit=limit, creating=True)
        msg = FakeMessage(
            id=self.snowflake(),
            channel_id=channel_id,
            guild_id=guild_id,
            content=body.get("content") or "",
            embeds=list(body.get("embeds") or []),
            components=list(body.get("components") or []),
            flags=int(body.get("flags") or 0) & (flags_mask | F_COMPONENTS_V2 | (1 << 2) | (1 << 12)),
            attachments=[],
            timestamp=self.wall_now(),
            kind=kind,
            type=msg_type,
            interaction_id=interaction.id if interaction else None,
        )
        msg.attachments = self._make_attachments(channel_id, spec, files, [])
        self._messages[msg.id] = msg
        return msg

    def _edit_message(
        self, msg: FakeMessage, body: JSON, files: list[RecordedFile], *, limit: int, clear_loading: bool
    ) -> FakeMessage:
        body = body or {}
        spec = body.get("attachments")
        total = (len(spec) if spec is not None else len(msg.attachments)) + (len(files) if spec is None else 0)
        self._validate_message(body, files, attachments_total=total, limit=limit, creating=False)
        msg.history.append(msg.snapshot())
        if "content" in body:
            msg.content = body["content"] or ""
        if "embeds" in body:
            msg.embeds = list(body["embeds"] or [])
        if "components" in body:
            msg.components = list(body["components"] or [])
        if "flags" in body and body["flags"] is not None:
            # Ephemerality is fixed at creation; only display flags can change.
            keep = msg.flags & (F_EPHEMERAL | F_LOADING)
            msg.flags = keep | (int(body["flags"]) & ~(F_EPHEMERAL | F_LOADING))
        if clear_loading:
            msg.flags &= ~F_LOADING
        if spec is not None or files:
            msg.attachments = self._make_attachments(msg.channel_id, spec, files, msg.attachments)
        msg.edited_timestamp = self.wall_now()
        return msg

    # ----- REST handlers: identity and gateway ------------------------------------------------

    async def _h_me(self, ctx: _Ctx) -> JSON:
        self._require_bot(ctx)
        return self.bot_user_payload()

    def _member_anywhere(self, user_id: int) -> MemberSpec | None:
        return next((m for g in self.guilds for m in g.members if m.id == user_id), None)

    def _dm_of(self, user_id: int) -> tuple[int, JSON] | None:
        for cid, channel in self._dm_channels.items():
            if any(int(r["id"]) == user_id for r in channel.get("recipients") or ()):
                return cid, channel
        return None

    def dm_channel_id(self, user_id: int) -> int | None:
        """The id of the user's DM channel with the bot, once one exists (an interaction or Create DM)."""
        found = self._dm_of(user_id)
        return found[0] if found else None

    async def _h_create_dm(self, ctx: _Ctx) -> JSON:
        # Create DM: one DM channel per user; asking again returns the same one.
        self._require_bot(ctx)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        raw = body.get("recipient_id")
        if not str(raw or "").isdigit():
            errors = _FormErrors()
            errors.add(["recipient_id"], "NUMBER_TYPE_COERCE", f"Value \"{raw}\" is not snowflake.")
            errors.raise_if_any()
        uid = int(str(raw))
        found = self._dm_of(uid)
        if found is not None:
            return dict(found[1])
        member = self._member_anywhere(uid)
        if member is None:
            raise DiscordError(404, 10013)
        cid = uid + 7  # the id DM interactions of this user use (``_resolve_channel``)
        channel: JSON = {"id": str(cid), "type": 1, "recipients": [self._user_payload(member)],
                         "last_message_id": None, "flags": 0}
        self._dm_channels[cid] = channel
        return dict(channel)

    async def _h_app_info(self, ctx: _Ctx) -> JSON:
        self._require_bot(ctx)
        owner = self.guild.members[-1] if self.guilds and self.guild.members else MemberSpec(1, "owner")
        return {
            "id": str(self.application_id),
            "name": self.bot_name,
            "icon": None,
            "description": "fake comfykube application",
            "summary": "",
            "type": None,
            "bot_public": False,
            "bot_require_code_grant": False,
            "owner": self._user_payload(owner),
            "team": None,
            "verify_key": "00" * 32,
            "flags": 0,
            "bot": self.bot_user_payload(),
            "rpc_origins": [],
            "tags": [],
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
            "integration_types_config": {"0": {}},
            "approximate_guild_count": len(self.guilds),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
        }

    async def _h_gateway(self, ctx: _Ctx) -> JSON:
        return {"url": self.gateway_url}

    async def _h_gateway_bot(self, ctx: _Ctx) -> JSON:
        self._require_bot(ctx)
        return {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
        }

    # ----- REST handlers: application commands -------------------------------------------------

    def _commands_scope(self, ctx: _Ctx) -> int | None:
        self._require_bot(ctx)
        self._require_app(ctx)
        gid = ctx.match.groupdict().get("gid")
        if gid is None:
            return None
        if self._guild(int(gid)) is None:
            raise DiscordError(403, 50001)
        return int(gid)

    def _store_command(self, scope: int | None, data: JSON) -> JSON:
        ctype = int(data.get("type") or 1)
        key = (scope, ctype, data["name"])
        cid = self._command_ids.setdefault(key, self.snowflake())
        stored: JSON = {
            "id": str(cid),
            "application_id": str(self.application_id),
            "version": str(self.snowflake()),
            "type": ctype,
            "name": data["name"],
            "description": data.get("description") or "",
            "options": data.get("options") or [],
            "default_member_permissions": data.get("default_member_permissions"),
            "dm_permission": data.get("dm_permission", True),
            "nsfw": bool(data.get("nsfw", False)),
            "contexts": data.get("contexts"),
            "integration_types": data.get("integration_types") or [0],
            "name_localizations": data.get("name_localizations"),
            "description_localizations": data.get("description_localizations"),
        }
        if scope is not None:
            stored["guild_id"] = str(scope)
        return stored

    async def _h_get_commands(self, ctx: _Ctx) -> list[JSON]:
        return self.commands(self._commands_scope(ctx))

    async def _h_put_commands(self, ctx: _Ctx) -> list[JSON]:
        scope = self._commands_scope(ctx)
        body = ctx.body
        if not isinstance(body, list):
            errors = _FormErrors()
            errors.add([], "BASE_TYPE_ARRAY", "Must be an array")
            errors.raise_if_any()
        errors = _FormErrors()
        _validate_commands(body, errors)
        errors.raise_if_any()
        self._commands[scope] = [self._store_command(scope, c) for c in body]
        return self.commands(scope)

    async def _h_post_command(self, ctx: _Ctx) -> JSON:
        scope = self._commands_scope(ctx)
        errors = _FormErrors()
        _validate_command(ctx.body or {}, [], errors)
        errors.raise_if_any()
        stored = self._store_command(scope, ctx.body)
        key = (stored["name"], stored["type"])
        current = [c for c in self._commands.get(scope, []) if (c["name"], c["type"]) != key]
        self._commands[scope] = [*current, stored]
        return stored

    async def _h_delete_command(self, ctx: _Ctx) -> None:
        scope = self._commands_scope(ctx)
        cid = ctx.match.group("cmd")
        current = self._commands.get(scope, [])
        if not any(c["id"] == cid for c in current):
            raise DiscordError(404, 10063)
        self._commands[scope] = [c for c in current if c["id"] != cid]
        return None

    # ----- REST handlers: interactions and webhooks --------------------------------------------

    async def _h_callback(self, ctx: _Ctx) -> JSON:
        handle = self.interactions.get(int(ctx.match.group("iid")))
        if handle is None or handle.token != ctx.match.group("token"):
            raise DiscordError(404, 10062)
        try:
            return await self._accept_callback(handle, ctx)
        except DiscordError as exc:
            handle.rejected.append((exc.status, exc.code))
            raise

    async def _accept_callback(self, handle: InteractionHandle, ctx: _Ctx) -> JSON:
        if handle.response is not None:
            raise DiscordError(400, 40060)
        if self.now() - handle.created_at > self.interaction_deadline:
            raise DiscordError(404, 10062)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        cb_type = body.get("type")
        data = body.get("data") or {}
        if cb_type not in ALLOWED_CALLBACKS.get(handle.type, frozenset()):
            raise DiscordError(
                400,
                50035,
                errors={
                    "type": {
                        "_errors": [
                            {"code": "INTERACTION_RESPONSE_TYPE_INVALID", "message": f"Invalid response type {cb_type}"}
                        ]
                    }
                },
            )
        message: FakeMessage | None = None
        if cb_type == CB_MESSAGE:
            message = self._create_message(
                handle.channel_id,
                handle.guild_id,
                data,
                ctx.files,
                kind="interaction",
                limit=handle.upload_limit,
                interaction=handle,
                msg_type=20 if handle.type == IT_COMMAND else 19,
                flags_mask=F_EPHEMERAL,
            )
        elif cb_type == CB_DEFERRED:
            # "Thinking…": a new loading message that the first followup or an @original edit fills.
            message = FakeMessage(
                id=self.snowflake(),
                channel_id=handle.channel_id,
                guild_id=handle.guild_id,
                content="",
                embeds=[],
                components=[],
                flags=F_LOADING | (int(data.get("flags") or 0) & F_EPHEMERAL),
                attachments=[],
                timestamp=self.wall_now(),
                kind="interaction",
                type=20 if handle.type == IT_COMMAND else 19,
                interaction_id=handle.id,
            )
            self._messages[message.id] = message
        elif cb_type in (CB_DEFERRED_UPDATE, CB_UPDATE):
            if handle.message_id is None or handle.message_id not in self._messages:
                raise DiscordError(400, 50035, "Interaction has no message to update")
            message = self._messages[handle.message_id]
            if cb_type == CB_UPDATE:
                self._edit_message(message, data, ctx.files, limit=handle.upload_limit, clear_loading=False)
        elif cb_type == CB_AUTOCOMPLETE:
            _validate_choices(data.get("choices") or [], ["data", "choices"])
        elif cb_type == CB_MODAL:
            _validate_modal(data)
        handle.response = CallbackRecord(cb_type, data or None, list(ctx.files), self.now())
        if message is not None:
            handle.original_message_id = message.id
        handle._responded.set()
        result: JSON = {
            "interaction": {
                "id": str(handle.id),
                "type": handle.type,
                "response_message_loading": cb_type == CB_DEFERRED,
                "response_message_ephemeral": bool(message and message.ephemeral),
            },
            "resource": {"type": cb_type},
        }
        if message is not None:
            result["interaction"]["response_message_id"] = str(message.id)
            if cb_type in (CB_MESSAGE, CB_DEFERRED, CB_UPDATE):
                result["resource"]["message"] = self.message_payload(message)
        return result

    def _webhook_handle(self, ctx: _Ctx) -> InteractionHandle:
        if int(ctx.match.group("app")) != self.application_id:
            raise DiscordError(404, 10015)
        handle = self._by_token.get(ctx.match.group("token"))
        if handle is None:
            raise DiscordError(401, 50027)
        if self.now() - handle.created_at > self.token_lifetime:
            raise DiscordError(401, 50027)
        if handle.response is None:
            # The token only becomes a webhook once the interaction was acknowledged.
            raise DiscordError(404, 10015)
        return handle

    def _webhook_message(self, ctx: _Ctx, handle: InteractionHandle) -> FakeMessage:
        mid = ctx.match.group("mid")
        if mid == "@original":
            if handle.original_message_id is None:
                raise DiscordError(404, 10008)
            msg = self._messages[handle.original_message_id]
        else:
            msg_id = int(mid)
            allowed = {handle.original_message_id, *handle.followup_ids}
            if msg_id not in allowed or msg_id not in self._messages:
                raise DiscordError(404, 10008)
            msg = self._messages[msg_id]
        if msg.deleted:
            raise DiscordError(404, 10008)
        return msg

    async def _h_followup(self, ctx: _Ctx) -> JSON | None:
        handle = self._webhook_handle(ctx)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        original = self._messages.get(handle.original_message_id or 0)
        if (
            handle.response is not None
            and handle.response.type == CB_DEFERRED
            and original is not None
            and original.loading
            and not original.deleted
        ):
            # Discord: the first followup after a deferred ("thinking") response replaces the loading
            # message and inherits its ephemerality.
            self._edit_message(original, body, ctx.files, limit=handle.upload_limit, clear_loading=True)
            msg = original
        else:
            msg = self._create_message(
                handle.channel_id,
                handle.guild_id,
                body,
                ctx.files,
                kind="followup",
                limit=handle.upload_limit,
                interaction=handle,
                flags_mask=F_EPHEMERAL,
            )
            handle.followup_ids.append(msg.id)
        wait = ctx.rec.query.get("wait", "false").lower() in ("1", "true")
        return self.message_payload(msg) if wait else None

    async def _h_wh_get(self, ctx: _Ctx) -> JSON:
        handle = self._webhook_handle(ctx)
        return self.message_payload(self._webhook_message(ctx, handle))

    async def _h_wh_edit(self, ctx: _Ctx) -> JSON:
        handle = self._webhook_handle(ctx)
        msg = self._webhook_message(ctx, handle)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        self._edit_message(msg, body, ctx.files, limit=handle.upload_limit, clear_loading=True)
        return self.message_payload(msg)

    async def _h_wh_delete(self, ctx: _Ctx) -> None:
        handle = self._webhook_handle(ctx)
        self._webhook_message(ctx, handle).deleted = True
        return None

    # ----- REST handlers: channels and guilds --------------------------------------------------

    def _known_channel(self, ctx: _Ctx) -> tuple[GuildSpec | None, JSON]:
        self._require_bot(ctx)
        cid = int(ctx.match.group("cid"))
        guild, channel = self._channel(cid)
        if channel is not None:
            return guild, self._channel_payload(guild, channel)
        if cid in self._dm_channels:
            return None, self._dm_channels[cid]
        raise DiscordError(404, 10003)

    def _channel_message(self, ctx: _Ctx) -> FakeMessage:
        self._known_channel(ctx)
        msg = self._messages.get(int(ctx.match.group("mid")))
        # Ephemeral messages only exist for the interaction token, never for the bot token.
        if msg is None or msg.deleted or msg.ephemeral or msg.channel_id != int(ctx.match.group("cid")):
            raise DiscordError(404, 10008)
        return msg

    async def _h_get_channel(self, ctx: _Ctx) -> JSON:
        return self._known_channel(ctx)[1]

    async def _h_list_messages(self, ctx: _Ctx) -> list[JSON]:
        self._known_channel(ctx)
        cid = int(ctx.match.group("cid"))
        limit = min(100, int(ctx.rec.query.get("limit", 50)))
        before = int(ctx.rec.query.get("before", 0)) or None
        after = int(ctx.rec.query.get("after", 0)) or None
        found = [
            m
            for m in self.messages_in(cid)
            if not m.ephemeral and (before is None or m.id < before) and (after is None or m.id > after)
        ]
        found.sort(key=lambda m: m.id, reverse=True)
        return [self.message_payload(m) for m in found[:limit]]

    async def _h_create_message(self, ctx: _Ctx) -> JSON:
        guild, channel = self._known_channel(ctx)
        if guild is None:
            for recipient in channel.get("recipients") or ():
                member = self._member_anywhere(int(recipient["id"]))
                if member is not None and not member.accepts_dms:
                    raise DiscordError(403, 50007)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        msg = self._create_message(
            int(ctx.match.group("cid")),
            guild.id if guild else None,
            body,
            ctx.files,
            kind="channel",
            limit=self.upload_limit,
        )
        return self.message_payload(msg)

    async def _h_get_message(self, ctx: _Ctx) -> JSON:
        return self.message_payload(self._channel_message(ctx))

    async def _h_edit_message(self, ctx: _Ctx) -> JSON:
        msg = self._channel_message(ctx)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        self._edit_message(msg, body, ctx.files, limit=self.upload_limit, clear_loading=False)
        return self.message_payload(msg)

    async def _h_delete_message(self, ctx: _Ctx) -> None:
        self._channel_message(ctx).deleted = True
        return None

    def _known_guild(self, ctx: _Ctx) -> GuildSpec:
        self._require_bot(ctx)
        guild = self._guild(int(ctx.match.group("gid")))
        if guild is None:
            raise DiscordError(404, 10004)
        return guild

    async def _h_get_guild(self, ctx: _Ctx) -> JSON:
        payload = self._guild_payload(self._known_guild(ctx))
        for key in ("channels", "members", "threads", "presences", "voice_states"):
            payload.pop(key, None)
        return payload

    async def _h_guild_channels(self, ctx: _Ctx) -> list[JSON]:
        guild = self._known_guild(ctx)
        return [self._channel_payload(guild, c) for c in guild.channels]

    async def _h_guild_member(self, ctx: _Ctx) -> JSON:
        guild = self._known_guild(ctx)
        uid = int(ctx.match.group("uid"))
        member = next((m for m in guild.members if m.id == uid), None)
        if member is None:
            raise DiscordError(404, 10007, "Unknown Member")
        return self._member_payload(guild, member)

    # ----- gateway ----------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        compress = request.query.get("compress") == "zlib-stream"
        conn = _Connection(ws, zlib.compressobj() if compress else None)
        self._connections.add(conn)
        try:
            await conn.send({"op": 10, "s": None, "t": None, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                payload = json.loads(msg.data)
                await self._gateway_op(conn, payload)
        finally:
            self._connections.discard(conn)
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
                # A client that closes with 1000/1001 ends its session (Discord invalidates it);
                # other codes leave it resumable. Note discord.py's Client.close() actually sends 4000
                # (its reader task closes first), so a closed discord.py client stays resumable here
                # exactly as it would on Discord.
                if ws.close_code in (1000, 1001):
                    session.resumable = False
        return ws

    async def _gateway_op(self, conn: _Connection, payload: JSON) -> None:
        op = payload.get("op")
        data = payload.get("d")
        if op == 1:  # HEARTBEAT (discord.py sends the first one right after HELLO, before IDENTIFY)
            conn.heartbeats += 1
            if conn.session is not None:
                conn.session.heartbeats += 1
            await conn.send({"op": 11, "s": None, "t": None, "d": None})
        elif op == 2:  # IDENTIFY
            if not isinstance(data, dict) or data.get("token") != self.token:
                await conn.ws.close(code=4004, message=b"Authentication failed.")
                return
            session = GatewaySession(
                session_id=secrets.token_hex(16),
                identify=data,
                conn=conn,
                compressed=conn.compressor is not None,
                heartbeats=conn.heartbeats,
            )
            conn.session = session
            self.sessions.append(session)
            ready = {
                "v": API_VERSION,
                "user": self.bot_user_payload(),
                "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds],
                "session_id": session.session_id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "geo_ordered_rtc_regions": [],
                "user_settings": {},
                "auth": {},
                "guild_join_requests": [],
            }
            if "shard" in data:
                ready["shard"] = data["shard"]
            await self._send_dispatch(session, "READY", ready)
            for guild in self.guilds:
                await self._send_dispatch(session, "GUILD_CREATE", self._guild_payload(guild))
        elif op == 6:  # RESUME
            session = next(
                (s for s in self.sessions if isinstance(data, dict) and s.session_id == data.get("session_id")), None
            )
            if session is None or not session.resumable or data.get("token") != self.token:
                await conn.send({"op": 9, "s": None, "t": None, "d": False})
                return
            session.conn = conn
            session.resumes += 1
            conn.session = session
            last = int(data.get("seq") or 0)
            for event in session.sent:
                if event["s"] > last:
                    await conn.send(event)
            await self._send_dispatch(session, "RESUMED", {})
        elif op == 8:  # REQUEST_GUILD_MEMBERS: one chunk with everything we know
            guild = self._guild(int((data or {}).get("guild_id") or 0))
            if guild is not None and conn.session is not None:
                await self._send_dispatch(
                    conn.session,
                    "GUILD_MEMBERS_CHUNK",
                    {
                        "guild_id": str(guild.id),
                        "members": [self._member_payload(guild, m) for m in guild.members],
                        "chunk_index": 0,
                        "chunk_count": 1,
                        "nonce": (data or {}).get("nonce"),
                    },
                )
        # op 3 (presence) and 4 (voice) are accepted and ignored.

    async def _send_dispatch(self, session: GatewaySession, event: str, data: JSON) -> None:
        session.seq += 1
        frame = {"op": 0, "s": session.seq, "t": event, "d": data}
        session.sent.append(frame)
        if session.conn is not None:
            await session.conn.send(frame)

    async def dispatch(self, event: str, data: JSON) -> None:
        """Send a raw gateway event to every live or resumable session (buffered for RESUME)."""
        targets = [s for s in self.sessions if s.connected or s.resumable]
        if not targets:
            raise RuntimeError("no bot is connected to the fake gateway")
        for session in targets:
            await self._send_dispatch(session, event, data)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT on every live connection (discord.py then RESUMEs)."""
        for conn in list(self._connections):
            await conn.send({"op": 7, "s": None, "t": None, "d": None})

    async def invalidate_sessions(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION on every live connection."""
        for conn in list(self._connections):
            if conn.session is not None and not resumable:
                conn.session.resumable = False
            await conn.send({"op": 9, "s": None, "t": None, "d": resumable})

    async def wait_for_session(self, timeout: float = 5.0) -> GatewaySession:
        """Wait until some client has identified and is connected."""
        return await self.wait_for(
            lambda: next((s for s in reversed(self.sessions) if s.connected), None), timeout, "a gateway session"
        )

    # ----- interaction injection --------------------------------------------------------------

    def _member_for(self, guild: GuildSpec, user_id: int, roles: Sequence[int | str]) -> MemberSpec:
        role_ids = tuple(self._role_id(guild, r) for r in roles)
        member = next((m for m in guild.members if m.id == user_id), None)
        if member is None:
            return MemberSpec(user_id, f"user{user_id % 100000}", role_ids)
        if roles:
            return dataclasses.replace(member, roles=role_ids)
        return member

    @staticmethod
    def _role_id(guild: GuildSpec, role: int | str) -> int:
        if isinstance(role, int):
            return role
        for r in guild.roles:
            if r.name == role:
                return r.id
        raise ValueError(f"unknown role {role!r} in guild {guild.id}")

    async def _resolve_channel(
        self, guild: GuildSpec | None, channel_id: int | None, nsfw_channel: bool | None, user: JSON
    ) -> tuple[int, JSON, int]:
        """Returns (channel id, channel payload for the interaction, interaction context)."""
        if guild is None:
            cid = channel_id or (int(user["id"]) + 7)
            dm = self._dm_channels.setdefault(
                cid, {"id": str(cid), "type": 1, "recipients": [user], "last_message_id": None, "flags": 0}
            )
            return cid, dict(dm), 1
        if channel_id is None:
            channel = next(c for c in guild.channels if c.nsfw == bool(nsfw_channel))
        else:
            found_guild, channel = self._channel(channel_id)
            if channel is None:
                # An unknown id becomes a new channel, announced over the gateway like Discord would.
                channel = ChannelSpec(
                    channel_id, f"channel-{channel_id % 100000}", nsfw=bool(nsfw_channel), position=len(guild.channels)
                )
                guild.channels.append(channel)
                await self.dispatch("CHANNEL_CREATE", self._channel_payload(guild, channel))
            elif found_guild is not guild:
                raise ValueError(f"channel {channel_id} is not in guild {guild.id}")
            elif nsfw_channel is not None and channel.nsfw != nsfw_channel:
                raise ValueError(f"channel {channel_id} has nsfw={channel.nsfw}, not {nsfw_channel}")
        return channel.id, self._channel_payload(guild, channel), 0

    async def _inject(
        self,
        itype: int,
        data: JSON,
        *,
        user_id: int | None,
        guild_id: Any,
        channel_id: int | None,
        roles: Sequence[int | str],
        nsfw_channel: bool | None,
        locale: str,
        attachment_size_limit: int | None,
        message: FakeMessage | None = None,
    ) -> InteractionHandle:
        gid = self.guild_id if guild_id is _Default else guild_id
        guild = self._guild(gid) if gid is not None else None
        if gid is not None and guild is None:
            raise ValueError(f"unknown guild {gid}")
        uid = user_id if user_id is not None else ALICE_ID
        limit = attachment_size_limit if attachment_size_limit is not None else self.upload_limit
        iid = self.snowflake()
        payload: JSON = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "token": f"itok-{iid}-{secrets.token_urlsafe(24)}",
            "version": 1,
            "locale": locale,
            "app_permissions": str(self.app_permissions),
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": limit,
        }
        if guild is not None:
            member = self._member_for(guild, uid, roles)
            member_payload = self._member_payload(guild, member, with_permissions=True)
            cid, channel, context = await self._resolve_channel(
                guild, channel_id if message is None else message.channel_id, nsfw_channel, member_payload["user"]
            )
            channel["permissions"] = member_payload["permissions"]
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=member_payload,
                authorizing_integration_owners={"0": str(guild.id)},
            )
        else:
            user = self._user_payload(MemberSpec(uid, f"user{uid % 100000}"))
            cid, channel, context = await self._resolve_channel(
                None, channel_id if message is None else message.channel_id, None, user
            )
            payload.update(user=user, authorizing_integration_owners={"0": "0"})
        payload.update(channel_id=str(cid), channel=channel, context=context)
        if message is not None:
            payload["message"] = self.message_payload(message)
        handle = InteractionHandle(self, payload, created_at=self.now(), upload_limit=limit)
        self.interactions[iid] = handle
        self._by_token[handle.token] = handle
        await self.dispatch("INTERACTION_CREATE", payload)
        return handle

    def _find_command(self, name: str, guild_id: int | None, ctype: int = 1) -> JSON:
        top = name.split()[0]
        cmd = (self.command(top, guild_id, ctype) if guild_id is not None else None) or self.command(top, None, ctype)
        if cmd is None:
            raise ValueError(
                f"command {top!r} is not registered (sync the tree first); "
                f"global={[c['name'] for c in self.commands()]} guild={[c['name'] for c in self.commands(guild_id)]}"
            )
        return cmd

    def _build_options(
        self,
        cmd: JSON,
        name: str,
        options: Mapping[str, Any],
        *,
        guild: GuildSpec | None,
        validate: bool,
        focused: str | None = None,
    ) -> tuple[list[JSON], JSON]:
        """Turn {name: value} into Discord's nested option list (following subcommand path)."""
        resolved: JSON = {}
        schema: list[JSON] = cmd.get("options") or []
        path = name.split()[1:]
        chain: list[JSON] = []
        for part in path:
            sub = next((o for o in schema if o["name"] == part and o["type"] in (1, 2)), None)
            if sub is None:
                raise ValueError(f"{cmd['name']} has no subcommand {part!r}")
            chain.append(sub)
            schema = sub.get("options") or []
        leaf: list[JSON] = []
        known = {o["name"]: o for o in schema}
        for key, value in options.items():
            spec = known.get(key)
            if spec is None:
                raise ValueError(f"/{name} has no option {key!r}; options: {sorted(known)}")
            leaf.append(
                self._option_value(
                    spec, value, resolved, guild=guild, validate=validate and key != focused, focused=key == focused
                )
            )
        if validate:
            missing = [o["name"] for o in schema if o.get("required") and o["name"] not in options]
            if missing:
                raise ValueError(f"/{name} is missing required options {missing}")
        for sub in reversed(chain):
            leaf = [{"name": sub["name"], "type": sub["type"], "options": leaf}]
        return leaf, resolved

    def _option_value(
        self, spec: JSON, value: Any, resolved: JSON, *, guild: GuildSpec | None, validate: bool, focused: bool
    ) -> JSON:
        otype = spec["type"]
        out: JSON = {"name": spec["name"], "type": otype}
        if focused:
            # Autocomplete sends what the user typed so far, as typed.
            out.update(value=str(value), focused=True)
            return out
        if otype == 11:  # ATTACHMENT: bytes or (filename, bytes[, content_type])
            if isinstance(value, bytes):
                filename, data, ctype = "upload.png", value, "image/png"
            else:
                filename, data, *rest = value
                ctype = rest[0] if rest else None
            aid = self.snowflake()
            # Slash-command uploads live on the CDN under ephemeral-attachments, with a signed,
            # expiring URL (Discord's ``ex``/``is``/``hm``); ``size`` and ``content_type`` are
            # what the client declared, before anyone looked at the bytes.
            url = self._signed_upload_url(aid, filename)
            att = {
                "id": str(aid),
                "filename": filename,
                "size": len(data),
                "url": url,
                "proxy_url": url,
                "content_type": ctype,
                "ephemeral": True,
            }
            # What the user uploaded with the command, served at ``url`` (the bot downloads it).
            self.uploads[aid] = StoredAttachment(aid, filename, ctype, bytes(data), url)
            size = _png_size(data)
            if size is not None:
                att["width"], att["height"] = size
            resolved.setdefault("attachments", {})[str(aid)] = att
            out["value"] = str(aid)
            return out
        if otype in (6, 7, 8, 9):  # USER, CHANNEL, ROLE, MENTIONABLE → snowflake + resolved object
            sid = int(value)
            out["value"] = str(sid)
            if guild is not None:
                member = next((m for m in guild.members if m.id == sid), None)
                channel = next((c for c in guild.channels if c.id == sid), None)
                role = next((r for r in guild.roles if r.id == sid), None)
                if member is not None and otype in (6, 9):
                    resolved.setdefault("users", {})[str(sid)] = self._user_payload(member)
                    mp = self._member_payload(guild, member, with_permissions=True)
                    mp.pop("user")
                    resolved.setdefault("members", {})[str(sid)] = mp
                elif channel is not None and otype == 7:
                    cp = self._channel_payload(guild, channel)
                    cp["permissions"] = str(EVERYONE_PERMISSIONS)
                    resolved.setdefault("channels", {})[str(sid)] = cp
                elif role is not None and otype in (8, 9):
                    resolved.setdefault("roles", {})[str(sid)] = {
                        "id": str(role.id),
                        "name": role.name,
                        "permissions": str(role.permissions),
                        "position": role.position,
                        "color": 0,
                        "hoist": False,
                        "managed": False,
                        "mentionable": False,
                        "flags": 0,
                    }
                elif validate:
                    raise ValueError(f"option {spec['name']}: no user/channel/role {sid} in guild {guild.id}")
            return out
        if otype == 3:
            value = str(value)
            if validate:
                lo, hi = spec.get("min_length", 0), spec.get("max_length", 6000)
                if not lo <= len(value) <= hi:
                    raise ValueError(f"option {spec['name']}: length {len(value)} outside [{lo}, {hi}]")
        elif otype == 4:
            if isinstance(value, bool) or not isinstance(value, int):
                if validate:
                    raise ValueError(f"option {spec['name']} expects an integer, got {value!r}")
        elif otype == 10:
            if isinstance(value, bool) or not isinstance(value, int | float):
                if validate:
                    raise ValueError(f"option {spec['name']} expects a number, got {value!r}")
        elif otype == 5:
            if not isinstance(value, bool) and validate:
                raise ValueError(f"option {spec['name']} expects a boolean, got {value!r}")
        if validate and otype in (4, 10):
            lo, hi = spec.get("min_value"), spec.get("max_value")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(f"option {spec['name']}: {value} outside [{lo}, {hi}]")
        if validate and spec.get("choices"):
            allowed = [c["value"] for c in spec["choices"]]
            if value not in allowed:
                raise ValueError(f"option {spec['name']}: {value!r} is not one of {allowed}")
        out["value"] = value
        return out

    async def slash_command(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user_id: int | None = None,
        guild_id: Any = None,
        channel_id: int | None = None,
        roles: Sequence[int | str] = (),
        nsfw_channel: bool | None = None,
        dm: bool = False,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
        validate: bool = True,
    ) -> InteractionHandle:
        """Send a CHAT_INPUT command interaction, like a user running ``/name``.

        ``name`` may contain subcommands (``"jobs list"``). The command must have been registered
        (synced); options are typed from the registered schema and, with ``validate``, checked the way
        Discord's client checks them (required, choices, ranges, lengths). Defaults: user alice, the
        first guild, its general channel (or its NSFW channel with ``nsfw_channel=True``). ``dm=True``
        sends it from a DM. ``roles`` (ids or names) replace the member's configured roles.
        Attachment options take ``bytes`` or ``(filename, bytes[, content_type])``.
        """
        gid: Any = None if dm else (guild_id if guild_id is not None else _Default)
        lookup_gid = None if dm else (guild_id if guild_id is not None else self.guild_id)
        cmd = self._find_command(name, lookup_gid)
        guild = self._guild(lookup_gid) if lookup_gid is not None else None
        opts, resolved = self._build_options(cmd, name, options or {}, guild=guild, validate=validate)
        data: JSON = {"id": cmd["id"], "name": cmd["name"], "type": 1}
        if "guild_id" in cmd:
            data["guild_id"] = cmd["guild_id"]
        if opts:
            data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        return await self._inject(
            IT_COMMAND,
            data,
            user_id=user_id,
            guild_id=gid,
            channel_id=channel_id,
            roles=roles,
            nsfw_channel=nsfw_channel,
            locale=locale,
            attachment_size_limit=attachment_size_limit,
        )

    async def autocomplete(
        self,
        name: str,
        focused_option: str,
        value: str,
        options: Mapping[str, Any] | None = None,
        *,
        user_id: int | None = None,
        guild_id: Any = None,
        channel_id: int | None = None,
        roles: Sequence[int | str] = (),
        dm: bool = False,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """Send an APPLICATION_COMMAND_AUTOCOMPLETE interaction; ``handle.choices`` after waiting."""
        gid: Any = None if dm else (guild_id if guild_id is not None else _Default)
        lookup_gid = None if dm else (guild_id if guild_id is not None else self.guild_id)
        cmd = self._find_command(name, lookup_gid)
        guild = self._guild(lookup_gid) if lookup_gid is not None else None
        all_options = {**(options or {}), focused_option: value}
        opts, resolved = self._build_options(
            cmd, name, all_options, guild=guild, validate=False, focused=focused_option
        )
        spec = _find_option(cmd, name, focused_option)
        if not spec.get("autocomplete"):
            raise ValueError(f"option {focused_option!r} of /{name} has no autocomplete")
        data: JSON = {"id": cmd["id"], "name": cmd["name"], "type": 1, "options": opts}
        if "guild_id" in cmd:
            data["guild_id"] = cmd["guild_id"]
        if resolved:
            data["resolved"] = resolved
        return await self._inject(
            IT_AUTOCOMPLETE,
            data,
            user_id=user_id,
            guild_id=gid,
            channel_id=channel_id,
            roles=roles,
            nsfw_channel=None,
            locale=locale,
            attachment_size_limit=None,
        )

    async def click(
        self,
        custom_id: str,
        *,
        message_id: int,
        user_id: int | None = None,
        roles: Sequence[int | str] = (),
        component_type: int = 2,
        values: Sequence[str] | None = None,
        locale: str = "en-US",
        check_component: bool = True,
    ) -> InteractionHandle:
        """Send a MESSAGE_COMPONENT interaction: a user clicking a button (or choosing in a select).

        The message must be one the bot posted; with ``check_component`` the custom_id must be among
        its components (Discord only sends clicks for components that exist).
        """
        msg = self._messages.get(int(message_id))
        if msg is None or msg.deleted:
            raise ValueError(f"message {message_id} does not exist in the fake")
        if check_component and custom_id not in msg.custom_ids():
            raise ValueError(f"message {message_id} has no component {custom_id!r}; it has {msg.custom_ids()}")
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = list(values)
        gid: Any = msg.guild_id if msg.guild_id is not None else None
        return await self._inject(
            IT_COMPONENT,
            data,
            user_id=user_id,
            guild_id=gid,
            channel_id=msg.channel_id,
            roles=roles,
            nsfw_channel=None,
            locale=locale,
            attachment_size_limit=None,
            message=msg,
        )

    async def submit_modal(
        self,
        custom_id: str,
        values: Mapping[str, str],
        *,
        user_id: int | None = None,
        roles: Sequence[int | str] = (),
        channel_id: int | None = None,
        message_id: int | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """Send a MODAL_SUBMIT interaction: text inputs ``{custom_id: value}`` of a modal the bot opened.

        ``custom_id`` is the modal's (see the type-9 response's ``data["custom_id"]``); pass
        ``message_id`` when the modal was opened from a button so type 6/7 responses can update it.
        """
        rows = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()]
        msg = self._messages.get(int(message_id)) if message_id is not None else None
        if message_id is not None and msg is None:
            raise ValueError(f"message {message_id} does not exist in the fake")
        return await self._inject(
            IT_MODAL,
            {"custom_id": custom_id, "components": rows},
            user_id=user_id,
            guild_id=(msg.guild_id if msg is not None else _Default),
            channel_id=channel_id,
            roles=roles,
            nsfw_channel=None,
            locale=locale,
            attachment_size_limit=None,
            message=msg,
        )

    def post_message(
        self,
        channel_id: int,
        content: str = "",
        *,
        components: list[JSON] | None = None,
        embeds: list[JSON] | None = None,
    ) -> FakeMessage:
        """Store a bot-authored message directly (e.g. one "posted before the restart")."""
        guild, channel = self._channel(channel_id)
        if channel is None:
            raise ValueError(f"unknown channel {channel_id}")
        body: JSON = {"content": content, "components": components or [], "embeds": embeds or []}
        return self._create_message(
            channel_id, guild.id if guild else None, body, [], kind="channel", limit=self.upload_limit
        )


class _Default:
    """Sentinel: "use the fake's first guild"."""


# --------------------------------------------------------------------------------------------------
# Validation helpers (Discord's documented limits)
# --------------------------------------------------------------------------------------------------


def _walk_components(components: Iterable[JSON]) -> Iterator[JSON]:
    for c in components:
        if not isinstance(c, dict):
            continue
        yield c
        yield from _walk_components(c.get("components") or [])
        if isinstance(c.get("accessory"), dict):
            yield from _walk_components([c["accessory"]])
        if isinstance(c.get("component"), dict):
            yield from _walk_components([c["component"]])


def _validate_components(components: list[JSON], flags: int, errors: _FormErrors) -> None:
    if not isinstance(components, list):
        errors.add(["components"], "BASE_TYPE_ARRAY", "Must be an array")
        return
    if not flags & F_COMPONENTS_V2:
        if len(components) > 5:
            errors.add(["components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        for i, row in enumerate(components):
            if row.get("type") != 1:
                errors.add(
                    ["components", i, "type"], "UNION_TYPE_CHOICES", "Top-level components must be action rows (type 1)"
                )
                continue
            children = row.get("components") or []
            if not 1 <= len(children) <= 5:
                errors.add(
                    ["components", i, "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
                )
            if any(c.get("type") in (3, 5, 6, 7, 8) for c in children) and len(children) > 1:
                errors.add(
                    ["components", i, "components"],
                    "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                    "A select menu takes the whole action row",
                )
    elif len(list(_walk_components(components))) > 40:
        errors.add(["components"], "COMPONENT_MAX_TOTAL_COMPONENTS_EXCEEDED", "Must be 40 or fewer components")
    seen: set[str] = set()
    for n, comp in enumerate(_walk_components(components)):
        path: list[str | int] = ["components", "*", n]
        ctype = comp.get("type")
        cid = comp.get("custom_id")
        if cid is not None:
            if not isinstance(cid, str) or not 1 <= len(cid) <= 100:
                errors.add([*path, "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            elif cid in seen:
                errors.add(
                    [*path, "custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
                )
            seen.add(str(cid))
        if ctype == 2:
            style = comp.get("style")
            if style == 5:
                if not comp.get("url") or cid is not None:
                    errors.add([*path, "url"], "BUTTON_COMPONENT_URL_REQUIRED", "Link buttons need a url, no custom_id")
            elif style != 6 and cid is None:
                errors.add([*path, "custom_id"], "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED", "A custom id is required")
            if len(comp.get("label") or "") > 80:
                errors.add([*path, "label"], "BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")
        elif ctype in (3, 5, 6, 7, 8):
            if cid is None:
                errors.add([*path, "custom_id"], "BASE_TYPE_REQUIRED", "This field is required")
            if len(comp.get("options") or []) > 25:
                errors.add([*path, "options"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            if len(comp.get("placeholder") or "") > 150:
                errors.add([*path, "placeholder"], "BASE_TYPE_MAX_LENGTH", "Must be 150 or fewer in length.")


def _validate_embed(embed: JSON, path: list[str | int], errors: _FormErrors) -> int:
    limits = {"title": 256, "description": 4096}
    total = 0
    for key, limit in limits.items():
        text = embed.get(key) or ""
        total += len(text)
        if len(text) > limit:
            errors.add([*path, key], "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
    fields = embed.get("fields") or []
    if len(fields) > 25:
        errors.add([*path, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for i, f in enumerate(fields):
        name, value = f.get("name") or "", f.get("value") or ""
        total += len(name) + len(value)
        if len(name) > 256:
            errors.add([*path, "fields", i, "name"], "BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")
        if len(value) > 1024:
            errors.add([*path, "fields", i, "value"], "BASE_TYPE_MAX_LENGTH", "Must be 1024 or fewer in length.")
    footer = (embed.get("footer") or {}).get("text") or ""
    author = (embed.get("author") or {}).get("name") or ""
    total += len(footer) + len(author)
    if len(footer) > 2048:
        errors.add([*path, "footer", "text"], "BASE_TYPE_MAX_LENGTH", "Must be 2048 or fewer in length.")
    if len(author) > 256:
        errors.add([*path, "author", "name"], "BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")
    return total


def _validate_choices(choices: list[JSON], path: list[str | int], errors: _FormErrors | None = None) -> None:
    own = errors is None
    errs = errors or _FormErrors()
    if len(choices) > 25:
        errs.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for i, choice in enumerate(choices):
        name = choice.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            errs.add([*path, i, "name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        value = choice.get("value")
        if isinstance(value, str) and len(value) > 100:
            errs.add([*path, i, "value"], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
    if own:
        errs.raise_if_any()


def _validate_modal(data: JSON) -> None:
    errors = _FormErrors()
    cid = data.get("custom_id")
    if not isinstance(cid, str) or not 1 <= len(cid) <= 100:
        errors.add(["data", "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    title = data.get("title")
    if not isinstance(title, str) or not 1 <= len(title) <= 45:
        errors.add(["data", "title"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
    if not 1 <= len(data.get("components") or []) <= 5:
        errors.add(["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
    errors.raise_if_any()


def _check_name_desc(item: JSON, path: list[str | int], errors: _FormErrors, *, chat: bool) -> int:
    name = item.get("name")
    desc = item.get("description")
    if not isinstance(name, str) or not 1 <= len(name) <= 32:
        errors.add([*path, "name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
        name = ""
    elif chat and (not _CHAT_NAME_RE.match(name) or name != name.lower()):
        errors.add([*path, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    if chat:
        if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
            errors.add([*path, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            desc = ""
    elif desc:
        errors.add(
            [*path, "description"],
            "APPLICATION_COMMAND_INVALID_DESCRIPTION",
            "Context menu commands cannot have a description",
        )
    return len(name) + len(desc or "")


def _validate_options(options: list[JSON], path: list[str | int], errors: _FormErrors, depth: int) -> int:
    total = 0
    if len(options) > 25:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    names: set[str] = set()
    seen_optional = False
    for i, opt in enumerate(options):
        opath: list[str | int] = [*path, i]
        total += _check_name_desc(opt, opath, errors, chat=True)
        if opt.get("name") in names:
            errors.add([*opath, "name"], "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS", "Duplicate option name")
        names.add(opt.get("name", ""))
        otype = opt.get("type")
        if otype not in range(1, 12):
            errors.add([*opath, "type"], "BASE_TYPE_CHOICES", "Value must be one of 1..11.")
            continue
        if otype in (1, 2):
            if (otype == 2 and depth > 0) or depth > 1:
                errors.add([*opath, "type"], "APPLICATION_COMMAND_OPTION_TYPE_INVALID", "Subcommands nested too deep")
            total += _validate_options(opt.get("options") or [], [*opath, "options"], errors, depth + 1)
            continue
        if opt.get("required"):
            if seen_optional:
                errors.add(
                    [*opath, "required"],
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        choices = opt.get("choices") or []
        if choices and opt.get("autocomplete"):
            errors.add(
                [*opath, "autocomplete"], "AUTOCOMPLETE_CHOICES_CONFLICT", "Autocomplete cannot be set with choices"
            )
        _validate_choices(choices, [*opath, "choices"], errors)
        total += sum(len(str(c.get("name", ""))) + len(str(c.get("value", ""))) for c in choices)
        for key in ("min_length", "max_length"):
            if key in opt and not 0 <= int(opt[key]) <= 6000:
                errors.add([*opath, key], "NUMBER_TYPE_MAX", "Must be between 0 and 6000.")
    return total


def _validate_command(cmd: JSON, path: list[str | int], errors: _FormErrors) -> None:
    ctype = int(cmd.get("type") or 1)
    if ctype not in (1, 2, 3, 4):
        errors.add([*path, "type"], "BASE_TYPE_CHOICES", "Value must be one of (1, 2, 3, 4).")
        return
    total = _check_name_desc(cmd, path, errors, chat=ctype == 1)
    options = cmd.get("options") or []
    if ctype != 1 and options:
        errors.add([*path, "options"], "APPLICATION_COMMAND_OPTIONS_INVALID", "Only chat input commands take options")
    total += _validate_options(options, [*path, "options"], errors, 0)
    if total > 4000:
        errors.add(path, "APPLICATION_COMMAND_TOO_LARGE", "Command exceeds maximum size (4000)")


def _validate_commands(commands: list[JSON], errors: _FormErrors) -> None:
    per_type: dict[int, int] = {}
    names: set[tuple[int, str]] = set()
    for i, cmd in enumerate(commands):
        if not isinstance(cmd, dict):
            errors.add([i], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            continue
        _validate_command(cmd, [i], errors)
        ctype = int(cmd.get("type") or 1)
        per_type[ctype] = per_type.get(ctype, 0) + 1
        key = (ctype, str(cmd.get("name")))
        if key in names:
            errors.add([i, "name"], "APPLICATION_COMMANDS_DUPLICATE_NAME", "Application command names must be unique")
        names.add(key)
    if per_type.get(1, 0) > 100 or per_type.get(2, 0) > 15 or per_type.get(3, 0) > 15:
        errors.add([], "APPLICATION_COMMANDS_TOO_MANY", "Too many application commands")


def _find_option(cmd: JSON, name: str, option: str) -> JSON:
    schema: list[JSON] = cmd.get("options") or []
    for part in name.split()[1:]:
        schema = next(o for o in schema if o["name"] == part).get("options") or []
    for opt in schema:
        if opt["name"] == option:
            return opt
    raise ValueError(f"/{name} has no option {option!r}")


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return None


def make_png(width: int = 1, height: int = 1, *, pad_to: int = 0) -> bytes:
    """A valid RGB PNG; ``pad_to`` appends a private chunk so the file reaches that many bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    out += chunk(b"IDAT", zlib.compress(raw))
    if pad_to > len(out) + 24:
        out += chunk(b"pADd", b"\x00" * (pad_to - len(out) - 24))
    return out + chunk(b"IEND", b"")


TINY_PNG = make_png()


# --------------------------------------------------------------------------------------------------
# Pointing discord.py at the fake, running a bot
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def point_discord_at(fake: FakeDiscord) -> Iterator[FakeDiscord]:
    """Point discord.py's REST base, default gateway and CDN base at ``fake``; restore on exit.

    These are class attributes read when a request/connection is made, so this covers every client
    created or running in this process while the block is active.
    """
    from discord.asset import Asset
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY, Asset.BASE)
    Route.BASE = fake.api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    Asset.BASE = fake.cdn_base
    try:
        yield fake
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY, Asset.BASE = saved


@contextlib.asynccontextmanager
async def run_bot(client: Any, token: str, fake: FakeDiscord, *, timeout: float = 10.0) -> AsyncIterator[Any]:
    """Run ``client.start(token)`` in a task against ``fake``; yield once it is ready; close at exit.

    Raises whatever ``start`` raised if it dies before becoming ready (bad token, setup_hook error).
    Tip: ``guild_ready_timeout=0.1`` on the client skips discord.py's 2 s wait after GUILD_CREATE.
    """
    with point_discord_at(fake):
        task = asyncio.create_task(client.start(token), name="fake-discord-bot")
        try:
            deadline = time.monotonic() + timeout
            while not client.is_ready():
                if task.done():
                    task.result()  # re-raises the start failure
                    raise RuntimeError("client.start() returned before the client became ready")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"discord client not ready after {timeout}s")
                await asyncio.sleep(0.01)
            yield client
        finally:
            await client.close()
            # start() returns after close(); bound the wait so a stuck client cannot hang a test.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 5.0)
