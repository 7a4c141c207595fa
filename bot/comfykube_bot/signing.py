"""The bot's signature over the labels and annotations it writes on the ImageJobs it creates.

Anyone who may create an ImageJob can set `comfykube.dev/requester`,
`comfykube.dev/discord-message` and the rest. Taken at face value, a job made
with kubectl could make the bot ping anyone (the requester label), or edit any
message the bot ever posted (the message annotation). So the bot signs what it
wrote — an HMAC-SHA256 over the namespace, the name and those values, in the
`comfykube.dev/discord-signature` annotation — and honours them only when the
signature matches. A job without a valid signature is a "kubectl job": it is
shown only through `spec.notify.discord`, under the same rules as `/imagine`.

Why a signature and not a record kept elsewhere: it needs no second store
(state lives in the ImageJob), survives restarts, and a second bot with the
same key reads it. The key is `BOT_SIGNING_KEY`, or derived from the Discord
token when unset (rotating the token then turns unfinished jobs into kubectl
jobs: set `BOT_SIGNING_KEY` to avoid that). Residual risk, documented in
docs/bot.md: someone who can delete a bot job and create one with the same
name could copy its signed annotations and have the bot edit that same job's
message again.

Annotations added later (`comfykube.dev/discord-private`) are signed only when
present, as a trailing object after the original five: a job signed before
they existed hashes exactly as it did then, so its signature still verifies;
and adding or removing one on a signed job changes what is hashed, so it no
longer does (the job then counts as a kubectl job).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

from comfykube.names import (
    ANN_CHANNEL,
    ANN_INTERACTION,
    ANN_MESSAGE,
    ANN_PRIVATE,
    ANN_REROLL_OF,
    ANN_UPLOAD_LIMIT,
    LABEL_CHANNEL,
    LABEL_GUILD,
    LABEL_MANAGED_BY,
    LABEL_REQUESTER,
)

#: Labels and annotations that are honoured only under a valid signature.
SIGNED_LABELS = (LABEL_REQUESTER, LABEL_GUILD, LABEL_CHANNEL, LABEL_MANAGED_BY)
#: The annotations of the first signature format, always hashed (None where absent), in this order.
POSITIONAL_ANNOTATIONS = (ANN_CHANNEL, ANN_MESSAGE, ANN_UPLOAD_LIMIT, ANN_INTERACTION, ANN_REROLL_OF)
#: Annotations hashed only when present (older signatures, made without them, keep verifying).
OPTIONAL_ANNOTATIONS = (ANN_PRIVATE,)
SIGNED_ANNOTATIONS = (*POSITIONAL_ANNOTATIONS, *OPTIONAL_ANNOTATIONS)
VERSION = "v1"


class Signer:
    """Signs and verifies the bot's own labels and annotations with one key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the signing key must not be empty")
        self._key = key

    @classmethod
    def from_secrets(cls, signing_key: str | None, discord_token: str) -> Signer:
        """`BOT_SIGNING_KEY` when set, else a key derived from the Discord token (never the token itself)."""
        if signing_key:
            return cls(signing_key.encode())
        return cls(hmac.new(discord_token.encode(), b"comfykube-bot annotation signatures", hashlib.sha256).digest())

    def sign(self, namespace: str, name: str, labels: Mapping[str, str], annotations: Mapping[str, str]) -> str:
        """The signature annotation's value for these metadata."""
        parts: list[object] = [
            VERSION,
            namespace,
            name,
            [labels.get(k) for k in SIGNED_LABELS],
            [annotations.get(k) for k in POSITIONAL_ANNOTATIONS],
        ]
        optional = {k: annotations[k] for k in OPTIONAL_ANNOTATIONS if k in annotations}
        if optional:
            parts.append(optional)
        message = json.dumps(parts, separators=(",", ":"), sort_keys=True).encode()
        return f"{VERSION}:" + hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def verify(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        signature: str | None,
    ) -> bool:
        """True when `signature` is this bot's signature over exactly these values."""
        if not signature:
            return False
        return hmac.compare_digest(signature, self.sign(namespace, name, labels, annotations))


__all__ = ["SIGNED_ANNOTATIONS", "SIGNED_LABELS", "Signer"]
