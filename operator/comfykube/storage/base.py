"""The storage vocabulary: the `ObjectStore` protocol, stored-object info, keys, errors, checks."""

from __future__ import annotations

import datetime as dt
import logging
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from comfykube.errors import JobError, StorageVerificationFailed
from comfykube.types import MAX_PRESIGN_SECONDS

log = logging.getLogger(__name__)

#: Metadata key (without the `x-amz-meta-` prefix) that carries the SHA-256 of the bytes.
SHA256_META = "sha256"
#: Largest single object key S3 accepts (bytes, UTF-8).
MAX_KEY_BYTES = 1024
#: Chunk size for local streaming (copy, hash): bounded memory for any file size.
CHUNK = 1024 * 1024

_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]")
_EXT = re.compile(r"^[a-z0-9]{1,10}$")
_META_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")




class StorageAccessDenied(JobError):
    """The object store refused our credentials (wrong key or secret, no permission)."""

    reason = "StorageAccessDenied"
    retryable = False


class StorageError(JobError):
    """Any other refusal by the object store (bad request, quota, …)."""

    reason = "StorageError"
    retryable = False


class ObjectTooLarge(JobError):
    """An object read back (an input image) is larger than the caller allows."""

    reason = "ObjectTooLarge"


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one stored object."""

    key: str
    size: int
    content_type: str | None
    #: SHA-256 recorded in the object's metadata at upload (None for foreign objects).
    sha256: str | None
    etag: str | None = None
    last_modified: dt.datetime | None = None
    #: User metadata, keys lower-case without the `x-amz-meta-` prefix.
    metadata: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class ObjectStore(Protocol):
    """The storage interface the pipeline uses; see the module docstring."""

    async def ensure_ready(self) -> None:
        """Make sure the bucket (or directory) exists and is usable."""
        ...

    async def put_verified(
        self,
        key: str,
        path: Path,
        *,
        size: int,
        sha256: str,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Store the file at `key` and verify size and checksum of what got stored."""
        ...

    async def presign(self, key: str, expires_seconds: int) -> tuple[str, dt.datetime | None]:
        """A URL that lets anyone holding it GET the object, and when it stops working."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """Information about the object, or None if it does not exist."""
        ...

    async def fetch_to(self, key: str, dest: Path, *, max_bytes: int) -> int | None:
        """Stream the object into `dest` (at most `max_bytes`, else ObjectTooLarge); its size, None if absent."""
        ...

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; returns how many."""
        ...

    def describe(self) -> str:
        """One line for logs and health output; never contains secrets."""
        ...


# --------------------------------------------------------------------------- keys


def _safe_segment(value: str, what: str) -> str:
    cleaned = _SAFE_SEGMENT.sub("-", value.strip())
    if cleaned in ("", ".", ".."):
        raise ValueError(f"{what} {value!r} gives no usable object key segment")
    return cleaned


def object_key(namespace: str, name: str, uid: str, index: int, ext: str) -> str:
    """`object_key("ns", "cat", "0f1e…", 0, "png")` → `"ns/cat/0f1e…/0.png"`.

    Kubernetes names are already safe; anything outside `[A-Za-z0-9._-]` is
    replaced by `-` anyway, so a key can never climb out of its prefix (`..`)
    or need URL escaping in a presigned link. The uid keeps a re-created job
    with the same name from overwriting the old job's images.
    """
    if index < 0:
        raise ValueError(f"image index must be >= 0 (got {index})")
    clean_ext = ext.strip().lstrip(".").lower()
    if not _EXT.match(clean_ext):
        raise ValueError(f"file extension {ext!r} is not a short alphanumeric extension")
    return "/".join(
        (
            job_prefix(namespace, name, uid).rstrip("/"),
            f"{index}.{clean_ext}",
        )
    )


def job_prefix(namespace: str, name: str, uid: str) -> str:
    """The prefix under which all images of one job live (`"ns/name/uid/"`), for `delete_prefix`."""
    parts = (
        _safe_segment(namespace, "namespace"),
        _safe_segment(name, "name"),
        _safe_segment(uid, "uid"),
    )
    return "/".join(parts) + "/"


