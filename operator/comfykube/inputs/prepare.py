"""From a job's input image sources to checked files on disk, ready to upload to ComfyUI.

A source is a URL (`spec.images[].url`), an object in the store (`s3Key`, or
`fromJob` once the operator resolved it to its object key) or a local file (the
CLI's `--image name=photo.png`). Each is copied into the job's temporary
directory with a size cap, then checked (`check.py`): nothing reaches ComfyUI
that is not a picture, and the bytes checked are the bytes uploaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from comfykube.errors import InputImageFailed, InvalidSpec
from comfykube.inputs.check import check_image, describe_head, sniff_input
from comfykube.inputs.fetch import discard, fetch_url, hash_file, safe_url
from comfykube.storage.base import ObjectStore, ObjectTooLarge
from comfykube.types import InputImage


@dataclass(frozen=True)
class UrlSource:
    """An http(s) URL."""

    url: str

    def describe(self) -> str:
        """The URL without its query (which may hold credentials)."""
        return safe_url(self.url)


@dataclass(frozen=True)
class StoreSource:
    """An object in the configured bucket; `what` says where the key came from."""

    key: str
    what: str = ""

    def describe(self) -> str:
        """`object ns/fox/…/0.png (output 0 of ImageJob fox)`."""
        return f"object {self.key}" + (f" ({self.what})" if self.what else "")


@dataclass(frozen=True)
class FileSource:
    """A local file (CLI only)."""

    path: Path

    def describe(self) -> str:
        """The file's path."""
        return f"file {self.path}"


Source = UrlSource | StoreSource | FileSource


@dataclass(frozen=True)
class InputLimits:
    """The deployment's rules for input images (see Settings: INPUT_IMAGE_*, INPUT_URL_*)."""

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    allow_private: bool = False
    url_timeout: float = 30.0
    max_redirects: int = 5


@dataclass(frozen=True)
class PreparedImage:
    """One checked input image on disk."""

    name: str
    path: Path
    bytes: int
    sha256: str
    content_type: str
    ext: str
    width: int
    height: int

    @property
    def upload_name(self) -> str:
        """The file name it gets in ComfyUI's input folder: the workflow's image name."""
        return f"{self.name}.{self.ext}"


def sources_from_spec(
    images: Sequence[InputImage],
    *,
    namespace: str,
    resolved_jobs: Mapping[str, str] | None = None,
    local_files: Mapping[str, Path] | None = None,
    confine_keys_to_namespace: bool = True,
) -> dict[str, Source]:
    """Each image name → where to read it. Raises InvalidSpec for a source that cannot be used here.

    `resolved_jobs` maps image names with a `fromJob` source to the other job's
    object key (the operator reads it from that job's status); without it a
    `fromJob` image is refused. With `confine_keys_to_namespace` an `s3Key` must
    lie under `<namespace>/`, so one namespace cannot read another's results.
    """
    sources: dict[str, Source] = {}
    for image in images:
        if image.url is not None:
            sources[image.name] = UrlSource(image.url)
        elif image.s3_key is not None:
            if confine_keys_to_namespace and not image.s3_key.startswith(f"{namespace}/"):
                raise InvalidSpec(
                    f"spec.images[{image.name}].s3Key: {image.s3_key!r} is outside this namespace's "
                    f"objects; keys must start with {namespace + '/'!r}"
                )
            sources[image.name] = StoreSource(image.s3_key, "s3Key")
        elif image.from_job is not None:
            key = (resolved_jobs or {}).get(image.name)
            if key is None:
                raise InvalidSpec(
                    f"spec.images[{image.name}].fromJob: ImageJob {image.from_job.name!r} can only be read "
                    "in a cluster (run the job with kubectl, or pass the picture as a file or URL)"
                )
            sources[image.name] = StoreSource(
                key, f"output {image.from_job.index} of ImageJob {image.from_job.name}"
            )
    for name, path in (local_files or {}).items():
        if name in sources:
            raise InvalidSpec(f"image {name!r} is given twice (in the spec and as a file)")
        sources[name] = FileSource(Path(path))
    return sources


async def prepare_image(
    name: str, source: Source, dest_dir: Path, *, store: ObjectStore | None, limits: InputLimits
) -> PreparedImage:
    """Copy one source into `dest_dir` and check it; InputImageFailed names the image and the source."""
    what = f"input image {name!r} ({source.describe()})"
    dest = dest_dir / f"input-{name}.part"
    try:
        if isinstance(source, UrlSource):
            refused: list[InputImageFailed] = []

            def sniff(head: bytes) -> None:
                """The magic bytes as soon as they are in: a page that is no picture stops the fetch."""
                if sniff_input(head) is None:
                    refused.append(InputImageFailed(
                        f"{what} is not a PNG, JPEG, WebP, GIF or BMP image ({describe_head(head)})"
                    ))
                    raise refused[0]

            try:
                fetched = await fetch_url(
                    source.url,
                    dest,
                    max_bytes=limits.max_bytes,
                    allow_private=limits.allow_private,
                    http_timeout=limits.url_timeout,
                    max_redirects=limits.max_redirects,
                    on_head=sniff,
                )
            except InputImageFailed as exc:
                if refused and exc is refused[0]:  # said of the image already
                    raise
                raise InputImageFailed(f"input image {name!r}: {exc.message}", retryable=exc.retryable) from None
            size, sha256, head = fetched.bytes, fetched.sha256, fetched.head
        else:
            if isinstance(source, StoreSource):
                if store is None:
                    raise InputImageFailed(f"{what}: no object store is configured")
                try:
                    found = await store.fetch_to(source.key, dest, max_bytes=limits.max_bytes)
                except ObjectTooLarge as exc:
                    raise InputImageFailed(f"{what}: {exc.message} (INPUT_IMAGE_MAX_BYTES)") from None
                if found is None:
                    raise InputImageFailed(f"{what}: no such object in the bucket")
                path = dest
            else:
                path = source.path
                if not await asyncio.to_thread(path.is_file):
                    raise InputImageFailed(f"{what}: no such file")
            size, sha256, head = await asyncio.to_thread(hash_file, path)
            if size > limits.max_bytes:
                raise InputImageFailed(
                    f"{what} is {size} bytes, more than the {limits.max_bytes} allowed (INPUT_IMAGE_MAX_BYTES)"
                )
            if size == 0:
                raise InputImageFailed(f"{what} is empty")
            if path != dest:  # a local file is checked where it is and uploaded from there
                dest = path
        checked = await check_image(dest, head, max_pixels=limits.max_pixels, what=what)
    except BaseException:
        if not isinstance(source, FileSource):
            discard(dest)
        raise
    if isinstance(source, FileSource):
        final = dest
    else:
        final = dest.with_name(f"input-{name}.{checked.kind.ext}")
        await asyncio.to_thread(dest.replace, final)
    return PreparedImage(
        name=name,
        path=final,
        bytes=size,
        sha256=sha256,
        content_type=checked.kind.content_type,
        ext=checked.kind.ext,
        width=checked.width,
        height=checked.height,
    )


async def prepare_images(
    sources: Mapping[str, Source], dest_dir: Path, *, store: ObjectStore | None, limits: InputLimits
) -> dict[str, PreparedImage]:
    """Every source prepared, one after the other (bounded memory and connections); all or nothing."""
    prepared: dict[str, PreparedImage] = {}
    for name, source in sources.items():
        prepared[name] = await prepare_image(name, source, dest_dir, store=store, limits=limits)
    return prepared

