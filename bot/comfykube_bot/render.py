"""What a job message looks like in each state. Pure functions: job in, payload out.

Payloads are plain data (embed dicts in Discord's JSON shape, button specs,
file bytes) so they can be compared (an unchanged state is not re-sent),
tested without discord.py, and turned into discord.py objects only at send
time (`updater.py`, `views.py`).

A job's terminal message has the job key and the phase in its embed footer
(`ns/name · Succeeded`). The delivery recovery in `delivery.py` looks for
exactly that to tell "result already posted" from "not yet".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from comfykube.types import ImageJobSpec, Phase
from comfykube_bot.jobs import JobInfo, parse_time
from comfykube_bot.markdown import code, escape

#: Discord's limits that shape the payloads.
MAX_CONTENT = 2000
MAX_CUSTOM_ID = 100
MAX_BUTTON_URL = 512
MAX_LABEL = 80
MAX_FIELD = 1024

CUSTOM_ID_PREFIX = "ij"
ACTIONS = ("reroll", "cancel", "delete", "link")
#: `ij:<action>:<namespace>/<name>`; namespace and name as Kubernetes allows them.
CUSTOM_ID_PATTERN = (
    r"ij:(?P<action>reroll|cancel|delete|link):(?P<namespace>[a-z0-9-]{1,63})/(?P<name>[a-z0-9.-]{1,253})"
)
_CUSTOM_ID = re.compile(CUSTOM_ID_PATTERN)

PHASE_COLORS = {
    Phase.PENDING: 0x95A5A6,
    Phase.QUEUED: 0x95A5A6,
    Phase.RUNNING: 0x3498DB,
    Phase.UPLOADING: 0x3498DB,
    Phase.SUCCEEDED: 0x2ECC71,
    Phase.FAILED: 0xE74C3C,
    Phase.CANCELLED: 0x7F8C8D,
}


@dataclass(frozen=True)
class ButtonSpec:
    """One button: a custom_id button (persistent, handled by `views.py`) or a link button."""

    label: str
    style: str  # primary, secondary, success, danger, link
    custom_id: str | None = None
    url: str | None = None
    emoji: str | None = None
    #: Action row (0-4); None: the next row with room.
    row: int | None = None


@dataclass(frozen=True)
class FileSpec:
    """One attachment to upload."""

    filename: str
    data: bytes
    spoiler: bool = False
    description: str | None = None

    @property
    def sha256(self) -> str:
        """Checksum of the bytes (for logs and fingerprints)."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class MessagePayload:
    """A full message state. `files=None` leaves the attachments alone; `()` removes them."""

    content: str
    embeds: tuple[dict[str, Any], ...] = ()
    buttons: tuple[ButtonSpec, ...] = ()
    files: tuple[FileSpec, ...] | None = None
    final: bool = False
    mention_user: int | None = None

    def fingerprint(self) -> tuple[Any, ...]:
        """Equal fingerprints render identically: such an edit would change nothing."""
        files = None if self.files is None else tuple((f.filename, f.sha256) for f in self.files)
        return (self.content, repr(self.embeds), self.buttons, files, self.final)


# --------------------------------------------------------------------------- ids


