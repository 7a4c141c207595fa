"""The bot's configuration, read from the environment once at start.

Lists (`BOT_ALLOWED_GUILDS`, `BOT_DENY_PATTERNS`, ...) are accepted either as
comma-separated text (what the Helm chart renders with `join ","`) or as a JSON
array (needed when a regular expression itself contains a comma). An empty
allow-list means "no restriction"; an empty deny-list means "deny nothing".

The settings shared with the operator (`COMFYUI_URL`, `MINIO_*`, `WORKFLOWS_DIR`,
`PRESIGN_EXPIRY_SECONDS`) stay in `comfykube.settings.Settings`; this class holds
only what is specific to the bot.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from comfykube.settings import split_list

#: Discord snowflakes are 64-bit integers; ids in config are validated as such.
_MAX_SNOWFLAKE = 2**64 - 1


def _ids(value: Any) -> list[int]:
    out: list[int] = []
    for item in split_list(value):
        if not item.isdigit() or not 0 < int(item) <= _MAX_SNOWFLAKE:
            raise ValueError(f"{item!r} is not a Discord id (digits only)")
        out.append(int(item))
    return out


IdList = Annotated[list[int], NoDecode]
StrList = Annotated[list[str], NoDecode]


class BotSettings(BaseSettings):
    """Everything the bot reads from the environment (names are the upper-cased field names)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    discord_token: SecretStr = Field(description="Bot token (from a Secret); never logged.")
    bot_signing_key: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC over the labels and annotations the bot writes; unset: derived from the token.",
    )
    discord_api_base: str | None = Field(
        default=None, description="REST base URL override (tests: the fake Discord), e.g. http://127.0.0.1:P/api/v10."
    )
    discord_gateway_url: str | None = Field(default=None, description="Gateway URL override (ws://...).")
    discord_cdn_base: str | None = Field(default=None, description="CDN base URL override.")
    discord_guild_sync: IdList = Field(
        default_factory=list,
        description="Guild ids to sync the commands to (instant, for development); empty: one global sync.",
    )
    discord_sync_commands: bool = Field(default=True, description="Sync the command tree at start.")

    bot_namespace: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    bot_allowed_guilds: IdList = Field(default_factory=list)
    bot_allowed_channels: IdList = Field(default_factory=list)
    bot_allowed_roles: IdList = Field(default_factory=list)
    bot_moderator_roles: IdList = Field(default_factory=list)
    bot_allow_dms: bool = False
    bot_max_active_jobs: int = Field(default=2, ge=1, le=100)
    bot_cooldown_seconds: float = Field(default=30.0, ge=0, le=86400)
    bot_queue_cap: int = Field(default=20, ge=1, le=10000)
    bot_deny_patterns: StrList = Field(default_factory=list, description="Regular expressions (case-insensitive).")
    bot_nsfw_models: StrList = Field(
        default_factory=list, description="Checkpoint names or globs (case-insensitive) allowed only in NSFW channels."
    )
    bot_edit_interval_seconds: float = Field(default=2.0, ge=0.05, le=60)
    bot_base_size: int = Field(default=512, ge=64, le=2048, description="Side of a 1:1 image; aspects keep its area.")
    bot_checkpoint_refresh_seconds: float = Field(default=60.0, ge=1)
    bot_job_ttl_seconds: int | None = Field(
        default=None, ge=0, description="ttlSecondsAfterFinished for jobs the bot creates; unset: keep them."
    )
    bot_listen_host: str = Field(default="0.0.0.0", description="Address the health and metrics servers bind.")

    @field_validator(
        "discord_guild_sync",
        "bot_allowed_guilds",
        "bot_allowed_channels",
        "bot_allowed_roles",
        "bot_moderator_roles",
        mode="before",
    )
    @classmethod
    def _parse_ids(cls, value: Any) -> list[int]:
        return _ids(value)

    @field_validator("bot_deny_patterns", mode="before")
    @classmethod
    def _parse_patterns(cls, value: Any) -> list[str]:
        patterns = split_list(value)
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"BOT_DENY_PATTERNS entry {pattern!r} is not a regular expression: {exc}") from None
        return patterns

    @field_validator("bot_nsfw_models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> list[str]:
        return split_list(value)

    @field_validator("discord_api_base", "discord_cdn_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value else value

    @field_validator("discord_gateway_url")
    @classmethod
    def _ws_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("ws://", "wss://")):
            raise ValueError("must be a ws(s) URL")
        return value


__all__ = ["BotSettings", "split_list"]
