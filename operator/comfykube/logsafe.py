"""Presigned URLs are bearer credentials: they never reach a log line.

Code logs object keys, not URLs. This filter is the second line: installed on
the handlers of the CLI, the operator and the bot, it cuts the query string
off any URL that carries a signature (SigV4 `X-Amz-Signature`, SigV2
`Signature=`, `X-Amz-Credential`, ...), whoever logged it — a library's debug
line that dumps a request body with a link button, an exception's text.
"""

from __future__ import annotations

import logging
import re

#: A URL whose query string carries a signature or a credential.
_SIGNED_URL = re.compile(
    r"(?P<base>\bhttps?://[^\s?#\"'<>]+)\?(?P<query>[^\s#\"'<>]*"
    r"(?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature=|AWSAccessKeyId=|sig=)[^\s#\"'<>]*)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with the query string of every signed URL replaced by `?<redacted>`."""
    return _SIGNED_URL.sub(lambda m: f"{m.group('base')}?<redacted>", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record whose formatted message (or traceback) holds a signed URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; redacts its message first."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(handlers: list[logging.Handler] | None = None) -> None:
    """Add the filter to `handlers` (default: the root logger's), once each."""
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


__all__ = ["RedactingFilter", "install", "redact"]