def custom_id(action: str, namespace: str, name: str) -> str | None:
    """`ij:<action>:<ns>/<name>`, or None when it would not fit Discord's 100 characters."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    value = f"{CUSTOM_ID_PREFIX}:{action}:{namespace}/{name}"
    if len(value) > MAX_CUSTOM_ID or not _CUSTOM_ID.fullmatch(value):
        return None
    return value


def parse_custom_id(value: str) -> tuple[str, str, str] | None:
    """(action, namespace, name) from a custom id, or None if it is not one of ours."""
    match = _CUSTOM_ID.fullmatch(value)
    if match is None:
        return None
    return match.group("action"), match.group("namespace"), match.group("name")


# --------------------------------------------------------------------------- small pieces


def progress_bar(value: int, maximum: int, width: int = 14) -> str:
    """`██████░░░░░░░░` for value/maximum (clamped; an unknown maximum shows an empty bar)."""
    if maximum <= 0:
        return "░" * width
    filled = round(width * min(max(value, 0), maximum) / maximum)
    return "█" * filled + "░" * (width - filled)


def format_duration(seconds: float) -> str:
    """`42 s`, `9 min 12 s`, `1 h 3 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def time_taken(job: JobInfo) -> float | None:
    """Seconds from start (or creation) to completion, when both are known."""
    end = parse_time(job.status.completion_time)
    start = parse_time(job.status.start_time) or job.created_at
    if end is None or start is None:
        return None
    return max(0.0, (end - start).total_seconds())


def first_link(job: JobInfo) -> tuple[str | None, dt.datetime | None]:
    """The presigned URL of the first image and when it expires."""
    images = job.status.images
    if images:
        return images[0].url or job.status.url, parse_time(images[0].url_expires_at)
    return job.status.url, None


def link_label(expires_at: dt.datetime | None) -> str:
    """`Full size · link expires 29 Nov 13:05 UTC` (a label cannot show relative time)."""
    if expires_at is None:
        return "Full size"
    return truncate(f"Full size · link expires {expires_at.astimezone(dt.UTC):%d %b %H:%M} UTC", MAX_LABEL)


# --------------------------------------------------------------------------- messages


def status_line(job: JobInfo) -> str:
    """The first line of the job message for its current phase."""
    phase = job.phase
    status = job.status
    if phase is Phase.PENDING:
        return "⏳ **Waiting for a renderer…**"
    if phase is Phase.QUEUED:
        ahead = status.queue_position
        if ahead is not None:
            return f"⏳ **Queued** · position {ahead + 1}" + (f" ({ahead} ahead)" if ahead else " (next up)")
        return "⏳ **Queued**"
    if phase is Phase.RUNNING:
        progress = status.progress
        value, maximum = (progress.value, progress.max) if progress is not None else (0, 0)
        if maximum <= 0:
            return "🎨 **Rendering** · loading the model…"
        percent = round(100 * min(value, maximum) / maximum)
        return f"🎨 **Rendering** `{progress_bar(value, maximum)}` step {value}/{maximum} · {percent}%"
    if phase is Phase.UPLOADING:
        return "📤 **Uploading**…"
    if phase is Phase.SUCCEEDED:
        took = time_taken(job)
        return "✅ **Done**" + (f" in {format_duration(took)}" if took is not None else "")
    if phase is Phase.FAILED:
        return f"❌ **Failed** — {failure_text(job)}"
    return "✖ **Cancelled**" + (f" — {escape(truncate(status.message, 300))}" if status.message else "")


def failure_text(job: JobInfo) -> str:
    """A short reason for a failed job, from status.reason/message (never a traceback), escaped."""
    reason = job.status.reason or "Failed"
    message = (job.status.message or "").strip()
    # The operator's message is written for people; keep only its first line, bounded.
    message = message.splitlines()[0] if message else ""
    return escape(truncate(f"{reason}: {message}" if message else reason, 600))


def job_embed(job: JobInfo, *, final: bool, note: str | None = None) -> dict[str, Any]:
    """The embed: prompt, parameters, and for finished jobs the time taken. User text is escaped."""
    spec, status = job.spec, job.status
    seed = status.seed if status.seed is not None else spec.seed
    model = job.model_used
    fields: list[dict[str, Any]] = [
        {"name": "Seed", "value": f"`{seed}`" if seed is not None else "random", "inline": True},
        {"name": "Model", "value": code(truncate(model, 190)) if model else "default", "inline": True},
        {"name": "Size", "value": f"{spec.width}×{spec.height}", "inline": True},
        {"name": "Steps", "value": str(spec.steps), "inline": True},
        {"name": "CFG", "value": f"{spec.cfg:g}", "inline": True},
    ]
    if spec.batch_size > 1:
        fields.append({"name": "Images", "value": str(spec.batch_size), "inline": True})
    if spec.workflow != ImageJobSpec.model_fields["workflow"].default:
        fields.append({"name": "Workflow", "value": code(spec.workflow), "inline": True})
    if spec.negative_prompt:
        fields.append({"name": "Negative", "value": escape(truncate(spec.negative_prompt, 300)), "inline": False})
    took = time_taken(job) if final else None
    if took is not None:
        fields.append({"name": "Time taken", "value": format_duration(took), "inline": True})
    if final and job.phase is Phase.SUCCEEDED:
        _url, expires = first_link(job)
        if expires is not None:
            fields.append({"name": "Link", "value": f"expires <t:{int(expires.timestamp())}:R>", "inline": True})
    if note:
        fields.append({"name": "Note", "value": truncate(note, MAX_FIELD), "inline": False})
    footer = f"{job.key} · {job.phase.value}" if final else job.key
    return {
        "type": "rich",
        "description": escape(truncate(spec.prompt, 1500)),
        "color": PHASE_COLORS.get(job.phase, 0x95A5A6),
        "fields": fields,
        "footer": {"text": truncate(footer, 2048)},
    }


def final_marker(job: JobInfo, phase: Phase | None = None) -> str:
    """The footer text a delivered terminal message carries."""
    return f"{job.key} · {(phase or job.phase).value}"


def job_buttons(
    job: JobInfo, *, final: bool, link: tuple[str | None, dt.datetime | None] | None = None
) -> list[ButtonSpec]:
    """Buttons for the job's state; ones whose custom id would not fit are left out."""
    ns, name = job.namespace, job.name
    out: list[ButtonSpec] = []
    if not final:
        cid = custom_id("cancel", ns, name)
        if cid:
            out.append(ButtonSpec("Cancel", "danger", custom_id=cid, emoji="✖️"))
        return out
    if job.phase is Phase.SUCCEEDED:
        url, expires = link if link is not None else first_link(job)
        if url and url.startswith(("http://", "https://")) and len(url) <= MAX_BUTTON_URL:
            out.append(ButtonSpec(link_label(expires), "link", url=url, emoji="🔗"))
        cid = custom_id("link", ns, name)
        if cid:
            out.append(ButtonSpec("Fresh link", "secondary", custom_id=cid, emoji="🔄"))
    for action, label, style, emoji in (("reroll", "Reroll", "primary", "🎲"), ("delete", "Delete", "secondary", "🗑️")):
        cid = custom_id(action, ns, name)
        if cid:
            out.append(ButtonSpec(label, style, custom_id=cid, emoji=emoji))
    return out


def render_progress(job: JobInfo) -> MessagePayload:
    """The job message while the job is not finished."""
    return MessagePayload(
        content=status_line(job),
        embeds=(job_embed(job, final=False),),
        buttons=tuple(job_buttons(job, final=False)),
    )


def render_final(
    job: JobInfo,
    files: tuple[FileSpec, ...] = (),
    *,
    note: str | None = None,
    link: tuple[str | None, dt.datetime | None] | None = None,
) -> MessagePayload:
    """The job message once the job is finished: result (with images) or the short failure reason."""
    requester = job.requester
    head = status_line(job)
    content = truncate(f"<@{requester}> {head}" if requester else head, MAX_CONTENT)
    return MessagePayload(
        content=content,
        embeds=(job_embed(job, final=True, note=note),),
        buttons=tuple(job_buttons(job, final=True, link=link)),
        files=tuple(files),
        final=True,
        mention_user=requester,
    )


def render_withheld(job: JobInfo, why: str) -> MessagePayload:
    """The final message of a job whose picture may not be shown in its channel (no image, no link)."""
    requester = job.requester
    head = f"⚠️ **Not shown here** — {why}"
    # No link and no "Fresh link": the picture must not be reachable from here either.
    every = job_buttons(job, final=True, link=(None, None))
    buttons = [b for b in every if b.custom_id and ":link:" not in b.custom_id]
    return MessagePayload(
        content=truncate(f"<@{requester}> {head}" if requester else head, MAX_CONTENT),
        embeds=(job_embed(job, final=True),),
        buttons=tuple(buttons),
        files=(),
        final=True,
        mention_user=requester,
    )


def render_deleted(job: JobInfo, *, by_owner: bool = False) -> MessagePayload:
    """The job message after the job was deleted before it finished (Cancel, or kubectl delete)."""
    text = "✖ **Cancelled** by its owner." if by_owner else "🗑️ **Deleted** before it finished."
    embed = job_embed(job, final=False)
    embed["color"] = PHASE_COLORS[Phase.CANCELLED]
    embed["footer"] = {"text": f"{job.key} · {Phase.CANCELLED.value}"}
    return MessagePayload(content=text, embeds=(embed,), buttons=(), files=None, final=True)


def jump_url(guild_id: int | None, channel_id: int | None, message_id: int | None) -> str | None:
    """`https://discord.com/channels/<guild|@me>/<channel>/<message>`."""
    if not channel_id or not message_id:
        return None
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def job_list_line(job: JobInfo, guild_id: int | None) -> str:
    """`` `ij-1` ✅ Succeeded · a cat in… · [message](…) · [image](…) ``"""
    icon = {
        Phase.PENDING: "⏳",
        Phase.QUEUED: "⏳",
        Phase.RUNNING: "🎨",
        Phase.UPLOADING: "📤",
        Phase.SUCCEEDED: "✅",
        Phase.FAILED: "❌",
        Phase.CANCELLED: "✖",
    }[job.phase]
    parts = [f"`{job.name}` {icon} {job.phase.value}"]
    progress = job.status.progress
    if job.phase is Phase.RUNNING and progress is not None and progress.max:
        parts[0] += f" {progress.value}/{progress.max}"
    if job.deleting:
        parts[0] += " (deleting)"
    parts.append(escape(truncate(job.spec.prompt.replace("\n", " "), 60)))
    # A private job's message is ephemeral: there is nothing to jump to.
    jump = None if job.private else jump_url(guild_id, job.channel_id, job.message_id)
    if jump:
        parts.append(f"[message]({jump})")
    url, expires = first_link(job)
    if url and url.startswith("http") and (expires is None or expires > dt.datetime.now(dt.UTC)):
        parts.append(f"[image]({url})")
    return " · ".join(parts)


