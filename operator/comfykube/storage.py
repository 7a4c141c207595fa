"""Where finished images live: an S3 bucket (MinIO) or a local directory.

The pipeline only talks to the `ObjectStore` protocol:

- `ensure_ready()` once at start (bucket exists, credentials work);
- `put_verified()` per image: streams the file up, then reads the object's
  size and checksum back before the job may say "Succeeded";
- `presign()` for the link people click;
- `stat()`, `delete()`, `delete_prefix()` for checks and `output.deleteWithJob`.

`MinioStore` wraps the synchronous minio SDK; every SDK call runs in a worker
thread (`asyncio.to_thread`) so a slow or dead S3 never stalls the event loop
that also serves health checks and other jobs. `LocalStore` is the embedded
default when `MINIO_ENDPOINT` is unset (CLI use, laptops).

Errors are translated into the job error vocabulary: connection problems are
`StorageUnavailable` (retryable), refused credentials are
`StorageAccessDenied` (not retryable: retrying with the same secret cannot
help), a stored object that does not match is `StorageVerificationFailed`.
Messages name the endpoint and bucket, never credentials or signed URLs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar, runtime_checkable

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from comfykube.errors import JobError, StorageUnavailable, StorageVerificationFailed
from comfykube.settings import Settings
from comfykube.types import MAX_PRESIGN_SECONDS

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Metadata key (without the `x-amz-meta-` prefix) that carries the SHA-256 of the bytes.
SHA256_META = "sha256"
#: Largest single object key S3 accepts (bytes, UTF-8).
MAX_KEY_BYTES = 1024
#: Chunk size for local streaming (copy, hash): bounded memory for any file size.
_CHUNK = 1024 * 1024

_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]")
_EXT = re.compile(r"^[a-z0-9]{1,10}$")
_META_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

# S3 error codes that mean "these credentials are not accepted here". Retrying
# with the same secret cannot help, so they are not retryable.
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AllAccessDisabled",
        "AccountProblem",
        "RequestTimeTooSkewed",
        "InvalidSecurity",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchBucket"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


class StorageAccessDenied(JobError):
    """The object store refused our credentials (wrong key or secret, no permission)."""

    reason = "StorageAccessDenied"
    retryable = False


class StorageError(JobError):
    """Any other refusal by the object store (bad request, quota, …)."""

    reason = "StorageError"
    retryable = False


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


def _check_prefix(prefix: str) -> str:
    # An empty prefix would delete the whole bucket: never what deleteWithJob means.
    if not prefix or not prefix.strip("/"):
        raise ValueError("refusing to delete with an empty prefix (it would match every object)")
    check_key(prefix.rstrip("/"))
    return prefix


def _clamp_expiry(expires_seconds: int) -> int:
    # SigV4 presigned URLs cannot live longer than 7 days; S3 rejects the URL outright otherwise.
    return max(1, min(int(expires_seconds), MAX_PRESIGN_SECONDS))


def _user_metadata(sha256: str, metadata: Mapping[str, str] | None) -> dict[str, str]:
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


def _check_local_file(path: Path, size: int, sha256: str) -> None:
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


class _HashingReader:
    """File wrapper that hashes exactly the bytes the SDK reads (and so sends)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self.digest.update(chunk)
        self.count += len(chunk)
        return chunk


# --------------------------------------------------------------------------- MinIO / S3


def _parse_endpoint(value: str, secure: bool) -> tuple[str, bool]:
    """`"minio:9000"` or `"https://minio:9000"` → (netloc, secure)."""
    if "://" not in value:
        return value.strip().rstrip("/"), secure
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"S3 endpoint {value!r} must be host:port or an http(s) URL")
    if parts.path not in ("", "/") or parts.query:
        # The minio SDK signs for the bare host; a path prefix would break every signature.
        raise ValueError(f"S3 endpoint {value!r} must not contain a path")
    return parts.netloc, parts.scheme == "https"


def _http_client(connect_timeout: float, read_timeout: float, retries: int) -> urllib3.PoolManager:
    # The SDK default waits 5 minutes to connect and retries 5 times; a dead S3
    # should surface as StorageUnavailable within seconds so the job can back off.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        maxsize=10,
        retries=urllib3.Retry(
            total=retries,
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
        ),
    )


