"""Jobs made from another job's image: Upscale (U<n>), Vary (V<n>, subtle/strong) and Remix (🖌).

- **Upscale** — a new ImageJob with the `upscale` workflow whose input image
  is `fromJob: {name, index}` of the clicked result;
- **Vary** — an `img2img` ImageJob from that image: the same prompt, negative
  prompt, model, steps, CFG, sampler and scheduler, a new seed, and
  `spec.inputs.denoise` 0.35 (subtle) or 0.65 (strong);
- **Remix** — a modal with the prompt, negative prompt and seed prefilled;
  what is submitted becomes a new job with the source's other settings. The
  modal's custom id `rxm:<namespace>/<name>` names the source job, and the
  submission reads it again (`modals.py`), so a modal opened before a restart
  still works.

All three go through `Submitter.submit` — the same deny-list, model rules,
per-user limits, cooldown and queue cap as `/imagine` — for whoever clicked,
who is recorded as the new job's requester. Upscale and Vary post their job
message as a reply to the grid. A job made from a private job is private too
(an ephemeral job message, no reply in the channel, a late result by DM),
whoever clicked. State comes from the ImageJob named in the custom id, so the
buttons work after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import discord
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from comfykube.errors import InvalidSpec, JobError
from comfykube.types import MAX_PROMPT_LENGTH, ImageJobSpec, Phase
from comfykube.workflows import WorkflowLibrary
from comfykube_bot.grid import GRID_ID_PATTERN
from comfykube_bot.jobs import JobInfo, JobStore
from comfykube_bot.metrics import BotMetrics
from comfykube_bot.modals import MAX_MODAL_ID, send_stopped
from comfykube_bot.policy import Policy
from comfykube_bot.specs import DISCORD_MAX_INT, OptionError, describe_errors, new_seed
from comfykube_bot.submit import Submitter, caller_of, reply

log = logging.getLogger(__name__)

UPSCALE_WORKFLOW = "upscale"
VARY_WORKFLOW = "img2img"
#: img2img denoise of Vary (Subtle) and Vary (Strong).
DENOISE = {"vs": 0.35, "vv": 0.65}
#: Seconds to read the source job before a Remix modal (the modal must be the first answer, within 3 s).
MODAL_READ_TIMEOUT = 2.0
#: Discord's limit on a modal text input.
TEXT_INPUT_MAX = 4000
#: The Remix modal's custom id: the source ImageJob (shorter than the `ig:rx:` id it is opened from, so it fits).
REMIX_MODAL_PATTERN = r"rxm:(?P<namespace>[a-z0-9-]{1,63})/(?P<name>[a-z0-9.-]{1,253})"
_REMIX_MODAL_ID = re.compile(REMIX_MODAL_PATTERN)


def remix_modal_id(namespace: str, name: str) -> str | None:
    """The Remix modal's custom id for a source job (None when it would not be a valid one)."""
    value = f"rxm:{namespace}/{name}"
    return value if len(value) <= MAX_MODAL_ID and _REMIX_MODAL_ID.fullmatch(value) else None


def parse_remix_modal_id(custom_id: object) -> tuple[str, str] | None:
    """(namespace, name) from a submitted modal's custom id (untrusted); None when it is not a Remix modal."""
    if not isinstance(custom_id, str) or len(custom_id) > MAX_MODAL_ID:
        return None
    match = _REMIX_MODAL_ID.fullmatch(custom_id)
    return (match["namespace"], match["name"]) if match else None


