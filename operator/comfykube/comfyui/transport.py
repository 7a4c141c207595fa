"""HTTP plumbing shared by the client, the health check and downloads.

One place decides what counts as "ComfyUI unavailable" (retry later) and how
a failed call is described: `GET http://host:8188/queue: connection refused`.
A refused connection is told apart (`BackendRefused`): nothing listens on the
port, so the process and its in-memory queue are gone and a job there can move
at once, while a timeout may be a busy server that is still rendering.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from comfykube.errors import ComfyUIUnavailable

#: How `describe_transport_error` says that nothing listens on the port.
REFUSED = "connection refused"


class BackendRefused(ComfyUIUnavailable):
    """ComfyUI refused the connection: no process listens there (its queue is gone with it).

    Same reason and retryability as `ComfyUIUnavailable`; followers and the backend pool
    use the type to move jobs within seconds instead of waiting out the grace period.
    """


#: Status codes that mean "a proxy or the server is struggling", worth retrying.
UNAVAILABLE_STATUSES = frozenset({408, 429, 502, 503, 504})


def normalize_base_url(url: str) -> str:
    """Absolute `http(s)://host:port[/prefix]` without a trailing slash, or ValueError."""
    url = url.strip().rstrip("/")
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"ComfyUI URL must be absolute http(s)://host:port (got {url!r})")
    return url


def make_http_client(timeout: float) -> httpx.AsyncClient:
    """An AsyncClient with a timeout on every phase; no base_url, so every URL we pass is absolute."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        follow_redirects=False,
        # Environment proxies would route loopback/cluster traffic somewhere else.
        trust_env=False,
    )


def describe_transport_error(exc: BaseException) -> str:
    """`connection refused`, `timed out`, … without the noisy exception chains."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        cause = _root_os_error(exc)
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(exc).lower():
            return REFUSED
        if cause is not None and cause.strerror:
            return f"cannot connect ({cause.strerror})"
        return f"cannot connect ({exc})" if str(exc) else "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection broken ({exc})" if str(exc) else "connection broken"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def unavailable(method: str, url: str, how: str) -> ComfyUIUnavailable:
    """The error for a call that failed in a retryable way (`BackendRefused` for a refused connection)."""
    kind = BackendRefused if how == REFUSED else ComfyUIUnavailable
    return kind(f"{method} {url}: {how}")


def status_text(response: httpx.Response) -> str:
    """`503 Service Unavailable`."""
    return f"{response.status_code} {response.reason_phrase}".strip()


def json_body(response: httpx.Response, method: str, url: str) -> Any:
    """The JSON body or ComfyUIUnavailable naming the call (an HTML error page from a proxy, …)."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        kind = response.headers.get("content-type", "no content type")
        raise unavailable(method, url, f"answered {status_text(response)} with non-JSON ({kind})") from None


async def request(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    json_data: Any = None,
    params: dict[str, str] | None = None,
    http_timeout: float | None = None,
) -> httpx.Response:
    """One call; transport errors and 408/429/5xx-gateway answers become ComfyUIUnavailable.

    Other statuses are returned for the caller to interpret (400 from /prompt
    means something different from 404 on /view).
    """
    kwargs: dict[str, Any] = {}
    if json_data is not None:
        kwargs["json"] = json_data
    if params is not None:
        kwargs["params"] = params
    if http_timeout is not None:
        kwargs["timeout"] = http_timeout
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise unavailable(method, url, describe_transport_error(exc)) from None
    if response.status_code in UNAVAILABLE_STATUSES:
        raise unavailable(method, url, f"answered {status_text(response)}")
    return response


def _root_os_error(exc: BaseException) -> OSError | None:
    """The most specific OSError under httpx's wrapper (anyio's own says only "All connection attempts failed")."""
    found: list[OSError] = []
    seen: set[int] = set()

    def walk(current: BaseException | None) -> None:
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if isinstance(current, OSError):
                found.append(current)
            for inner in getattr(current, "exceptions", None) or ():  # ExceptionGroup (happy eyeballs)
                walk(inner)
            current = current.__cause__ or current.__context__

    walk(exc)
    with_errno = [error for error in found if error.errno is not None]
    candidates = with_errno or found
    return candidates[0] if candidates else None
