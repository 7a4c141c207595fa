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

from comfykube.settings import Settings
from comfykube.storage.base import (
    SHA256_META,
    ObjectInfo,
    ObjectStore,
    StorageAccessDenied,
    StorageError,
    check_key,
    input_prefix,
    job_prefix,
    object_key,
    preview_key,
)
from comfykube.storage.local_store import LocalStore
from comfykube.storage.minio_store import MinioStore


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
    "input_prefix",
    "job_prefix",
    "make_store",
    "object_key",
    "preview_key",
]

