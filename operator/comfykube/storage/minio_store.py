"""`MinioStore`: S3/MinIO through the synchronous minio SDK, every call in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar, cast

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from comfykube.errors import JobError, StorageUnavailable, StorageVerificationFailed
from comfykube.settings import Settings
from comfykube.storage.base import (
    CHUNK,
    SHA256_META,
    ObjectInfo,
    ObjectTooLarge,
    StorageAccessDenied,
    StorageError,
    check_key,
    check_local_file,
    check_prefix,
    clamp_expiry,
    user_metadata,
    verification_problem,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

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


class _HashingReader:
    """File wrapper that hashes exactly the bytes the SDK reads (and so sends): SHA-256 and MD5."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        # MD5 only to compare with the server's ETag (S3's checksum of a single PUT), not for security.
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self.digest.update(chunk)
        self.md5.update(chunk)
        self.count += len(chunk)
        return chunk


@dataclass(frozen=True)
class _Sent:
    """What one upload sent, and what the server answered about it."""

    sha256: str
    md5: str
    count: int
    #: The ETag of the PUT's answer, without quotes, lower-case ("" when none came).
    etag: str


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
        """Upload `path` to `key`, streaming, then verify what the server stored.

        Checks, in order: the file is not empty and has `size` bytes; the
        bytes actually sent hash to `sha256` (hashed on the fly, no second
        read); then what got stored. For a single PUT, S3 answers with an ETag
        that is the MD5 of the bytes it received and stored: when it equals the
        MD5 of the bytes sent (and they were `size` bytes), the object is proven
        without another request (its metadata, the checksum included, went in the
        same SigV4-signed request, which the server refuses when altered). Any
        other answer (a multipart ETag, encryption with KMS where the ETag is no
        MD5, no ETag at all, a different MD5) is checked by reading the object
        back: it must have `size` bytes and carry `sha256` in its metadata. Any
        mismatch deletes the object and raises `StorageVerificationFailed`, so a
        half-right image never gets a link.
        """
        check_key(key)
        path = Path(path)
        check_local_file(path, size, sha256)
        meta = user_metadata(sha256, metadata)
        sent = await self._call("upload " + key, self._upload, key, path, size, content_type, meta)
        if sent.sha256 != sha256 or sent.count != size:
            await self._discard(key)
            raise StorageVerificationFailed(
                f"{path.name} changed while uploading to {key}: sent {sent.count} bytes hashing to "
                f"{sent.sha256[:12]}…, expected {size} bytes and {sha256[:12]}…; object deleted"
            )
        if sent.etag == sent.md5:
            return  # the server's own checksum of what it stored is the one of the bytes sent
        info = await self.stat(key)
        problem = verification_problem(key, info, size, sha256)
        if problem:
            await self._discard(key)
            raise StorageVerificationFailed(problem + "; object deleted")

    def _upload(self, key: str, path: Path, size: int, content_type: str, meta: dict[str, str]) -> _Sent:
        # put_object with a known length reads one part (5 MiB) at a time, at most
        # num_parallel_uploads parts in flight: memory stays bounded for any size.
        try:
            handle = path.open("rb")
        except OSError as exc:
            # A local file problem is not "S3 unreachable": say what it is.
            raise StorageVerificationFailed(f"cannot read {path.name} for upload: {exc.strerror}") from None
        with handle:
            reader = _HashingReader(handle)
            result = self._client.put_object(
                self.bucket,
                key,
                cast(BinaryIO, reader),  # the SDK only calls read(n) on it
                length=size,
                content_type=content_type,
                metadata=meta,  # type: ignore[arg-type]
                num_parallel_uploads=2,
            )
        etag = str(result.etag or "").strip().strip('"').lower()
        return _Sent(reader.digest.hexdigest(), reader.md5.hexdigest(), reader.count, etag)

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
        seconds = clamp_expiry(expires_seconds)
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

    async def fetch_to(self, key: str, dest: Path, *, max_bytes: int) -> int | None:
        """GET the object into `dest` in chunks (never whole in memory); None when it does not exist."""
        check_key(key)

        def run() -> int:
            response = self._client.get_object(self.bucket, key)
            try:
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise ObjectTooLarge(f"object {key!r} is {declared} bytes, more than {max_bytes}")
                size = 0
                with open(dest, "wb") as out:
                    for chunk in response.stream(CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            raise ObjectTooLarge(f"object {key!r} is larger than {max_bytes} bytes")
                        out.write(chunk)
                return size
            finally:
                response.close()
                response.release_conn()

        try:
            return await self._call("read " + key, run)
        except StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code in _MISSING_CODES:
                return None
            raise
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)  # also on cancellation: no await here
            raise

    async def delete(self, key: str) -> None:
        """Delete one object (S3 answers 204 for missing objects too)."""
        check_key(key)
        await self._call("delete " + key, self._client.remove_object, self.bucket, key)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete all objects under `prefix` (e.g. `job_prefix(...)`); returns how many."""
        check_prefix(prefix)

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


