"""`/imagine image:` — a picture uploaded with the command as the start of an `img2img` job.

Order of work, and why:

1. the options (`strength` needs `image`; size and count come from the picture), then
   the bot's object store must be configured (`MINIO_*`): the operator reads the picture
   from the bucket (`s3Key`), so without one the option is refused at once;
2. the prompt's content rules (deny-list, model), before any byte moves;
3. the attachment's declared content type and size against the operator's own limits
   (`INPUT_IMAGE_MAX_BYTES`): a refusal costs no download;
4. the download, from Discord's CDN only (`cdn.discordapp.com`, `media.discordapp.net`,
   or the `DISCORD_CDN_BASE` the bot is pointed at), through the operator's fetcher
   (`comfykube.inputs.fetch`: the checked address, a size cap, no redirects followed);
5. the operator's picture checks (`comfykube.inputs.check`: magic bytes, pixel cap
   `INPUT_IMAGE_MAX_PIXELS`, a full decode in a thread), so what the operator would
   refuse later is refused here, with nothing created;
6. a verified put at `<namespace>/inputs/<job>/init.<ext>` (the extension from the magic
   bytes, not the file name), then `Submitter.submit` with the `img2img` spec
   (`images: [{name: init, s3Key}]`, `inputs: {denoise: strength}`).

If no job came of it (the quota or cooldown refused it, the API server did), the object
is deleted again; a deleted job's inputs are deleted by the operator (`teardown.py`).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from comfykube import tempfiles
from comfykube.errors import InputImageFailed, JobError
from comfykube.inputs.check import ACCEPTED_CONTENT_TYPES, check_image
from comfykube.inputs.fetch import fetch_url
from comfykube.settings import Settings
from comfykube.storage import MinioStore, ObjectStore, input_prefix
from comfykube.types import ImageJobSpec
from comfykube.workflows import WorkflowLibrary
from comfykube_bot.markdown import code
from comfykube_bot.policy import Caller, Refusal
from comfykube_bot.specs import ImagineOptions, OptionError, describe_errors, job_name

if TYPE_CHECKING:
    from comfykube_bot.submit import Submitter

log = logging.getLogger(__name__)

#: Hosts Discord serves attachments from (the URL's and the proxy URL's).
DISCORD_CDN_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
#: The workflow an uploaded picture goes to, and its parameter `strength` sets.
WORKFLOW = "img2img"
STRENGTH_PARAMETER = "denoise"
#: Options that the picture decides (img2img renders at the input's size, one image).
SIZE_OPTIONS = ("width", "height", "aspect", "count")


class Attachment(Protocol):
    """What is read of a `discord.Attachment`."""

    @property
    def filename(self) -> str:
        """The name the user's file had."""
        ...

    @property
    def content_type(self) -> str | None:
        """The media type Discord declared for it."""
        ...

    @property
    def size(self) -> int:
        """Its size in bytes, as Discord declared it."""
        ...

    @property
    def url(self) -> str:
        """Its (signed) CDN URL."""
        ...


