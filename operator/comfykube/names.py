"""Label, annotation and finalizer names on ImageJobs: one place both the operator and the bot import.

Labels are for selectors (fair share in the operator's scheduler, `/jobs` in
the bot); annotations carry where a job's Discord message is and whether its
result was delivered. Anyone who may create an ImageJob can set any of them,
so each reader treats them as claims, not facts (see docs/bot.md, "Jobs made
with kubectl").
"""

from __future__ import annotations

from comfykube.types import API_GROUP

#: kopf's finalizer on every ImageJob (released after the delete handler ran).
FINALIZER = f"{API_GROUP}/finalizer"
#: Prefix of kopf's bookkeeping annotations (progress, last handled configuration).
KOPF_ANNOTATION_PREFIX = API_GROUP

#: Discord user id of the person who asked (fair share key for the operator).
LABEL_REQUESTER = f"{API_GROUP}/requester"
LABEL_GUILD = f"{API_GROUP}/guild"
LABEL_CHANNEL = f"{API_GROUP}/channel"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
#: The label the chart's operator shards select on by convention (`--selector comfykube.dev/shard=a`).
LABEL_SHARD = f"{API_GROUP}/shard"
#: On finished jobs the operator released (no finalizer); kopf's watch leaves them out.
LABEL_FINISHED = f"{API_GROUP}/finished"
#: Value of LABEL_MANAGED_BY on jobs the bot created.
MANAGED_BY_BOT = "comfykube-bot"

ANN_CHANNEL = f"{API_GROUP}/discord-channel"
ANN_MESSAGE = f"{API_GROUP}/discord-message"
ANN_DELIVERED = f"{API_GROUP}/discord-delivered"
ANN_UPLOAD_LIMIT = f"{API_GROUP}/discord-upload-limit"
ANN_SPOILER = f"{API_GROUP}/discord-spoiler"
ANN_INTERACTION = f"{API_GROUP}/discord-interaction"
ANN_REROLL_OF = f"{API_GROUP}/reroll-of"
#: `true` on jobs whose requester asked for private replies (`/settings`): shown to them only, never in the channel.
ANN_PRIVATE = f"{API_GROUP}/discord-private"
#: HMAC the bot puts over the labels and annotations it wrote (see comfykube_bot.signing).
ANN_SIGNATURE = f"{API_GROUP}/discord-signature"

__all__ = [
    "ANN_CHANNEL",
    "ANN_DELIVERED",
    "ANN_INTERACTION",
    "ANN_MESSAGE",
    "ANN_PRIVATE",
    "ANN_REROLL_OF",
    "ANN_SIGNATURE",
    "ANN_SPOILER",
    "ANN_UPLOAD_LIMIT",
    "FINALIZER",
    "KOPF_ANNOTATION_PREFIX",
    "LABEL_CHANNEL",
    "LABEL_FINISHED",
    "LABEL_GUILD",
    "LABEL_MANAGED_BY",
    "LABEL_REQUESTER",
    "LABEL_SHARD",
    "MANAGED_BY_BOT",
]