def render_job_list(jobs: list[JobInfo], guild_id: int | None, *, title: str, empty: str) -> str:
    """A bounded list for an ephemeral reply (content ≤ 2000 characters)."""
    if not jobs:
        return empty
    lines = [title]
    for job in jobs:
        line = job_list_line(job, guild_id)
        # Long presigned URLs eat the budget quickly: drop the image link before dropping the line.
        if sum(len(x) + 1 for x in lines) + len(line) > MAX_CONTENT - 40:
            line = re.sub(r" · \[image\]\([^)]*\)$", "", line)
        if sum(len(x) + 1 for x in lines) + len(line) > MAX_CONTENT - 40:
            lines.append(f"…and {len(jobs) - len(lines) + 1} more")
            break
        lines.append(line)
    return "\n".join(lines)


def render_queue(jobs: list[JobInfo], *, cap: int) -> str:
    """What is waiting or running, oldest first, with the requester (no pings: mentions are disabled)."""
    if not jobs:
        return "The queue is empty. 🎉"
    running = [j for j in jobs if j.phase in (Phase.RUNNING, Phase.UPLOADING)]
    waiting = [j for j in jobs if j.phase not in (Phase.RUNNING, Phase.UPLOADING)]
    lines = [f"**{len(waiting)} waiting** (cap {cap}) · **{len(running)} rendering**"]
    for index, job in enumerate(running + waiting, start=1):
        who = f"<@{job.requester}>" if job.requester else "kubectl"
        state = job.phase.value
        progress = job.status.progress
        if job.phase is Phase.RUNNING and progress is not None and progress.max:
            state += f" {progress.value}/{progress.max}"
        # /queue is for anyone: a private job's prompt is not shown there.
        prompt = "🔒 private" if job.private else escape(truncate(job.spec.prompt.replace("\n", " "), 50))
        line = f"{index}. `{job.name}` {state} · {who} · {prompt}"
        if sum(len(x) + 1 for x in lines) + len(line) > MAX_CONTENT - 40:
            lines.append(f"…and {len(jobs) - index + 1} more")
            break
        lines.append(line)
    return "\n".join(lines)


__all__ = [
    "CUSTOM_ID_PATTERN",
    "ButtonSpec",
    "FileSpec",
    "MessagePayload",
    "custom_id",
    "failure_text",
    "final_marker",
    "format_duration",
    "job_buttons",
    "job_embed",
    "parse_custom_id",
    "progress_bar",
    "render_deleted",
    "render_final",
    "render_job_list",
    "render_progress",
    "render_queue",
    "render_withheld",
    "status_line",
]
