"""`LocalStore`: a local directory, the embedded default when no MinIO is configured."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from comfykube.errors import StorageUnavailable, StorageVerificationFailed
from comfykube.storage.base import (
    CHUNK,
    ObjectInfo,
    ObjectTooLarge,
    check_key,
    check_local_file,
    check_prefix,
    user_metadata,
)

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
        check_local_file(path, size, sha256)
        meta = user_metadata(sha256, metadata)
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
                while chunk := src.read(CHUNK):
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

    async def fetch_to(self, key: str, dest: Path, *, max_bytes: int) -> int | None:
        """Copy the object's file into `dest` in chunks; None when it does not exist."""
        source = self._data_path(key)

        def run() -> int | None:
            try:
                handle = open(source, "rb")
            except (FileNotFoundError, IsADirectoryError):
                return None
            size = 0
            with handle, open(dest, "wb") as out:
                while chunk := handle.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ObjectTooLarge(f"object {key!r} is larger than {max_bytes} bytes")
                    out.write(chunk)
            return size

        try:
            return await asyncio.to_thread(run)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)  # also on cancellation: no await here
            raise

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
        check_prefix(prefix)

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


