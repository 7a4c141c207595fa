"""Fetch one input image from an http(s) URL into a file: pinned, bounded, re-checked.

- Only `http` and `https`; no credentials in the URL.
- The host is resolved once and every address checked (`addresses.py`); the
  connection goes to that address, with the original `Host` header and, for
  https, the original name for SNI and certificate checks. A second DNS answer
  (rebinding) is never asked for.
- Redirects are followed by hand, at most `max_redirects`, each target checked
  exactly like the first URL (a public URL redirecting to 127.0.0.1 is refused).
- The body is streamed to a file, one chunk in memory, and cut off past
  `max_bytes` (Content-Length too large is refused before reading).
- 200 only; an HTML answer is refused (a login or error page is not a picture).

Messages never show the URL's query string: presigned URLs carry credentials there.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi
import httpx

from comfykube.comfyui.transport import describe_transport_error, status_text
from comfykube.errors import InputImageFailed
from comfykube.inputs.addresses import Policy, Resolver, forbidden_reason, resolve_checked, resolve_dns

HEAD_BYTES = 16
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Fetched:
    """A body on disk: its size, SHA-256, first bytes and the Content-Type the server sent."""

    path: Path
    bytes: int
    sha256: str
    head: builtins.bytes
    content_type: str


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every fetch: building one (loading the CA bundle) costs tens of ms."""
    return ssl.create_default_context(cafile=certifi.where())


def safe_url(url: str | httpx.URL) -> str:
    """The URL without query, fragment or credentials: fit for messages and logs."""
    try:
        parsed = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "(an unparsable URL)"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InputImageFailed(f"input URL is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise InputImageFailed(f"input URL must be http or https (got {parsed.scheme or 'no'} scheme)")
    if not parsed.host:
        raise InputImageFailed("input URL has no host")
    if parsed.userinfo:
        raise InputImageFailed(f"input URL {safe_url(parsed)} must not carry a user name or password")
    return parsed


async def fetch_url(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    allow_private: bool,
    http_timeout: float = 30.0,
    max_redirects: int = 5,
    resolve: Resolver = resolve_dns,
    policy: Policy = forbidden_reason,
    on_head: Callable[[builtins.bytes], None] | None = None,
) -> Fetched:
    """Stream `url` into `dest` with the checks in the module docstring; InputImageFailed otherwise.

    `on_head(head)` is called once the first `HEAD_BYTES` are in (or the body ended
    before); what it raises stops the fetch there (a page that is no picture is not read on).

    Failures that may pass (connection refused, 5xx, time-outs) are retryable; the
    others (404, HTML, too big, a private address) are not.
    """
    current = _parse(url)
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(http_timeout, connect=min(http_timeout, 10.0)),
        follow_redirects=False,
        trust_env=False,  # an environment proxy would connect to the name, not the checked address
        verify=_tls(),
    ) as http:
        for _ in range(max_redirects + 1):
            port = current.port or (443 if current.scheme == "https" else 80)
            address = await resolve_checked(
                current.host, port, allow_private=allow_private, resolve=resolve, policy=policy
            )
            pinned = current.copy_with(host=str(address))
            host_header = current.host if current.port is None else f"{current.host}:{current.port}"
            extensions: dict[str, Any] = {"sni_hostname": current.host} if current.scheme == "https" else {}
            request = http.build_request(
                "GET",
                pinned,
                headers={"Host": host_header, "Accept": "image/*", "Accept-Encoding": "identity"},
                extensions=extensions,
            )
            try:
                response = await http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise InputImageFailed(
                    f"cannot fetch {safe_url(current)}: {describe_transport_error(exc)}", retryable=True
                ) from None
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise InputImageFailed(f"{safe_url(current)} redirects without a Location")
                    current = _parse(str(current.join(location)))
                    continue
                return await _save(response, current, dest, max_bytes, on_head)
            finally:
                await response.aclose()
    raise InputImageFailed(f"{safe_url(url)} redirects more than {max_redirects} times")


async def _save(
    response: httpx.Response,
    url: httpx.URL,
    dest: Path,
    max_bytes: int,
    on_head: Callable[[builtins.bytes], None] | None,
) -> Fetched:
    shown = safe_url(url)
    if response.status_code != 200:
        raise InputImageFailed(
            f"{shown} answered {status_text(response)}, not an image",
            retryable=response.status_code >= 500 or response.status_code in (408, 429),
        )
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("text/html", "application/xhtml+xml"):
        raise InputImageFailed(f"{shown} answered an HTML page ({content_type}), not an image")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise InputImageFailed(
            f"{shown} is {int(declared)} bytes, more than the {max_bytes} allowed (INPUT_IMAGE_MAX_BYTES)"
        )
    digest = hashlib.sha256()
    received = 0
    head = b""
    try:
        # Local-disk writes of one chunk are short and bounded; no thread hop needed.
        with os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            # As the bytes come (at most httpcore's 64 KiB read each): bounded, and no
            # re-chunking copies (less CPU per MB than aiter_raw(64 KiB), measured).
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received > max_bytes:
                    raise InputImageFailed(
                        f"{shown} is larger than the {max_bytes} bytes allowed (INPUT_IMAGE_MAX_BYTES)"
                    )
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                    if len(head) == HEAD_BYTES and on_head is not None:
                        on_head(head)
                digest.update(chunk)
                out.write(chunk)
    except httpx.HTTPError as exc:
        discard(dest)
        raise InputImageFailed(
            f"{shown} was cut off after {received} bytes ({describe_transport_error(exc)})", retryable=True
        ) from None
    except BaseException:
        discard(dest)
        raise
    if received == 0:
        discard(dest)
        raise InputImageFailed(f"{shown} answered an empty body")
    if len(head) < HEAD_BYTES and on_head is not None:
        try:
            on_head(head)
        except BaseException:
            discard(dest)
            raise
    if declared is not None and declared.isdigit() and received != int(declared):
        discard(dest)
        raise InputImageFailed(f"{shown} was cut off: got {received} of {declared} bytes", retryable=True)
    return Fetched(path=dest, bytes=received, sha256=digest.hexdigest(), head=head, content_type=content_type)


def discard(path: Path) -> None:
    """Delete a partial file; gone already is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def hash_file(path: Path) -> tuple[int, str, bytes]:
    """(size, sha256, first bytes) of a local file, read in chunks (blocking: call in a thread)."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            if not head:
                head = chunk[:HEAD_BYTES]
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest(), head


def file_size(path: Path) -> int:
    """Size of a local file (0 when missing)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