class UploadRefused(Exception):
    """The picture cannot be used; `refusal` is what the user is told."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.refusal = Refusal(reason, message)


class Uploads:
    """Checks, downloads and stores `/imagine` attachments; builds their img2img spec."""

    def __init__(
        self,
        core: Settings,
        workflows: WorkflowLibrary,
        *,
        cdn_base: str | None = None,
        store: ObjectStore | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.core = core
        self.workflows = workflows
        # Only S3: the operator reads `s3Key` from the bucket, never from the bot's disk.
        self.store: ObjectStore | None = store or (MinioStore(core) if core.minio_endpoint else None)
        self.workdir = workdir
        self._bucket_ready = False
        self.hosts = _allowed_origins(cdn_base)
        # The configured CDN base is the operator's choice of Discord (tests: the fake on
        # loopback); only it may be a private address.
        self._private_ok = {origin for origin in self.hosts if cdn_base and origin == _origin(cdn_base)}

    @property
    def enabled(self) -> bool:
        """True when there is a bucket to put pictures in."""
        return self.store is not None

    # ------------------------------------------------------------------ checks before any byte

    def check_options(self, typed: ImagineOptions, image: Attachment | None) -> None:
        """`strength` needs `image`; an `image` job takes its size and count from the picture."""
        if image is None:
            raise OptionError("strength", "`strength` only works with an `image` to start from")
        given = [name for name in SIZE_OPTIONS if getattr(typed, name) is not None]
        if given:
            shown = ", ".join(f"`{name}`" for name in given)
            raise OptionError(given[0], f"with an `image`, the picture sets the size: leave out {shown}")
        if typed.workflow not in (None, WORKFLOW):
            raise OptionError("workflow", f"an `image` always uses the `{WORKFLOW}` workflow")

    def check_declared(self, attachment: Attachment) -> None:
        """The declared content type and size, against the operator's limits."""
        name = code(attachment.filename)
        declared = (attachment.content_type or "").split(";")[0].strip().lower()
        if declared not in ACCEPTED_CONTENT_TYPES:
            kind = code(declared) if declared else "of no declared type"
            raise UploadRefused(
                "AttachmentNotImage",
                f"⚠️ `image`: {name} is {kind}, not a picture. Send a PNG, JPEG, WebP, GIF or BMP image.",
            )
        limit = self.core.input_image_max_bytes
        if attachment.size > limit:
            raise UploadRefused(
                "AttachmentTooLarge",
                f"⚠️ `image`: {name} is {_size(attachment.size)}; pictures may be at most {_size(limit)}.",
            )
        if _origin(attachment.url) not in self.hosts:
            raise UploadRefused("AttachmentHost", "⚠️ `image` must be a file uploaded to Discord with the command.")

    # ------------------------------------------------------------------ download, check, store

    async def stage(self, attachment: Attachment, namespace: str, name: str, image_name: str) -> str:
        """Download, check and store the picture; returns its object key. Raises UploadRefused."""
        assert self.store is not None  # callers check `enabled` first
        what = f"`image` ({attachment.filename})"
        with tempfiles.job_dir(self.workdir) as tmp:
            dest = Path(tmp) / "upload"
            try:
                fetched = await fetch_url(
                    attachment.url,
                    dest,
                    max_bytes=self.core.input_image_max_bytes,
                    allow_private=self.core.input_url_allow_private or _origin(attachment.url) in self._private_ok,
                    http_timeout=self.core.input_url_timeout_seconds,
                    max_redirects=0,  # Discord's CDN answers directly; anything else is not it
                )
                checked = await check_image(
                    dest, fetched.head, max_pixels=self.core.input_image_max_pixels, what=what
                )
            except InputImageFailed as exc:
                reason = "AttachmentUnavailable" if exc.retryable else "AttachmentRefused"
                raise UploadRefused(reason, f"⚠️ {_for_people(exc.message, what)}") from None
            key = f"{input_prefix(namespace, name)}{image_name}.{checked.kind.ext}"
            try:
                if not self._bucket_ready:
                    # Once per process: the bucket may not exist yet when the bot starts before the operator.
                    await self.store.ensure_ready()
                    self._bucket_ready = True
                await self.store.put_verified(
                    key, dest, size=fetched.bytes, sha256=fetched.sha256, content_type=checked.kind.content_type,
                    metadata={"source": "discord-attachment"},
                )
            except JobError as exc:
                log.error("storing the /imagine picture at %s failed: %s", key, exc)
                raise UploadRefused(
                    "StorageUnavailable", "⚠️ I couldn't store your picture right now. Please try again in a minute."
                ) from None
        return key

    async def discard(self, key: str) -> None:
        """Delete a stored picture no job uses; logged, never raised."""
        if self.store is None:
            return
        try:
            await self.store.delete(key)
        except JobError as exc:
            log.warning("could not delete the unused /imagine picture %s: %s", key, exc)

    def spec_for(self, spec: ImageJobSpec, key: str, image_name: str, strength: float | None) -> ImageJobSpec:
        """`spec` (from the options) as an img2img job from the stored picture."""
        data = {k: v for k, v in spec.wire().items() if k not in ("width", "height", "batchSize")}
        parameter = self.workflows.get(WORKFLOW).parameters[STRENGTH_PARAMETER]
        denoise = strength if strength is not None else parameter.default
        data.update(workflow=WORKFLOW, images=[{"name": image_name, "s3Key": key}],
                    inputs={**(data.get("inputs") or {}), STRENGTH_PARAMETER: denoise})
        try:
            return ImageJobSpec.model_validate(data)
        except ValidationError as exc:
            raise describe_errors(exc) from None

    def image_name(self) -> str:
        """The workflow's one input image (`init`)."""
        images = list(self.workflows.get(WORKFLOW).images)
        if len(images) != 1:
            raise JobError(f"workflow {WORKFLOW!r} must take exactly one input image (it takes {images})")
        return images[0]

    # ------------------------------------------------------------------ the flow

    async def imagine(
        self,
        submitter: Submitter,
        interaction: Any,
        caller: Caller,
        options: ImagineOptions,
        typed: ImagineOptions,
        spec: ImageJobSpec,
        *,
        private: bool | None = None,
    ) -> None:
        """`/imagine` with `image` (or `strength`): the flow of the module docstring (already deferred)."""
        image: Attachment | None = options.image
        try:
            self.check_options(typed, image)
            if not self.enabled:
                raise UploadRefused(
                    "UploadsUnavailable",
                    "⚠️ `image` needs an object store, and this bot has none set up (`MINIO_ENDPOINT` and its "
                    "keys). Ask an admin, or use /imagine without an image.",
                )
            assert image is not None
            image_name = self.image_name()
            namespace, name = submitter.jobs.namespace, job_name(interaction.id)
            # The content rules first, on the spec as it will be (only the key is not known yet).
            provisional = self.spec_for(spec, f"{input_prefix(namespace, name)}{image_name}.png", image_name,
                                        options.strength)
            refusal = await submitter.check_content(provisional, caller)
            if refusal is not None:
                await submitter.refuse(interaction, refusal, "imagine")
                return
            self.check_declared(image)
            key = await self.stage(image, namespace, name, image_name)
        except OptionError as exc:
            await submitter.refuse(interaction, Refusal("InvalidOption", f"⚠️ {exc.message}"), "imagine")
            return
        except UploadRefused as exc:
            await submitter.refuse(interaction, exc.refusal, "imagine")
            return
        except JobError as exc:
            await submitter.refuse(interaction, Refusal("InvalidOption", f"⚠️ {exc.message}"), "imagine")
            return
        try:
            await submitter.submit(interaction, caller, self.spec_for(spec, key, image_name, options.strength),
                                   spoiler=options.spoiler, command="imagine", private=private)
        finally:
            await asyncio.shield(self._discard_if_unused(submitter, name, key))

    async def _discard_if_unused(self, submitter: Submitter, name: str, key: str) -> None:
        """Delete the stored picture when no job was created for it (refused, or creation failed)."""
        try:
            exists = await submitter.jobs.get(name) is not None
        except (ApiException, OSError, TimeoutError) as exc:
            # Unknown: keep it (a job may read it); an orphan costs less than a job without its input.
            log.warning("could not tell whether ImageJob %s exists (%s); keeping %s", name, exc, key)
            return
        if not exists:
            await self.discard(key)


