"""The run of one ImageJob, step by step, resumable from a known prompt id.

validate → health → preflight → render → submit or attach → follow →
download and check → store → result. The CLI and the operator both run it;
it knows nothing about Kubernetes or Discord. Phase changes and progress go
out through a `Reporter` callback; the caller persists them (status, a
progress bar, a chat message).

Idempotency: the prompt id is the job's uid. Each submission is counted and
reported *before* its POST /prompt (the operator writes the count to status at
once), so a job whose record shows a submission may have one in ComfyUI: before
submitting it, the pipeline asks ComfyUI whether it knows the prompt (queued,
running or done) and attaches instead, so a restarted operator never renders
twice. A job with no submission on record cannot have one and goes straight to
POST /prompt. A prompt ComfyUI lost (its server restarted) is submitted again at
most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from comfykube import metrics, tempfiles
from comfykube.checkpoint_rules import CheckpointRules
from comfykube.clock import REAL_CLOCK, Clock, now_rfc3339, rfc3339
from comfykube.comfyui.client import ComfyClient
from comfykube.comfyui.models import (
    DownloadedImage,
    HistoryEntry,
    PreviewCallback,
    ProgressUpdate,
    PromptPhase,
    PromptState,
)
from comfykube.comfyui.transport import BackendRefused
from comfykube.errors import (
    ComfyUIUnavailable,
    DeadlineExceeded,
    DownloadFailed,
    InvalidSpec,
    JobError,
    PreflightFailed,
    PromptLost,
    PromptRejected,
)
from comfykube.inputs import InputLimits, PreparedImage, Source, prepare_images, sources_from_spec
from comfykube.settings import Settings
from comfykube.storage import ObjectStore, object_key
from comfykube.storage.thumbnails import MAX_SIDE as THUMBNAIL_SIDE
from comfykube.storage.thumbnails import store_thumbnail
from comfykube.types import (
    MAX_OUTPUTS,
    MAX_SEED,
    ImageJobSpec,
    ImageJobStatus,
    OutputKind,
    Phase,
    Progress,
    StoredImage,
)
from comfykube.workflows import RenderedWorkflow, WorkflowLibrary, render_raw_graph

log = logging.getLogger(__name__)

#: A lost prompt is submitted again at most this many times in all.
MAX_SUBMISSIONS = 2


@dataclass(frozen=True)
class JobIdentity:
    """Who the job is: names the prompt, the output prefix and the object keys."""

    namespace: str
    name: str
    uid: str

    @property
    def prompt_id(self) -> str:
        """ComfyUI prompt id: the uid, so a restarted process finds its prompt."""
        return self.uid

    @property
    def random_seed(self) -> int:
        """The seed for a spec without one: random across jobs, the same for one job.

        Drawn from the uid, so an operator killed after submitting but before writing
        the seed to status reports the seed ComfyUI really used when it re-attaches.
        Below 2^53 so it stays exact in JavaScript-based tools that read status.
        """
        digest = hashlib.sha256(self.uid.encode()).digest()
        return int.from_bytes(digest[:8], "big") % min(MAX_SEED, 2**53)

    @property
    def input_subfolder(self) -> str:
        """Per-job folder in ComfyUI's input directory: two jobs never read each other's input."""
        return f"comfykube/{self.uid}"

    @property
    def output_prefix(self) -> str:
        """Per-job SaveImage prefix (ComfyUI re-reports old filenames on a cache hit)."""
        return f"comfykube/{self.uid}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ResumeState:
    """What an earlier run already recorded (from status); empty for a new job."""

    seed: int | None = None
    #: Submissions on record, each counted before its POST /prompt was sent.
    submissions: int = 0

    @property
    def may_have_submitted(self) -> bool:
        """True when ComfyUI may know the prompt already (ask it before submitting)."""
        return self.submissions > 0


@dataclass(frozen=True)
class PipelineEvent:
    """A phase change or progress update, for whoever shows or persists it."""

    phase: Phase
    message: str = ""
    prompt_id: str | None = None
    seed: int | None = None
    backend: str | None = None
    submissions: int | None = None
    queue_position: int | None = None
    progress: Progress | None = None
    #: Set for something worth an Event of its own (e.g. "PromptResubmitted").
    notice: str | None = None


Reporter = Callable[[PipelineEvent], Awaitable[None]]


async def _ignore(_: PipelineEvent) -> None:
    return None


@dataclass
class Pipeline:
    """Runs jobs against one ComfyUI backend and one object store."""

    comfy: ComfyClient
    store: ObjectStore
    workflows: WorkflowLibrary
    clock: Clock = REAL_CLOCK
    presign_expiry_seconds: int = 3600
    health_retries: int = 5
    poll_interval: float = 2.0
    lost_polls: int = 3
    #: Give up following a prompt after ComfyUI has not answered for this long (retryable).
    unreachable_grace: float | None = 60.0
    tmp_dir: Path | None = None
    #: Also keep a local copy of every verified image here (under its object key).
    keep_copies_in: Path | None = None
    #: A health check younger than this is trusted (saves three requests per job in a burst).
    health_ttl: float = 10.0
    #: Accept spec.graph (ALLOW_RAW_GRAPHS); off by default, the CLI allows it for local use.
    allow_raw_graphs: bool = False
    #: Which checkpoints may be used, and which are never picked as a fallback.
    checkpoint_rules: CheckpointRules = field(default_factory=CheckpointRules)
    #: Rules for input images (size, pixels, private URLs).
    input_limits: InputLimits = field(default_factory=InputLimits)
    #: An `s3Key` input must lie under the job's namespace (off for the CLI: no tenants there).
    confine_keys_to_namespace: bool = True
    _store_ready: bool = field(default=False, init=False)
    _healthy_at: float = field(default=float("-inf"), init=False)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        comfy: ComfyClient,
        store: ObjectStore,
        workflows: WorkflowLibrary,
        clock: Clock = REAL_CLOCK,
        keep_copies_in: Path | None = None,
        allow_raw_graphs: bool | None = None,
    ) -> Pipeline:
        """A pipeline tuned by the deployment's settings (the CLI and the operator share this)."""
        return cls(
            comfy=comfy,
            store=store,
            workflows=workflows,
            clock=clock,
            presign_expiry_seconds=settings.presign_expiry_seconds,
            health_retries=settings.comfyui_health_retries,
            poll_interval=settings.comfyui_poll_interval,
            lost_polls=settings.comfyui_lost_polls,
            unreachable_grace=settings.comfyui_unreachable_grace,
            keep_copies_in=keep_copies_in,
            allow_raw_graphs=settings.allow_raw_graphs if allow_raw_graphs is None else allow_raw_graphs,
            checkpoint_rules=CheckpointRules.of(
                settings.checkpoint_allow, settings.checkpoint_deny, settings.checkpoint_restricted
            ),
            input_limits=settings.input_limits(),
        )

    def prepare(
        self,
        spec: ImageJobSpec,
        job: JobIdentity,
        resume: ResumeState,
        *,
        images: Mapping[str, str] | None = None,
    ) -> RenderedWorkflow:
        """Render the graph; the seed is the recorded one, the spec's, or one drawn from the uid.

        `images` maps the workflow's image names to the names ComfyUI stored the uploads
        under; until they are uploaded, `{input_subfolder}/{name}` stands in for them.
        Every check that needs no ComfyUI happens here (workflow, fields, spec.inputs,
        images, raw graphs allowed), so a bad spec fails before any request.
        """
        if spec.graph is not None:
            if not self.allow_raw_graphs:
                raise InvalidSpec(
                    "spec.graph: raw graphs are not accepted by this deployment (set ALLOW_RAW_GRAPHS=true "
                    "to allow them; a raw graph can run any node installed on ComfyUI); use a workflow instead"
                )
            return render_raw_graph(spec, output_prefix=job.output_prefix)
        seed = resume.seed if resume.seed is not None else spec.seed
        if seed is None:
            seed = job.random_seed
        workflow = self.workflows.get(spec.workflow)
        if images is None:
            images = {image.name: f"{job.input_subfolder}/{image.name}" for image in spec.images or ()}
        return workflow.render(spec, seed=seed, output_prefix=job.output_prefix, images=images)

    def image_sources(
        self,
        spec: ImageJobSpec,
        job: JobIdentity,
        *,
        resolved_jobs: Mapping[str, str] | None = None,
        local_files: Mapping[str, Path] | None = None,
    ) -> dict[str, Source]:
        """Where each input image comes from; InvalidSpec when one cannot be used here."""
        if spec.graph is not None and (spec.images or local_files):
            raise InvalidSpec("spec.images: a raw graph (spec.graph) names its own files; images are for workflows")
        return sources_from_spec(
            spec.images or (),
            namespace=job.namespace,
            resolved_jobs=resolved_jobs,
            local_files=local_files,
            confine_keys_to_namespace=self.confine_keys_to_namespace,
        )

    async def run(
        self,
        spec: ImageJobSpec,
        job: JobIdentity,
        *,
        report: Reporter = _ignore,
        resume: ResumeState | None = None,
        deadline_at: float | None = None,
        resolved_jobs: Mapping[str, str] | None = None,
        local_images: Mapping[str, Path] | None = None,
        on_preview: PreviewCallback | None = None,
    ) -> ImageJobStatus:
        """Run the job to a Succeeded status, or raise a JobError.

        `deadline_at` is a `clock.now()` value; past it the prompt is cancelled
        in ComfyUI and DeadlineExceeded is raised. Cancelling the task (operator
        shutdown) leaves the prompt running so a new process can attach to it.
        `resolved_jobs` gives the object key of each `fromJob` image (the operator
        reads it from the other ImageJob); `local_images` adds images from files (CLI).
        `on_preview` gets ComfyUI's live preview frames while the prompt runs (the caller
        decides what to keep: the operator stores one per interval, see controller/previews.py).
        """
        resume = resume or ResumeState()
        started = now_rfc3339(self.clock)
        sources = self.image_sources(spec, job, resolved_jobs=resolved_jobs, local_files=local_images)
        placeholders = {name: f"{job.input_subfolder}/{name}" for name in sources}
        rendered = self.prepare(spec, job, resume, images=placeholders)
        seed = rendered.seed
        backend = self.comfy.base_url
        event = PipelineEvent(phase=Phase.PENDING, prompt_id=job.prompt_id, seed=seed, backend=backend)
        await report(replace(event, message="checking ComfyUI"))

        if spec.model is not None:
            refusal = self.checkpoint_rules.refusal(spec.model)
            if refusal is not None:
                raise InvalidSpec(f"spec.model: {refusal}")
        submissions = resume.submissions
        # A directory for input images only when there are some (each costs a mkdir and an rmtree).
        with tempfiles.job_dir(self.tmp_dir) if sources else contextlib.nullcontext("") as inputs_dir:
            staged = _StagedInputs(self, spec, job, resume, sources, Path(inputs_dir))
            if not resume.may_have_submitted:
                # A new job: fetch, check and upload its inputs while ComfyUI is checked (the
                # submission waits for both). A resumed one may attach: it takes them in if it submits.
                staged.start()
            try:
                rendered = await self._check_backend(spec, job, resume, rendered, placeholders)
                entry, submissions = await self._submit_or_attach(
                    rendered, job, submissions, event, report, deadline_at, before_submit=staged.graph,
                    on_preview=on_preview,
                )
            except DeadlineExceeded:
                await self.comfy.cancel(job.prompt_id)
                raise
            finally:
                await staged.aclose()
        await report(replace(event, phase=Phase.UPLOADING, submissions=submissions, message="storing outputs"))
        images = await self._collect(entry, rendered, job)
        status = ImageJobStatus(
            phase=Phase.SUCCEEDED,
            reason="Succeeded",
            message=_stored_message(images),
            prompt_id=job.prompt_id,
            backend=backend,
            seed=seed,
            model=rendered.checkpoint,
            submissions=submissions,
            images=images,
            image_count=len(images),
            url=images[0].url if images else None,
            progress=Progress(value=spec.steps, max=spec.steps),
            progress_text=f"{spec.steps}/{spec.steps}",
            start_time=started,
            completion_time=now_rfc3339(self.clock),
        )
        return status

    async def _check_backend(
        self,
        spec: ImageJobSpec,
        job: JobIdentity,
        resume: ResumeState,
        rendered: RenderedWorkflow,
        placeholders: Mapping[str, str],
    ) -> RenderedWorkflow:
        """Health, the checkpoint fallback, preflight and the store: the graph as it will run."""
        await self.check_health()
        if spec.model is None and rendered.checkpoint is not None:
            spec = await self._installed_default(spec, rendered)
            rendered = self.prepare(spec, job, resume, images=placeholders)
            refusal = self.checkpoint_rules.refusal(rendered.checkpoint) if rendered.checkpoint else None
            if refusal is not None:
                raise PreflightFailed(f"the workflow's default {refusal}; name an allowed one in spec.model")
        await self.comfy.preflight(
            checkpoint=rendered.checkpoint,
            sampler=rendered.sampler,
            scheduler=rendered.scheduler,
            choices=rendered.server_choices,
        )
        if not self._store_ready:
            # Fail before spending GPU time when the images could not be stored anyway.
            await self.store.ensure_ready()
            self._store_ready = True
        return rendered

    async def _installed_default(self, spec: ImageJobSpec, rendered: RenderedWorkflow) -> ImageJobSpec:
        """No model asked for and the workflow's default is not installed: use one that is.

        A spec that names no model means "whatever this ComfyUI has", as ComfyUI's own UI
        does; a model the spec names is never swapped (preflight refuses it instead). A
        checkpoint the deployment restricts (e.g. NSFW ones) or refuses is never picked.
        """
        installed = await self.comfy.checkpoints(fresh=False)
        if not installed or rendered.checkpoint in installed:
            return spec
        candidates = self.checkpoint_rules.fallbacks(installed)
        if not candidates:
            raise PreflightFailed(
                f"the workflow's default checkpoint {rendered.checkpoint!r} is not installed and none of the "
                f"installed ones ({', '.join(installed)}) may be picked automatically (CHECKPOINT_RESTRICTED, "
                "CHECKPOINT_DENY, CHECKPOINT_ALLOW); name one in spec.model"
            )
        log.info("checkpoint %s is not installed; using %s", rendered.checkpoint, candidates[0])
        return spec.model_copy(update={"model": candidates[0]})

    async def check_health(self) -> None:
        """Health-check ComfyUI (with retries) unless a recent check passed."""
        if self.clock.now() - self._healthy_at < self.health_ttl:
            return
        await self.comfy.health(retries=self.health_retries)
        self._healthy_at = self.clock.now()

    async def _submit_or_attach(
        self,
        rendered: RenderedWorkflow,
        job: JobIdentity,
        submissions: int,
        event: PipelineEvent,
        report: Reporter,
        deadline_at: float | None,
        *,
        before_submit: Callable[[RenderedWorkflow], Awaitable[RenderedWorkflow]] | None = None,
        on_preview: PreviewCallback | None = None,
    ) -> tuple[HistoryEntry, int]:
        """Attach to a prompt ComfyUI knows, or submit (again, at most once after a loss).

        `before_submit` runs right before each submission (input images: fetched and
        checked once, uploaded to the backend each time, so a moved job finds them too).
        """
        pid = job.prompt_id
        timing: dict[str, float] = {}

        async def on_progress(update: ProgressUpdate) -> None:
            if update.running and "running" not in timing:
                timing["running"] = time.monotonic()
                if "submitted" in timing:
                    metrics.QUEUE_WAIT.observe(timing["running"] - timing["submitted"])
            if not update.running:
                await report(
                    replace(event, phase=Phase.QUEUED, submissions=submissions, queue_position=update.queue_position)
                )
            else:
                await report(
                    replace(
                        event,
                        phase=Phase.RUNNING,
                        submissions=submissions,
                        queue_position=0,
                        progress=Progress(value=update.value, max=update.max or int(rendered.values.get("steps") or 0)),
                    )
                )

        while True:
            async with self.comfy.watch(pid) as watch:
                # Only a prompt with a submission on record can be known to ComfyUI (the count goes
                # out before the POST): a new job skips the two requests of the lookup.
                state = await self.comfy.lookup(pid) if submissions else PromptState.unknown()
                attached = state.phase is not PromptPhase.UNKNOWN
                if state.phase is PromptPhase.DONE and state.entry is not None:
                    return state.entry, max(submissions, 1)
                if state.phase is PromptPhase.UNKNOWN:
                    if submissions >= MAX_SUBMISSIONS:
                        # The resubmissions are used up: another try would only wait for the deadline.
                        raise PromptLost(
                            f"ComfyUI lost prompt {pid} again after it was submitted {submissions} times",
                            retryable=False,
                        )
                    if submissions:
                        log.warning("%s: ComfyUI lost prompt %s; submitting it again once", job, pid)
                        await report(
                            replace(
                                event,
                                phase=Phase.QUEUED,
                                submissions=submissions,
                                message=(
                                    f"prompt not found on {self.comfy.base_url} (ComfyUI restarted or the job "
                                    "moved to another backend); submitted again"
                                ),
                                notice="PromptResubmitted",
                            )
                        )
                    if before_submit is not None:
                        rendered = await before_submit(rendered)
                    # On record before the POST: a crash while it is in flight leaves a count that
                    # makes the next attempt look the prompt up instead of submitting it blind.
                    submissions += 1
                    await report(replace(event, phase=Phase.QUEUED, submissions=submissions, message="submitting"))
                    try:
                        await self.comfy.submit(rendered.graph, pid)
                    except (PromptRejected, BackendRefused):
                        # ComfyUI refused it, or nothing listened: certainly not queued; uncount it.
                        submissions -= 1
                        await report(replace(event, phase=Phase.QUEUED, submissions=submissions))
                        raise
                    timing["submitted"] = time.monotonic()
                    metrics.SUBMISSIONS.labels(self.comfy.base_url).inc()
                    await report(replace(event, phase=Phase.QUEUED, submissions=submissions, message="queued"))
                try:
                    entry = await self.comfy.follow(
                        watch,
                        pid,
                        on_progress=on_progress,
                        on_preview=on_preview,
                        deadline_at=deadline_at,
                        lost_polls=self.lost_polls,
                        poll_interval=self.poll_interval,
                        unreachable_grace=self.unreachable_grace,
                        poll_first=attached or not self.comfy.ws_connected,
                        # Subscribed before our own POST with the socket up: its frames name the outputs.
                        frames_complete=not attached and self.comfy.ws_connected,
                    )
                except PromptLost as exc:
                    if submissions >= MAX_SUBMISSIONS:
                        raise PromptLost(
                            f"{exc.message}; it was submitted {submissions} times, the most allowed",
                            retryable=False,
                        ) from None
                    continue  # next round submits it again, once
                if "running" in timing:
                    metrics.EXECUTION.observe(time.monotonic() - timing["running"])
                return entry, submissions

    async def _collect(self, entry: HistoryEntry, rendered: RenderedWorkflow, job: JobIdentity) -> list[StoredImage]:
        """Download every `type: output` file with the checks of its kind, store, verify and presign it."""
        outputs = entry.output_images
        if not outputs:
            kinds = ", ".join(sorted({image.type for image in entry.images})) or "nothing"
            raise DownloadFailed(f"ComfyUI reported success but produced no output file (found: {kinds})")
        if len(outputs) > MAX_OUTPUTS:
            raise DownloadFailed(f"the prompt produced {len(outputs)} outputs; at most {MAX_OUTPUTS} are kept")
        stored: list[StoredImage] = []
        with tempfiles.job_dir(self.tmp_dir) as tmp:
            for index, output in enumerate(outputs):
                started = time.monotonic()
                # The check decodes every pixel anyway: it keeps the first frame reduced for the thumbnail.
                downloaded = await self.comfy.download(
                    output, Path(tmp), expected_size=rendered.expected_size, preview_side=THUMBNAIL_SIDE
                )
                metrics.DOWNLOAD.observe(time.monotonic() - started)
                metrics.BYTES_DOWNLOADED.inc(downloaded.bytes)
                started = time.monotonic()
                stored.append(await self._store(downloaded, job, index, Path(tmp)))
                metrics.UPLOAD.observe(time.monotonic() - started)
                metrics.BYTES_UPLOADED.inc(downloaded.bytes)
                if self.keep_copies_in is not None:
                    copy = self.keep_copies_in / stored[-1].key
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(downloaded.path, copy)
                else:
                    downloaded.path.unlink(missing_ok=True)
        # A batch of stills from a workflow that binds batchSize must be complete; other
        # outputs (an animation from a batch, a video, a sound) count as they come.
        stills = sum(1 for image in stored if image.kind is OutputKind.IMAGE)
        expected = rendered.expected_count
        if expected is not None and stills and stills % expected:
            raise DownloadFailed(f"expected {expected} image(s) from ComfyUI, got {stills}")
        return stored

    async def _store(self, image: DownloadedImage, job: JobIdentity, index: int, work_dir: Path) -> StoredImage:
        """Upload one checked image, verify it, and presign a URL for it (its thumbnail is made in `work_dir`)."""
        key = object_key(job.namespace, job.name, job.uid, index, image.path.suffix.lstrip(".") or "bin")
        # The preview (a small WebP for the web gallery; best effort, never fails the job) is
        # made from the check's decode and stored beside the original (one store round trip
        # less than one after the other); its key is reported only once the original is
        # verified, and a failed original takes its preview with it.
        thumbnail = asyncio.create_task(store_thumbnail(
            self.store, image.path, key,
            metadata={"uid": job.uid}, work_dir=work_dir, content_type=image.content_type, frame=image.preview,
        ))
        # Signing needs no object (the URL is local computation): done beside the upload, and
        # handed out only after the upload was verified.
        presigned = asyncio.create_task(self.store.presign(key, self.presign_expiry_seconds))
        try:
            await self.store.put_verified(
                key,
                image.path,
                size=image.bytes,
                sha256=image.sha256,
                content_type=image.content_type,
                metadata={
                    "namespace": job.namespace,
                    "job": job.name,
                    "uid": job.uid,
                    "source-filename": image.source.filename,
                },
            )
            url, expires_at = await presigned
        except BaseException as exc:
            presigned.cancel()
            if isinstance(exc, asyncio.CancelledError):
                # Shutting down: a preview already uploading may still land; the resumed run
                # stores the same key again.
                thumbnail.cancel()
            # Otherwise the preview is let finish (a cancelled upload thread would still store
            # it), so that what it stored can be deleted.
            await asyncio.wait({thumbnail, presigned})
            if not presigned.cancelled():
                presigned.exception()  # retrieved: the upload's error is the one that matters
            stored_preview = None if thumbnail.cancelled() or thumbnail.exception() else thumbnail.result()
            if stored_preview:
                await self._discard_thumbnail(stored_preview)
            raise
        thumb = await thumbnail
        return StoredImage(
            kind=image.kind,
            key=key,
            bytes=image.bytes,
            sha256=image.sha256,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            frames=image.frames,
            node=image.source.node_id or None,
            url=url,
            url_expires_at=rfc3339(expires_at) if expires_at else None,
            thumbnail_key=thumb,
        )

    async def _discard_thumbnail(self, key: str) -> None:
        """Best effort: the preview of an original that failed goes too (the error that matters is the original's)."""
        try:
            await asyncio.shield(self.store.delete(key))
        except (JobError, OSError) as exc:
            log.warning("could not delete the thumbnail %s of a failed image: %s", key, exc)

    async def release(self, job: JobIdentity) -> None:
        """Forget the prompt in ComfyUI's history, once the result is persisted."""
        try:
            await self.comfy.forget(job.prompt_id)
        except JobError as exc:  # best effort: history is bounded by ComfyUI anyway
            log.info("%s: could not delete history entry: %s", job, exc)


