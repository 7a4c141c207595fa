"""Response headers every answer carries: a strict Content-Security-Policy and friends.

- No inline script or style at all (`script-src 'self'`, `style-src 'self'`): the pages
  load `/static/*.js` and `/static/style.css` only, and JavaScript puts data into the
  page with `textContent`, so a prompt like `<img src=x onerror=alert(1)>` stays text
  even if escaping failed somewhere.
- Images from this server and from the object store's origin only (presigned URLs).
- `Referrer-Policy: no-referrer`: a presigned URL in a page must not leak to other sites
  through the Referer header. `frame-ancestors 'none'` (and X-Frame-Options) against
  clickjacking, `X-Content-Type-Options: nosniff`, and `Cache-Control: no-store` on
  pages and JSON, which carry presigned URLs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web


def content_security_policy(image_origins: Iterable[str]) -> str:
    """The policy, allowing images from `image_origins` besides this server."""
    images = " ".join(["'self'", *sorted(set(image_origins))])  # pictures, and videos/sounds (media-src)
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            f"media-src {images}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def header_setter(
    image_origins: Iterable[str],
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An `on_response_prepare` callback: every response (pages, JSON, streams, errors) gets the headers."""
    policy = content_security_policy(image_origins)

    async def set_headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers["Content-Security-Policy"] = policy
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        headers["X-Frame-Options"] = "DENY"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        static = request.path.startswith("/static/") and response.status == 200
        headers.setdefault("Cache-Control", "private, max-age=300" if static else "no-store")

    return set_headers


__all__ = ["content_security_policy", "header_setter"]
