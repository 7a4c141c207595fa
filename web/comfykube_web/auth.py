"""Who may look: the authentication middleware for the four modes of `WEB_AUTH`.

Secrets are compared in constant time (`hmac.compare_digest` on bytes); a refusal is a
401 with a `WWW-Authenticate` challenge browsers understand, and never says which part
of the credentials was wrong.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from comfykube_web.settings import AuthMode, WebSettings

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Where the user the request is served for is kept (`request[USER]`), for the page header.
USER: web.RequestKey[str] = web.RequestKey("comfykube_web.user", str)
REALM = 'Basic realm="comfykube gallery", charset="UTF-8"'


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _refuse(text: str, challenges: list[str]) -> web.Response:
    response = web.Response(status=401, text=text + "\n")
    for challenge in challenges:
        response.headers.add("WWW-Authenticate", challenge)
    return response


class Authenticator:
    """Checks one request against the configured mode; returns the user's name or a refusal."""

    def __init__(self, settings: WebSettings) -> None:
        self.mode = settings.auth
        self._token = settings.token.get_secret_value() if settings.token else ""
        self._user = settings.basic_user or ""
        self._password = settings.basic_password.get_secret_value() if settings.basic_password else ""
        self.proxy_header = settings.proxy_header

    def check(self, request: web.Request) -> str | web.Response:
        """The authenticated user's name, or the 401 to send."""
        if self.mode is AuthMode.NONE:
            return ""
        header = request.headers.get("Authorization", "")
        if self.mode is AuthMode.TOKEN:
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "bearer" and value and _same(value.strip(), self._token):
                return "token"
            basic = _basic(header)
            if basic is not None and _same(basic[1], self._token):
                return basic[0] or "token"
            return _refuse("a valid bearer token is required", ['Bearer realm="comfykube gallery"', REALM])
        if self.mode is AuthMode.BASIC:
            basic = _basic(header)
            # Both compared every time: the answer's timing does not tell which one was wrong.
            if basic is not None and (_same(basic[0], self._user) & _same(basic[1], self._password)):
                return basic[0]
            return _refuse("a valid user name and password are required", [REALM])
        user = request.headers.get(self.proxy_header, "").strip()
        if not user:
            log.info("refused a request without %s (not through the authenticating proxy?)", self.proxy_header)
            return web.Response(
                status=401,
                text=f"this server only answers behind its authenticating proxy (no {self.proxy_header} header)\n",
            )
        return user[:200]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """aiohttp middleware: refuse, or remember the user and go on."""
        result = self.check(request)
        if isinstance(result, web.Response):
            return result
        request[USER] = result
        return await handler(request)


__all__ = ["USER", "Authenticator"]