def _origin(url: str) -> str:
    """`https://cdn.discordapp.com` (scheme, host, port) of a URL; "" when it has none."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    try:
        port = parts.port
    except ValueError:
        return ""
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{parts.hostname.lower()}" + (f":{port}" if port not in (None, default) else "")


def _allowed_origins(cdn_base: str | None) -> Collection[str]:
    origins = {f"https://{host}" for host in DISCORD_CDN_HOSTS}
    if cdn_base:
        origins.add(_origin(cdn_base))
    origins.discard("")
    return frozenset(origins)


def _size(count: int) -> str:
    """`12.5 MiB`, `900 KiB`, `512 bytes`."""
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f} MiB"
    if count >= 1024:
        return f"{count / 1024:.0f} KiB"
    return f"{count} bytes"


def _for_people(message: str, what: str) -> str:
    """The fetcher's message without the CDN URL (signed, long, of no use to the user)."""
    if message.startswith(what):
        return message
    for marker in (" is ", " answered ", " was cut off", " redirects"):
        head, sep, rest = message.partition(marker)
        if sep and head.startswith(("http://", "https://")):
            return f"{what}{sep}{rest}"
    if message.startswith("cannot fetch "):
        return f"{what}: could not be downloaded from Discord ({message.split(': ', 1)[-1]})"
    return f"{what}: {message}"


__all__ = ["DISCORD_CDN_HOSTS", "UploadRefused", "Uploads"]