def input_prefix(namespace: str, name: str) -> str:
    """`"ns/inputs/name/"`: input images uploaded for one job (the bot's `/imagine image:`).

    Under the namespace (the operator reads `s3Key` inputs only there) and named after the
    job, not its uid: the uploader writes it before the job exists. The operator deletes it
    with the job when the job's `spec.images` reads from it.
    """
    return "/".join((_safe_segment(namespace, "namespace"), "inputs", _safe_segment(name, "name"))) + "/"


#: The file name of a running job's live preview under its prefix (overwritten while it runs).
PREVIEW_NAME = "preview.jpg"


def preview_key(namespace: str, name: str, uid: str) -> str:
    """`ns/name/uid/preview.jpg`: under the job's prefix, so `deleteWithJob` covers it too."""
    return job_prefix(namespace, name, uid) + PREVIEW_NAME


def check_key(key: str) -> str:
    """Refuse keys that are empty, absolute, contain `.`/`..` segments or control characters.

    Both stores use it: for `LocalStore` it is what keeps a key inside the
    directory; for S3 it keeps odd keys from ever being written.
    """
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"object key must be 1..{MAX_KEY_BYTES} bytes (got {len(key.encode())})")
    if key.startswith("/") or "\\" in key or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ValueError(f"object key {key!r} is not a relative key of printable characters")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
    return key


def check_prefix(prefix: str) -> str:
    """A prefix safe to delete under; refuses an empty one."""
    # An empty prefix would delete the whole bucket: never what deleteWithJob means.
    if not prefix or not prefix.strip("/"):
        raise ValueError("refusing to delete with an empty prefix (it would match every object)")
    check_key(prefix.rstrip("/"))
    return prefix


def clamp_expiry(expires_seconds: int) -> int:
    """Presign expiry within 1 s … 7 days."""
    # SigV4 presigned URLs cannot live longer than 7 days; S3 rejects the URL outright otherwise.
    return max(1, min(int(expires_seconds), MAX_PRESIGN_SECONDS))


def user_metadata(sha256: str, metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Validated user metadata for the object (keys without the x-amz-meta- prefix)."""
    result: dict[str, str] = {}
    for raw_key, raw_value in (metadata or {}).items():
        key = raw_key.lower()
        if key.startswith("x-amz-meta-"):
            key = key[len("x-amz-meta-") :]
        if not _META_KEY.match(key):
            raise ValueError(f"metadata key {raw_key!r} must be lower-case letters, digits and '-'")
        value = str(raw_value)
        # Header values must be printable ASCII; quote anything else instead of failing the upload.
        if not value.isascii() or not value.isprintable():
            value = urllib.parse.quote(value, safe=" ")
        result[key] = value
    result[SHA256_META] = sha256
    return result


def check_local_file(path: Path, size: int, sha256: str) -> None:
    """Refuse empty files and files whose size is not what the caller checked."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError("sha256 must be 64 lower-case hex digits")
    if size <= 0:
        raise StorageVerificationFailed(f"refusing to store an empty image ({path.name}: 0 bytes)")
    try:
        actual = path.stat().st_size
    except OSError as exc:
        raise StorageVerificationFailed(f"cannot read {path.name} for upload: {exc.strerror}") from None
    if actual == 0:
        raise StorageVerificationFailed(f"refusing to store an empty image ({path.name}: 0 bytes)")
    if actual != size:
        raise StorageVerificationFailed(
            f"{path.name} has {actual} bytes on disk but {size} were downloaded; not uploading"
        )



def verification_problem(key: str, info: ObjectInfo | None, size: int, sha256: str) -> str | None:
    """Why the stored object does not match, or None if it does."""
    if info is None:
        return f"{key} is missing right after the upload"
    if info.size != size:
        return f"{key} has {info.size} bytes in the store, expected {size}"
    if info.sha256 != sha256:
        got = (info.sha256 or "nothing")[:12]
        return f"{key} carries checksum {got}… in the store, expected {sha256[:12]}…"
    return None


# --------------------------------------------------------------------------- local directory