class MinioStore:
    """An S3 bucket reached through the minio SDK (MinIO, AWS S3, nanio, …)."""

    def __init__(
        self,
        settings: Settings,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 2,
    ) -> None:
        """Build clients from settings; no network traffic happens here.

        `minio_public_endpoint` (a URL) gets its own client used only for
        signing: presigned URLs embed the host in the signature, so a URL
        signed for the in-cluster name would be refused when rewritten to the
        public host. That client has its region set explicitly (settings, or
        `us-east-1`, MinIO's default) because otherwise the SDK would ask the
        public host for the bucket location, which may be unreachable from
        inside the cluster.
        """
        if not settings.minio_endpoint:
            raise ValueError("MinioStore needs MINIO_ENDPOINT")
        self.bucket = settings.minio_bucket
        self.endpoint, self.secure = _parse_endpoint(settings.minio_endpoint, settings.minio_secure)
        self._region = settings.minio_region
        self._client = Minio(
            self.endpoint,
            access_key=settings.minio_access_key,
            secret_key=settings.minio_secret_key,
            secure=self.secure,
            region=settings.minio_region,
            http_client=_http_client(connect_timeout, read_timeout, retries),
        )
        self.public_endpoint: str | None = None
        self._public_client: Minio | None = None
        if settings.minio_public_endpoint:
            netloc, public_secure = _parse_endpoint(settings.minio_public_endpoint, True)
            self.public_endpoint = f"{'https' if public_secure else 'http'}://{netloc}"
            self._public_client = Minio(
                netloc,
                access_key=settings.minio_access_key,
                secret_key=settings.minio_secret_key,
                secure=public_secure,
                region=settings.minio_region or "us-east-1",
                http_client=_http_client(connect_timeout, read_timeout, 0),
            )

    @property
    def url(self) -> str:
        """Base URL of the internal endpoint (for messages)."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    def describe(self) -> str:
        """`S3 bucket 'comfykube' at http://minio:9000 (public URLs via https://…)`."""
        text = f"S3 bucket {self.bucket!r} at {self.url}"
        if self.public_endpoint:
            text += f" (public URLs via {self.public_endpoint})"
        return text

    def __repr__(self) -> str:
        # The default repr would not show secrets either, but be explicit: logs print stores.
        return f"<MinioStore {self.describe()}>"

    # -- error translation -------------------------------------------------

    def _translate(self, exc: BaseException, action: str) -> JobError:
        where = f"{self.url} (bucket {self.bucket!r})"
        if isinstance(exc, S3Error):
            status = exc.response.status if exc.response is not None else 0
            if exc.code in _ACCESS_CODES or status == 403:
                return StorageAccessDenied(
                    f"S3 at {where} refused the credentials while trying to {action} ({exc.code}); "
                    "check MINIO_ACCESS_KEY / MINIO_SECRET_KEY and the bucket permissions"
                )
            if status >= 500:
                return StorageUnavailable(f"S3 at {where} failed to {action}: {exc.code} (HTTP {status})")
            return StorageError(f"S3 at {where} refused to {action}: {exc.code}: {exc.message}")
        if isinstance(exc, ServerError):
            return StorageUnavailable(f"S3 at {where} failed to {action}: HTTP {exc.status_code}")
        if isinstance(exc, InvalidResponseError):
            return StorageUnavailable(f"S3 at {where} gave a non-S3 answer while trying to {action}")
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
            cause = getattr(exc, "reason", None) or exc
            text = str(cause)
            # urllib3 puts the pool object repr first; the tail holds the useful errno text.
            text = text.rsplit(": ", 1)[-1] if ": " in text else text
            return StorageUnavailable(f"S3 at {where} is unreachable while trying to {action}: {text}")
        return StorageError(f"S3 at {where}: unexpected error while trying to {action}: {exc!r}")

    async def _call(self, action: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking SDK call in a thread, translating its errors."""
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except JobError:
            raise
        except (S3Error, ServerError, InvalidResponseError, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._translate(exc, action) from exc

    # -- operations -----------------------------------------------------------

    async def ensure_ready(self) -> None:
        """Create the bucket if it is missing; another replica creating it at the same time is fine.

        Also the earliest point where wrong credentials show up
        (`StorageAccessDenied`) or a dead endpoint (`StorageUnavailable`).
        Bucket policies are left alone on purpose: images are shared through
        presigned URLs, never through anonymous access.
        """
        if await self._call("check the bucket", self._client.bucket_exists, self.bucket):
            return
        try:
            await self._call(
                "create the bucket", self._client.make_bucket, self.bucket, location=self._region
            )
            log.info("created bucket %r at %s", self.bucket, self.url)
        except StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code in _BUCKET_EXISTS_CODES:
                return  # someone else won the race; the bucket is there
            raise

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
        """Upload `path` to `key`, streaming, then read the object back and compare.

        Checks, in order: the file is not empty and has `size` bytes; the
        bytes actually sent hash to `sha256` (hashed on the fly, no second
        read); the stored object has `size` bytes and carries `sha256` in its
        metadata. Any mismatch deletes the object and raises
        `StorageVerificationFailed`, so a half-right image never gets a link.
        """
        check_key(key)
        path = Path(path)
        _check_local_file(path, size, sha256)
        meta = _user_metadata(sha256, metadata)
        sent = await self._call("upload " + key, self._upload, key, path, size, content_type, meta)
        if sent != sha256:
            await self._discard(key)
            raise StorageVerificationFailed(
                f"{path.name} changed while uploading to {key}: sent bytes hash to {sent[:12]}…, "
                f"expected {sha256[:12]}…; object deleted"
            )
        info = await self.stat(key)
        problem = _verification_problem(key, info, size, sha256)
        if problem:
            await self._discard(key)
            raise StorageVerificationFailed(problem + "; object deleted")

    def _upload(self, key: str, path: Path, size: int, content_type: str, meta: dict[str, str]) -> str:
        # put_object with a known length reads one part (5 MiB) at a time, at most
        # num_parallel_uploads parts in flight: memory stays bounded for any size.
        try:
            handle = path.open("rb")
        except OSError as exc:
            # A local file problem is not "S3 unreachable": say what it is.
            raise StorageVerificationFailed(f"cannot read {path.name} for upload: {exc.strerror}") from None
        with handle:
            reader = _HashingReader(handle)
            self._client.put_object(
                self.bucket,
                key,
                reader,
                length=size,
                content_type=content_type,
                metadata=meta,  # type: ignore[arg-type]
                num_parallel_uploads=2,
            )
        return reader.digest.hexdigest()

    async def _discard(self, key: str) -> None:
        """Best-effort delete of a bad object: the verification error matters more."""
        try:
            await self.delete(key)
        except JobError as exc:
            log.warning("could not delete unverified object %s: %s", key, exc)

    async def presign(self, key: str, expires_seconds: int) -> tuple[str, dt.datetime | None]:
        """A presigned GET URL (for the public endpoint if configured) and its expiry in UTC.

        Expiry is capped at 7 days. The signing time is fixed here (whole
        seconds, as SigV4 has no finer resolution) so the returned
        `expires_at` is exactly when the server starts refusing the URL.
        """
        check_key(key)
        seconds = _clamp_expiry(expires_seconds)
        signed_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        client = self._public_client or self._client
        url = await self._call(
            "presign " + key,
            client.presigned_get_object,
            self.bucket,
            key,
            expires=dt.timedelta(seconds=seconds),
            request_date=signed_at,
        )
        return url, signed_at + dt.timedelta(seconds=seconds)

    async def stat(self, key: str) -> ObjectInfo | None:
        """HEAD the object; None when it (or the bucket) does not exist."""
        check_key(key)
        try:
            obj = await self._call("read " + key, self._client.stat_object, self.bucket, key)
        except StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code in _MISSING_CODES:
                return None
            raise
        user: dict[str, str] = {}
        for name, value in (obj.metadata or {}).items():
            lower = str(name).lower()
            if lower.startswith("x-amz-meta-"):
                user[lower[len("x-amz-meta-") :]] = str(value)
        return ObjectInfo(
            key=key,
            size=int(obj.size or 0),
            content_type=obj.content_type,
            sha256=user.get(SHA256_META),
            etag=obj.etag,
            last_modified=obj.last_modified,
            metadata=user,
        )

    async def delete(self, key: str) -> None:
        """Delete one object (S3 answers 204 for missing objects too)."""
        check_key(key)
        await self._call("delete " + key, self._client.remove_object, self.bucket, key)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete all objects under `prefix` (e.g. `job_prefix(...)`); returns how many."""
        _check_prefix(prefix)

        def run() -> int:
            # One DELETE per object rather than the multi-object POST: a job has at
            # most a handful of images, and every S3 stand-in supports plain DELETE.
            count = 0
            for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if obj.object_name and not obj.is_dir:
                    self._client.remove_object(self.bucket, obj.object_name)
                    count += 1
            return count

        return await self._call("delete objects under " + prefix, run)


def _verification_problem(key: str, info: ObjectInfo | None, size: int, sha256: str) -> str | None:
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

_META_DIR = ".comfykube-meta"


class LocalStore:
    """Images in a local directory; the default when no S3 endpoint is configured.

    Layout: `<directory>/<key>` holds the bytes, `<directory>/.comfykube-meta/<key>.json`
    the content type, checksum and metadata. Writes go to a temporary file that is
    renamed into place only after its checksum matched, so a reader never sees a
    partial image.
    """

    def __init__(self, directory: Path | str) -> None:
        """`directory` is created by `ensure_ready()` if it does not exist."""
        self.directory = Path(directory).expanduser().resolve()

    def describe(self) -> str:
        """`local directory /abs/path`."""
        return f"local directory {self.directory}"

    def __repr__(self) -> str:
        return f"<LocalStore {self.directory}>"

    def _data_path(self, key: str) -> Path:
        check_key(key)
        if key.split("/", 1)[0] == _META_DIR:
            raise ValueError(f"object key {key!r} uses the reserved {_META_DIR} prefix")
        return self.directory / key

    def _meta_path(self, key: str) -> Path:
        return self.directory / _META_DIR / f"{key}.json"

    async def ensure_ready(self) -> None:
        """Create the directory; fail clearly if it cannot be written."""

        def run() -> None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=self.directory):
                    pass
            except OSError as exc:
                raise StorageUnavailable(
                    f"local image directory {self.directory} is not writable: {exc.strerror}",
                    retryable=False,
                ) from None

        await asyncio.to_thread(run)

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
        """Copy `path` to `key` (streaming), verify size and checksum, then make it visible."""
        target = self._data_path(key)
        path = Path(path)
        _check_local_file(path, size, sha256)
        meta = _user_metadata(sha256, metadata)
        await asyncio.to_thread(self._put, key, target, path, size, sha256, content_type, meta)

    def _put(
        self,
        key: str,
        target: Path,
        source: Path,
        size: int,
        sha256: str,
        content_type: str,
        meta: dict[str, str],
    ) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            copied = 0
            with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    copied += len(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            if copied != size or digest.hexdigest() != sha256:
                raise StorageVerificationFailed(
                    f"{key}: copied {copied} bytes hashing to {digest.hexdigest()[:12]}…, "
                    f"expected {size} bytes and {sha256[:12]}…; not stored"
                )
            _write_json_atomic(
                self._meta_path(key),
                {"size": size, "sha256": sha256, "content_type": content_type, "metadata": meta},
            )
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def presign(self, key: str, expires_seconds: int) -> tuple[str, dt.datetime | None]:
        """An absolute `file://` URL; local files do not expire, so `expires_at` is None."""
        return self._data_path(key).as_uri(), None

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size from the file, checksum and type from the sidecar; None if absent."""
        target = self._data_path(key)

        def run() -> ObjectInfo | None:
            try:
                st = target.stat()
            except FileNotFoundError:
                return None
            try:
                sidecar = json.loads(self._meta_path(key).read_text())
            except (OSError, ValueError):
                sidecar = {}
            user = {str(k): str(v) for k, v in (sidecar.get("metadata") or {}).items()}
            return ObjectInfo(
                key=key,
                size=st.st_size,
                content_type=sidecar.get("content_type"),
                sha256=sidecar.get("sha256"),
                etag=None,
                last_modified=dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
                metadata=user,
            )

        return await asyncio.to_thread(run)

    async def delete(self, key: str) -> None:
        """Remove the file and its sidecar; missing is fine."""
        target = self._data_path(key)

        def run() -> None:
            target.unlink(missing_ok=True)
            self._meta_path(key).unlink(missing_ok=True)
            self._prune(target.parent)
            self._prune(self._meta_path(key).parent)

        await asyncio.to_thread(run)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every stored key starting with `prefix` (string prefix, as in S3)."""
        _check_prefix(prefix)

        def run() -> int:
            # Only walk the deepest directory the prefix names, not the whole store.
            base = self.directory / prefix.rpartition("/")[0] if "/" in prefix else self.directory
            if not base.is_dir():
                return 0
            keys = []
            for file in base.rglob("*"):
                if not file.is_file():
                    continue
                key = file.relative_to(self.directory).as_posix()
                if key.startswith(prefix) and not key.startswith(_META_DIR + "/"):
                    if file.name.startswith(".upload-"):
                        continue
                    keys.append(key)
            for key in keys:
                (self.directory / key).unlink(missing_ok=True)
                self._meta_path(key).unlink(missing_ok=True)
                self._prune((self.directory / key).parent)
                self._prune(self._meta_path(key).parent)
            return len(keys)

        return await asyncio.to_thread(run)

    def _prune(self, folder: Path) -> None:
        """Remove empty folders up to (not including) the store root."""
        roots = {self.directory, self.directory / _META_DIR}
        while folder not in roots and self.directory in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def _write_json_atomic(target: Path, data: dict[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".meta-")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- factory


def make_store(settings: Settings) -> ObjectStore:
    """`MinioStore` when `MINIO_ENDPOINT` is set, otherwise `LocalStore(OUTPUT_DIR)`."""
    if settings.minio_endpoint:
        return MinioStore(settings)
    return LocalStore(settings.output_dir)


__all__ = [
    "SHA256_META",
    "LocalStore",
    "MinioStore",
    "ObjectInfo",
    "ObjectStore",
    "StorageAccessDenied",
    "StorageError",
    "check_key",
    "job_prefix",
    "make_store",
    "object_key",
]
