"""The gallery's configuration, read from the environment once at start (names: `WEB_` + field).

Storage (`MINIO_*`, `PRESIGN_EXPIRY_SECONDS`) stays in `comfykube.settings.Settings`,
shared with the operator; this class holds only what the web server adds.

Authentication modes (`WEB_AUTH`):

- `none`: nobody is asked; the server then binds to loopback only (`WEB_HOST` must be
  127.0.0.1, ::1 or localhost, anything else stops it at start);
- `token`: `Authorization: Bearer $WEB_TOKEN` (or basic auth with any user and the token
  as password, which browsers can send);
- `basic`: `WEB_BASIC_USER` / `WEB_BASIC_PASSWORD`;
- `proxy`: an authenticating proxy in front (oauth2-proxy) puts the user in
  `WEB_PROXY_HEADER`; a request without it is refused. The port must be reachable from
  the proxy only (see docs/web.md).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")
#: Browsers get at most this many updates a second (WEB_UPDATE_INTERVAL cannot go below its inverse).
MAX_UPDATES_PER_SECOND = 2


class AuthMode(enum.StrEnum):
    """How the gallery checks who is asking."""

    NONE = "none"
    TOKEN = "token"
    BASIC = "basic"
    PROXY = "proxy"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


class WebSettings(BaseSettings):
    """Everything `comfykube web` reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="WEB_", case_sensitive=False, extra="ignore")

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Namespaces shown (comma-separated); empty: default (or all, see below)."
    )
    all_namespaces: bool = Field(default=False, description="Show every namespace (needs cluster-wide read RBAC).")
    host: str = Field(default="127.0.0.1", description="Bind address of the gallery.")
    port: int = Field(default=8090, ge=0, le=65535)
    health_port: int = Field(default=0, ge=0, le=65535, description="/healthz and /readyz on 0.0.0.0; 0: off.")
    auth: AuthMode = AuthMode.NONE
    token: SecretStr | None = None
    basic_user: str | None = None
    basic_password: SecretStr | None = None
    proxy_header: str = Field(default="X-Forwarded-User", description="Header the authenticating proxy sets.")
    page_size: int = Field(default=48, ge=1, le=500)
    update_interval: float = Field(
        default=0.5, ge=1 / MAX_UPDATES_PER_SECOND, le=60, description="Seconds between two updates to one browser."
    )
    max_streams: int = Field(default=1000, ge=1, description="Live-update connections at once (more get 503).")
    events_timeout: float = Field(default=5.0, gt=0, description="Seconds for reading a job's Events.")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> list[str]:
        items = value if isinstance(value, list) else str(value or "").split(",")
        out = []
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            if not _NAMESPACE.match(item) or len(item) > 63:
                raise ValueError(f"{item!r} is not a namespace name")
            if item not in out:
                out.append(item)
        return out

    @field_validator("proxy_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER.match(value):
            raise ValueError(f"WEB_PROXY_HEADER {value!r} is not an HTTP header name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WebSettings:
        if self.all_namespaces and self.namespaces:
            raise ValueError("set WEB_NAMESPACES or WEB_ALL_NAMESPACES, not both")
        if self.auth is AuthMode.NONE and not is_loopback(self.host):
            raise ValueError(
                f"WEB_AUTH=none serves the gallery to anyone who can connect: it binds to loopback only, "
                f"not {self.host!r}; choose WEB_AUTH=token, basic or proxy to listen elsewhere"
            )
        if self.auth is AuthMode.TOKEN and not (self.token and self.token.get_secret_value()):
            raise ValueError("WEB_AUTH=token needs WEB_TOKEN (from a Secret)")
        if self.auth is AuthMode.BASIC and not (
            self.basic_user and self.basic_password and self.basic_password.get_secret_value()
        ):
            raise ValueError("WEB_AUTH=basic needs WEB_BASIC_USER and WEB_BASIC_PASSWORD (from a Secret)")
        if self.basic_user and ":" in self.basic_user:
            raise ValueError("WEB_BASIC_USER must not contain ':'")
        return self

    @property
    def watched(self) -> list[str] | None:
        """The namespaces to read, or None for all of them."""
        if self.all_namespaces:
            return None
        return self.namespaces or ["default"]


__all__ = ["MAX_UPDATES_PER_SECOND", "AuthMode", "WebSettings", "is_loopback"]