@dataclass
class _StagedInputs:
    """A job's input images: fetched and checked once, uploaded before each submission.

    `start()` runs the first fetch, check and upload as a task beside the health check
    and preflight; the first submission waits for it, `aclose()` cancels it (its partial
    files go with the job's temporary directory). Nothing is submitted before every
    input passed its checks: `graph()` returns only once the task did.
    """

    pipeline: Pipeline
    spec: ImageJobSpec
    job: JobIdentity
    resume: ResumeState
    sources: Mapping[str, Source]
    directory: Path
    prepared: dict[str, PreparedImage] | None = None
    _early: asyncio.Task[dict[str, str]] | None = None

    def start(self) -> None:
        """Begin taking the inputs in (fetch, check, upload) in the background."""
        if self.sources and self._early is None:
            self._early = asyncio.create_task(self._take_in())

    async def aclose(self) -> None:
        """Cancel the early task if it still runs, and wait until it has stopped."""
        task, self._early = self._early, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: its error, if any, was or will be raised elsewhere

    async def graph(self, rendered: RenderedWorkflow) -> RenderedWorkflow:
        """`rendered` with the names ComfyUI gave the uploads (the graph as it is without images)."""
        if not self.sources:
            return rendered
        task, self._early = self._early, None
        if task is None:
            names = await self._take_in()
        else:
            try:
                names = await task
            except ComfyUIUnavailable:
                if self.prepared is None:
                    raise
                # The upload ran while ComfyUI was still being checked; it passed since: once more.
                names = await self._take_in()
        spec = self.spec
        if spec.model is None and rendered.checkpoint is not None:
            spec = spec.model_copy(update={"model": rendered.checkpoint})
        return self.pipeline.prepare(spec, self.job, self.resume, images=names)

    async def _take_in(self) -> dict[str, str]:
        """Fetch and check the inputs (the first time only), upload them; image name → ComfyUI's name."""
        if self.prepared is None:
            started = time.monotonic()
            self.prepared = await prepare_images(
                self.sources, self.directory, store=self.pipeline.store, limits=self.pipeline.input_limits
            )
            log.info("%s: %d input image(s) checked in %.3f s", self.job, len(self.prepared),
                     time.monotonic() - started)
        names: dict[str, str] = {}
        for name, image in self.prepared.items():
            uploaded = await self.pipeline.comfy.upload_image(
                image.path,
                filename=image.upload_name,
                subfolder=self.job.input_subfolder,
                content_type=image.content_type,
            )
            names[name] = uploaded.load_name
        return names


def _stored_message(images: list[StoredImage]) -> str:
    """`2 image(s) stored`, or `1 video, 1 audio stored` when other kinds are among them."""
    counts: dict[str, int] = {}
    for image in images:
        counts[image.kind.value] = counts.get(image.kind.value, 0) + 1
    if set(counts) <= {"image"}:
        return f"{len(images)} image(s) stored"
    return ", ".join(f"{count} {kind}" for kind, count in counts.items()) + " stored"


def failed_status(error: JobError, *, clock: Clock, **fields: object) -> ImageJobStatus:
    """A terminal status for a failure: Failed, or Cancelled for a cancellation.

    `fields` are what was known when it failed (prompt id, seed, backend, submissions,
    start time): a failure reports them as a success would.
    """
    phase = Phase.CANCELLED if error.reason == "Cancelled" else Phase.FAILED
    return ImageJobStatus.model_validate(
        {"phase": phase, "reason": error.reason, "message": error.message, "completion_time": now_rfc3339(clock)}
        | {k: v for k, v in fields.items() if v is not None}
    )