def _carried(spec: ImageJobSpec) -> dict[str, Any]:
    """What a derived job keeps from its source (the job's own bookkeeping fields are not carried)."""
    return {"prompt": spec.prompt, "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished}


def _image_name(workflows: WorkflowLibrary, workflow: str) -> str:
    images = list(workflows.get(workflow).images)
    if len(images) != 1:
        raise InvalidSpec(f"workflow {workflow!r} must take exactly one input image (it takes {images})")
    return images[0]


def upscale_spec(workflows: WorkflowLibrary, source: JobInfo, index: int) -> ImageJobSpec:
    """An `upscale` job of image `index` of `source`."""
    data = _carried(source.spec)
    image = {"name": _image_name(workflows, UPSCALE_WORKFLOW), "fromJob": {"name": source.name, "index": index}}
    data.update(workflow=UPSCALE_WORKFLOW, images=[image])
    return _validated(data)


def vary_spec(workflows: WorkflowLibrary, source: JobInfo, index: int, denoise: float) -> ImageJobSpec:
    """An `img2img` job from image `index` of `source` with a new seed."""
    spec = source.spec
    data = _carried(spec)
    data.update(
        workflow=VARY_WORKFLOW, negativePrompt=spec.negative_prompt, model=source.model_used, steps=spec.steps,
        cfg=spec.cfg, sampler=spec.sampler, scheduler=spec.scheduler, seed=new_seed(), inputs={"denoise": denoise},
        images=[{"name": _image_name(workflows, VARY_WORKFLOW), "fromJob": {"name": source.name, "index": index}}],
    )
    return _validated(data)


def remix_spec(source: JobInfo, prompt: str, negative: str, seed: str) -> ImageJobSpec:
    """The source spec with the modal's prompt, negative prompt and seed (empty seed: a new one)."""
    data = {k: v for k, v in source.spec.wire().items() if k not in ("notify",)}
    data["prompt"] = prompt
    data["negativePrompt"] = negative
    seed = seed.strip()
    if not seed:
        data["seed"] = new_seed()
    elif seed.isdigit() and int(seed) <= DISCORD_MAX_INT:
        data["seed"] = int(seed)
    else:
        raise OptionError("seed", f"`seed` must be a whole number from 0 to {DISCORD_MAX_INT} (got {seed[:30]!r})")
    return _validated(data)


def _validated(data: dict[str, Any]) -> ImageJobSpec:
    data = {k: v for k, v in data.items() if v is not None}
    try:
        return ImageJobSpec.model_validate(data)
    except ValidationError as exc:
        raise describe_errors(exc) from None


class Derivations:
    """Upscale, Vary and Remix for one bot."""

    def __init__(
        self, *, jobs: JobStore, policy: Policy, submitter: Submitter, workflows: WorkflowLibrary, metrics: BotMetrics
    ) -> None:
        self.jobs = jobs
        self.policy = policy
        self.submitter = submitter
        self.workflows = workflows
        self.metrics = metrics

    def _count(self, name: str, outcome: str) -> None:
        self.metrics.interactions.labels(kind="button", name=name, outcome=outcome).inc()

    async def click(self, interaction: discord.Interaction[Any], action: str, index: int, namespace: str,
                    name: str) -> None:
        """One U/V/Remix click."""
        if action == "rx":
            await self.open_remix(interaction, namespace, name)
            return
        if not await self.submitter.defer(interaction, time.perf_counter()):
            return
        source = await self._source(interaction, action, namespace, name)
        if source is None:
            return
        if source.phase is not Phase.SUCCEEDED or index >= len(source.status.images):
            await reply(interaction, "That image is not stored (any more), so I can't use it.")
            self._count(action, "missing")
            return
        try:
            if action == "up":
                spec = upscale_spec(self.workflows, source, index)
            else:
                spec = vary_spec(self.workflows, source, index, DENOISE[action])
        except (OptionError, JobError) as exc:
            await reply(interaction, f"⚠️ I can't make that job: {exc.message}")
            self._count(action, "invalid")
            return
        caller = caller_of(interaction)
        refusal = self.policy.check_access(caller)
        if refusal is not None:
            await self.submitter.refuse(interaction, refusal, action)
            return
        command = {"up": "upscale", "vs": "vary", "vv": "vary"}[action]
        grid_message = interaction.message.id if interaction.message is not None else None
        await self.submitter.submit(interaction, caller, spec, spoiler=source.spoiler, command=command,
                                    reroll_of=source.key, reply_to=grid_message,
                                    private=True if source.private else None)

    async def _source(self, interaction: discord.Interaction[Any], action: str, namespace: str,
                      name: str) -> JobInfo | None:
        if namespace != self.jobs.namespace:
            await reply(interaction, "That job belongs to another deployment of this bot.")
            self._count(action, "foreign")
            return None
        try:
            job = await self.jobs.get(name, namespace)
        except (ApiException, OSError, TimeoutError) as exc:
            log.error("reading ImageJob %s/%s failed: %s", namespace, name, exc)
            await reply(interaction, "⚠️ I can't reach the render queue right now. Please try again in a minute.")
            self._count(action, "error")
            return None
        if job is None:
            await reply(interaction, "That job no longer exists.")
            self._count(action, "missing")
        return job

    async def open_remix(self, interaction: discord.Interaction[Any], namespace: str, name: str) -> None:
        """Answer with the Remix modal (it must be the first answer: no deferral before it)."""
        job: JobInfo | None = None
        if namespace == self.jobs.namespace:
            try:
                job = await asyncio.wait_for(self.jobs.get(name, namespace), MODAL_READ_TIMEOUT)
            except (ApiException, OSError, TimeoutError) as exc:
                log.error("reading ImageJob %s/%s failed: %s", namespace, name, exc)
        if job is None:
            await reply(interaction, "I can't read that job right now (or it no longer exists).")
            self._count("remix", "missing")
            return
        await send_stopped(interaction, RemixModal(job))

    async def submit_remix(self, interaction: discord.Interaction[Any], namespace: str, name: str,
                           values: dict[str, str]) -> None:
        """A Remix modal was submitted (maybe to an earlier process): a new job with the changes, like /imagine."""
        if not await self.submitter.defer(interaction, time.perf_counter()):
            return
        caller = caller_of(interaction)
        refusal = self.policy.check_access(caller)
        if refusal is not None:
            await self.submitter.refuse(interaction, refusal, "remix")
            return
        source = await self._source(interaction, "remix", namespace, name)
        if source is None:
            return
        try:
            spec = remix_spec(source, values.get("prompt", ""), values.get("negative", ""), values.get("seed", ""))
        except OptionError as exc:
            await reply(interaction, f"⚠️ {exc.message}")
            self._count("remix", "invalid")
            return
        await self.submitter.submit(interaction, caller, spec, spoiler=source.spoiler, command="remix",
                                    reroll_of=source.key, private=True if source.private else None)


class RemixModal(discord.ui.Modal, title="Remix"):
    """Prompt, negative prompt and seed of the source job, editable.

    Only a form: it is sent stopped, and its submission is routed by its custom id to
    `Derivations.submit_remix` (`modals.py`).
    """

    def __init__(self, source: JobInfo) -> None:
        custom_id = remix_modal_id(source.namespace, source.name)
        if custom_id is None:
            raise ValueError(f"no Remix modal id for {source.key}")
        super().__init__(custom_id=custom_id, timeout=None)
        spec = source.spec
        seed = source.status.seed if source.status.seed is not None else spec.seed
        limit = min(MAX_PROMPT_LENGTH, TEXT_INPUT_MAX)
        self.prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Prompt", style=discord.TextStyle.paragraph, default=spec.prompt[:limit], max_length=limit,
            custom_id="prompt",
        )
        self.negative: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Negative prompt", style=discord.TextStyle.paragraph, required=False,
            default=spec.negative_prompt[:limit], max_length=limit, custom_id="negative",
        )
        self.seed: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Seed (empty: a new one)", required=False, default="" if seed is None else str(seed),
            max_length=20, custom_id="seed",
        )
        for item in (self.prompt, self.negative, self.seed):
            self.add_item(item)


class DeriveButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=re.compile(GRID_ID_PATTERN)):
    """Routes U<n>, V<n>, Vary and Remix clicks (also on messages posted before a restart)."""

    def __init__(self, action: str, index: int, namespace: str, name: str) -> None:
        super().__init__(discord.ui.Button(label=action, custom_id=f"ig:{action}:{index}:{namespace}/{name}"))
        self.action, self.index, self.namespace, self.job_name = action, index, namespace, name

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> DeriveButton:
        """No I/O here: the custom id is the state."""
        return cls(match["action"], int(match["index"]), match["namespace"], match["name"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Hand the click to the bot's `Derivations`."""
        derivations = getattr(interaction.client, "derivations", None)
        if derivations is None:
            return
        try:
            await derivations.click(interaction, self.action, self.index, self.namespace, self.job_name)
        except Exception:
            log.exception("derive button %s on %s/%s failed", self.action, self.namespace, self.job_name)
            await reply(interaction, "⚠️ Something went wrong on my side. The details are in my logs.")


__all__ = [
    "DENOISE",
    "REMIX_MODAL_PATTERN",
    "Derivations",
    "DeriveButton",
    "RemixModal",
    "parse_remix_modal_id",
    "remix_modal_id",
    "remix_spec",
    "upscale_spec",
    "vary_spec",
]
