"""Storage layer against a real S3 server (nanio on loopback) and the local directory store."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname

import httpx
import pytest
from minio import Minio

from comfykube.errors import JobError, StorageUnavailable, StorageVerificationFailed
from comfykube.settings import Settings
from comfykube.storage import (
    LocalStore,
    MinioStore,
    ObjectStore,
    StorageAccessDenied,
    check_key,
    job_prefix,
    make_store,
    object_key,
)
from comfykube.types import MAX_PRESIGN_SECONDS
from tests.standins.s3 import NanioServer, unique_bucket

JOB_META = {"job-namespace": "default", "job-name": "cat", "job-uid": "1234"}


def make_file(folder: Path, name: str, data: bytes) -> tuple[Path, int, str]:
    """Write `data` and return (path, size, sha256) as the download step would report them."""
    path = folder / name
    path.write_bytes(data)
    return path, len(data), hashlib.sha256(data).hexdigest()


def png_bytes(n: int = 4096) -> bytes:
    """Not a real PNG, but PNG-looking bytes of a chosen size (the store does not decode)."""
    return (b"\x89PNG\r\n\x1a\n" + os.urandom(n))[:n]


def raw_client(server: NanioServer) -> Minio:
    """An SDK client to look behind the store's back."""
    return Minio(server.endpoint, server.access_key, server.secret_key, secure=False)


# --------------------------------------------------------------------------- keys


def test_object_key_shape_and_safety() -> None:
    assert object_key("default", "cat", "0f1e-22", 0, "png") == "default/cat/0f1e-22/0.png"
    assert object_key("ns", "a b/../c", "u", 3, ".PNG") == "ns/a-b-..-c/u/3.png"
    assert job_prefix("ns", "cat", "u") == "ns/cat/u/"
    with pytest.raises(ValueError):
        object_key("ns", "..", "u", 0, "png")
    with pytest.raises(ValueError):
        object_key("ns", "cat", "u", -1, "png")
    with pytest.raises(ValueError):
        object_key("ns", "cat", "u", 0, "p/ng")
    for bad in ("", "/abs", "a/../b", "a//b", "a/./b", "a\\b", "a\x00b"):
        with pytest.raises(ValueError):
            check_key(bad)


def test_make_store_picks_backend(tmp_path: Path) -> None:
    local = make_store(Settings(minio_endpoint=None, output_dir=tmp_path / "out"))
    assert isinstance(local, LocalStore)
    assert isinstance(local, ObjectStore)
    remote = make_store(
        Settings(minio_endpoint="127.0.0.1:1", minio_access_key="k", minio_secret_key="SECRET-xyz")
    )
    assert isinstance(remote, MinioStore)
    assert isinstance(remote, ObjectStore)
    assert "SECRET-xyz" not in remote.describe() + repr(remote)
    assert "127.0.0.1:1" in remote.describe()


# --------------------------------------------------------------------------- MinIO / nanio


async def test_put_stat_presign_roundtrip(s3_settings: Settings, tmp_path: Path) -> None:
    store = MinioStore(s3_settings)
    await store.ensure_ready()
    await store.ensure_ready()  # idempotent
    path, size, sha = make_file(tmp_path, "img.png", png_bytes(200_000))
    key = object_key("default", "cat", "1234", 0, "png")

    await store.put_verified(key, path, size=size, sha256=sha, content_type="image/png", metadata=JOB_META)

    info = await store.stat(key)
    assert info is not None
    assert (info.size, info.sha256, info.content_type) == (size, sha, "image/png")
    assert info.metadata["job-uid"] == "1234"
    assert info.metadata["job-namespace"] == "default"

    before = dt.datetime.now(dt.UTC)
    url, expires_at = await store.presign(key, 600)
    assert expires_at is not None
    assert before + dt.timedelta(seconds=598) <= expires_at <= before + dt.timedelta(seconds=601)
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert hashlib.sha256(response.content).hexdigest() == sha

    assert await store.stat(object_key("default", "cat", "1234", 1, "png")) is None


async def test_zero_byte_and_wrong_size_refused_nothing_stored(
    s3_settings: Settings, s3_server: NanioServer, tmp_path: Path
) -> None:
    store = MinioStore(s3_settings)
    await store.ensure_ready()
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    empty_sha = hashlib.sha256(b"").hexdigest()
    key = "ns/job/uid/0.png"

    with pytest.raises(StorageVerificationFailed, match="empty"):
        await store.put_verified(key, empty, size=0, sha256=empty_sha, content_type="image/png")
    # A caller claiming bytes the file does not have is refused too.
    with pytest.raises(StorageVerificationFailed):
        await store.put_verified(key, empty, size=10, sha256=empty_sha, content_type="image/png")
    path, size, sha = make_file(tmp_path, "a.png", b"abc")
    with pytest.raises(StorageVerificationFailed, match="bytes on disk"):
        await store.put_verified(key, path, size=size + 1, sha256=sha, content_type="image/png")

    assert await store.stat(key) is None
    assert list(raw_client(s3_server).list_objects(s3_settings.minio_bucket, recursive=True)) == []


async def test_checksum_mismatch_deletes_object(
    s3_settings: Settings, s3_server: NanioServer, tmp_path: Path
) -> None:
    store = MinioStore(s3_settings)
    await store.ensure_ready()
    path, size, _ = make_file(tmp_path, "a.png", png_bytes(10_000))
    key = "ns/job/uid/0.png"
    with pytest.raises(StorageVerificationFailed, match="object deleted") as caught:
        await store.put_verified(key, path, size=size, sha256="0" * 64, content_type="image/png")
    assert not caught.value.retryable
    assert await store.stat(key) is None
    assert list(raw_client(s3_server).list_objects(s3_settings.minio_bucket, recursive=True)) == []


async def test_stored_object_mismatch_is_detected(
    s3_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the read-back disagrees (here: a short object), the object is deleted and the job fails.

    The read-back runs when the server's ETag proves nothing (as with KMS encryption, where it is no MD5).
    """
    store = MinioStore(s3_settings)
    await store.ensure_ready()
    path, size, sha = make_file(tmp_path, "a.png", png_bytes(5000))
    key = "ns/job/uid/0.png"
    real_stat = store.stat
    real_upload = store._upload

    def upload_without_md5_etag(*args: Any) -> Any:
        sent = real_upload(*args)
        return sent.__class__(**{**sent.__dict__, "etag": "0" * 32})

    monkeypatch.setattr(store, "_upload", upload_without_md5_etag)

    async def lying_stat(k: str):  # type: ignore[no-untyped-def]
        info = await real_stat(k)
        assert info is not None
        return info.__class__(**{**info.__dict__, "size": info.size - 1})

    monkeypatch.setattr(store, "stat", lying_stat)
    with pytest.raises(StorageVerificationFailed, match="4999 bytes in the store"):
        await store.put_verified(key, path, size=size, sha256=sha, content_type="image/png")
    monkeypatch.undo()
    assert await store.stat(key) is None


async def test_an_etag_matching_the_sent_bytes_needs_no_read_back(
    s3_settings: Settings, s3_server: NanioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single PUT's ETag is the server's MD5 of what it stored: equal to ours, no HEAD is sent."""
    store = MinioStore(s3_settings)
    await store.ensure_ready()
    path, size, sha = make_file(tmp_path, "a.png", png_bytes(5000))
    reads: list[str] = []
    real_stat = store.stat

    async def counting_stat(k: str):  # type: ignore[no-untyped-def]
        reads.append(k)
        return await real_stat(k)

    monkeypatch.setattr(store, "stat", counting_stat)
    await store.put_verified("ns/job/uid/0.png", path, size=size, sha256=sha, content_type="image/png")
    assert reads == []
    # What the ETag vouched for is really there, byte for byte (read with another client).
    body = raw_client(s3_server).get_object(s3_settings.minio_bucket, "ns/job/uid/0.png").read()
    assert hashlib.sha256(body).hexdigest() == sha

    # An ETag naming other bytes proves nothing either way: the object is read back.
    real_upload = store._upload

    def upload_with_other_etag(*args: Any) -> Any:
        sent = real_upload(*args)
        return sent.__class__(**{**sent.__dict__, "etag": hashlib.md5(b"other").hexdigest()})

    monkeypatch.setattr(store, "_upload", upload_with_other_etag)
    await store.put_verified("ns/job/uid/1.png", path, size=size, sha256=sha, content_type="image/png")
    assert reads == ["ns/job/uid/1.png"]


async def test_wrong_secret_is_access_denied(s3_server: NanioServer, tmp_path: Path) -> None:
    secret = "definitely-wrong-secret-42"
    settings = s3_server.settings(unique_bucket(), minio_secret_key=secret)
    store = MinioStore(settings)
    with pytest.raises(StorageAccessDenied) as caught:
        await store.ensure_ready()
    error = caught.value
    assert isinstance(error, JobError)
    assert error.reason == "StorageAccessDenied"
    assert not error.retryable
    assert s3_server.endpoint in error.message
    assert "MINIO_SECRET_KEY" in error.message
    assert secret not in str(error)

    path, size, sha = make_file(tmp_path, "a.png", b"12345")
    with pytest.raises(StorageAccessDenied):
        await store.put_verified("a/b/c/0.png", path, size=size, sha256=sha, content_type="image/png")

    unknown_key = MinioStore(s3_server.settings(unique_bucket(), minio_access_key="nobody"))
    with pytest.raises(StorageAccessDenied):
        await unknown_key.ensure_ready()


async def test_s3_down_then_back(s3_server_private: NanioServer, tmp_path: Path) -> None:
    server = s3_server_private
    store = MinioStore(server.settings(unique_bucket()))
    await store.ensure_ready()
    first, size1, sha1 = make_file(tmp_path, "1.png", png_bytes(3000))
    await store.put_verified("ns/a/u/0.png", first, size=size1, sha256=sha1, content_type="image/png")

    server.stop()
    second, size2, sha2 = make_file(tmp_path, "2.png", png_bytes(3000))
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        await store.put_verified("ns/a/u/1.png", second, size=size2, sha256=sha2, content_type="image/png")
    assert time.monotonic() - started < 10, "a dead S3 must be reported quickly"
    assert caught.value.retryable
    assert caught.value.reason == "StorageUnavailable"
    assert server.endpoint in caught.value.message
    for call in (store.ensure_ready(), store.stat("ns/a/u/0.png"), store.delete_prefix("ns/a/")):
        with pytest.raises(StorageUnavailable):
            await call

    server.start()
    await store.ensure_ready()
    await store.put_verified("ns/a/u/1.png", second, size=size2, sha256=sha2, content_type="image/png")
    info = await store.stat("ns/a/u/0.png")
    assert info is not None and info.sha256 == sha1  # data survived the restart


async def test_presign_expiry_respected(s3_settings: Settings, tmp_path: Path) -> None:
    store = MinioStore(s3_settings)
    await store.ensure_ready()
    path, size, sha = make_file(tmp_path, "a.png", png_bytes(1000))
    await store.put_verified("ns/j/u/0.png", path, size=size, sha256=sha, content_type="image/png")

    url, expires_at = await store.presign("ns/j/u/0.png", 2)
    assert expires_at is not None
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 200
        wait = (expires_at - dt.datetime.now(dt.UTC)).total_seconds() + 1.2
        await asyncio.sleep(max(wait, 0))
        assert (await http.get(url)).status_code == 403

    _, capped = await store.presign("ns/j/u/0.png", 10**9)
    assert capped is not None
    assert capped <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=MAX_PRESIGN_SECONDS)
    assert capped >= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=MAX_PRESIGN_SECONDS - 5)


async def test_public_endpoint_presign(s3_server: NanioServer, tmp_path: Path) -> None:
    """URLs are signed for the public host; rewriting an internal URL's host would not work."""
    public = f"http://localhost:{s3_server.port}"
    bucket = unique_bucket()
    store = MinioStore(s3_server.settings(bucket, minio_public_endpoint=public))
    internal = MinioStore(s3_server.settings(bucket))
    await store.ensure_ready()
    assert public in store.describe()
    path, size, sha = make_file(tmp_path, "a.png", png_bytes(5000))
    await store.put_verified("ns/j/u/0.png", path, size=size, sha256=sha, content_type="image/png")

    url, _ = await store.presign("ns/j/u/0.png", 300)
    assert urlsplit(url).netloc == f"localhost:{s3_server.port}"
    internal_url, _ = await internal.presign("ns/j/u/0.png", 300)
    assert urlsplit(internal_url).netloc == s3_server.endpoint
    rewritten = urlunsplit(urlsplit(internal_url)._replace(netloc=f"localhost:{s3_server.port}"))
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == sha
        assert (await http.get(rewritten)).status_code == 403


async def test_delete_and_delete_prefix(s3_settings: Settings, tmp_path: Path) -> None:
    store = MinioStore(s3_settings)
    await store.ensure_ready()
    path, size, sha = make_file(tmp_path, "a.png", png_bytes(500))
    keep = [object_key("ns", "cat", "u2", 0, "png"), object_key("ns", "cat2", "u1", 0, "png")]
    gone = [object_key("ns", "cat", "u1", i, "png") for i in range(3)]
    for key in keep + gone:
        await store.put_verified(key, path, size=size, sha256=sha, content_type="image/png")

    assert await store.delete_prefix(job_prefix("ns", "cat", "u1")) == 3
    for key in gone:
        assert await store.stat(key) is None
    for key in keep:
        assert await store.stat(key) is not None
    assert await store.delete_prefix(job_prefix("ns", "cat", "u1")) == 0
    with pytest.raises(ValueError):
        await store.delete_prefix("")
    with pytest.raises(ValueError):
        await store.delete_prefix("/")

    await store.delete(keep[0])
    await store.delete(keep[0])  # missing is fine
    assert await store.stat(keep[0]) is None


async def test_concurrent_bucket_creation(s3_server: NanioServer) -> None:
    bucket = unique_bucket()
    stores = [MinioStore(s3_server.settings(bucket)) for _ in range(4)]
    await asyncio.gather(*(store.ensure_ready() for store in stores))
    assert raw_client(s3_server).bucket_exists(bucket)


async def test_upload_does_not_block_event_loop(s3_settings: Settings, tmp_path: Path) -> None:
    store = MinioStore(s3_settings)
    await store.ensure_ready()
    data = os.urandom(1024 * 1024) * 24
    path, size, sha = make_file(tmp_path, "big.png", data)
    ticks = 0
    longest = 0.0

    async def ticker() -> None:
        nonlocal ticks, longest
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            longest = max(longest, now - last)
            last = now
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await store.put_verified("ns/big/u/0.png", path, size=size, sha256=sha, content_type="image/png")
    finally:
        task.cancel()
    assert ticks >= 3
    # Generous: the GIL can delay the loop a little while hashing, but never for the whole upload.
    assert longest < 1.0


@pytest.mark.slow
def test_100mb_upload_memory_bounded(s3_settings: Settings, tmp_path: Path) -> None:
    """Peak RSS growth during a 100 MB upload stays far below the file size (streaming)."""
    big = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    with big.open("wb") as handle:
        for _ in range(100):
            handle.write(block)
            digest.update(block)
    small = tmp_path / "small.bin"
    small.write_bytes(block)
    script = r"""
import asyncio, hashlib, json, sys, threading, time
from pathlib import Path
from typing import Any
import psutil
from comfykube.settings import Settings
from comfykube.storage import MinioStore

proc = psutil.Process()
peak = 0
sampling = threading.Event()

def sampler():
    # ru_maxrss would hide growth below the import-time peak; sample the current RSS instead.
    global peak
    while sampling.is_set():
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.005)

async def main():
    global peak
    cfg = json.loads(sys.argv[1])
    store = MinioStore(Settings(**cfg["settings"]))
    await store.ensure_ready()
    small = Path(cfg["small"])
    data = small.read_bytes()
    # Warm-up: imports, thread pool, connection pool, one small upload.
    await store.put_verified("warm/up/u/0.bin", small, size=len(data),
                             sha256=hashlib.sha256(data).hexdigest(), content_type="application/octet-stream")
    del data
    before = proc.memory_info().rss
    peak = before
    sampling.set()
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    await store.put_verified("big/file/u/0.bin", Path(cfg["big"]), size=cfg["size"], sha256=cfg["sha"],
                             content_type="application/octet-stream")
    sampling.clear()
    thread.join()
    info = await store.stat("big/file/u/0.bin")
    print(json.dumps({"before": before, "peak": peak, "size": info.size}))

asyncio.run(main())
"""
    cfg = {
        "settings": s3_settings.model_dump(
            mode="json",
            include={
                "minio_endpoint",
                "minio_access_key",
                "minio_secret_key",
                "minio_bucket",
                "minio_secure",
            },
        ),
        "small": str(small),
        "big": str(big),
        "size": big.stat().st_size,
        "sha": digest.hexdigest(),
    }
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["size"] == 100 * 1024 * 1024
    growth_mb = (report["peak"] - report["before"]) / 2**20
    # Parts are 5 MiB with two in flight; 60 MB leaves lots of room yet is far below 100 MB.
    assert growth_mb < 60, f"peak RSS grew by {growth_mb:.1f} MB while uploading 100 MB"


# --------------------------------------------------------------------------- local store


def file_url_path(url: str) -> Path:
    parts = urlsplit(url)
    assert parts.scheme == "file"
    return Path(url2pathname(parts.path))


async def test_local_store_roundtrip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "images")
    await store.ensure_ready()
    assert str(tmp_path / "images") in store.describe()
    path, size, sha = make_file(tmp_path, "a.png", png_bytes(7000))
    key = object_key("default", "cat", "1234", 0, "png")
    await store.put_verified(key, path, size=size, sha256=sha, content_type="image/png", metadata=JOB_META)

    info = await store.stat(key)
    assert info is not None
    assert (info.size, info.sha256, info.content_type) == (size, sha, "image/png")
    assert info.metadata["job-name"] == "cat"

    url, expires_at = await store.presign(key, 60)
    assert expires_at is None
    assert url.startswith("file:///")
    target = file_url_path(url)
    assert target.is_absolute()
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha
    assert await store.stat("default/cat/1234/1.png") is None


async def test_local_store_refusals(tmp_path: Path) -> None:
    root = tmp_path / "images"
    store = LocalStore(root)
    await store.ensure_ready()
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(StorageVerificationFailed, match="empty"):
        await store.put_verified(
            "a/b/c/0.png", empty, size=0, sha256=hashlib.sha256(b"").hexdigest(), content_type="image/png"
        )
    path, size, _ = make_file(tmp_path, "a.png", b"hello")
    with pytest.raises(StorageVerificationFailed):
        await store.put_verified("a/b/c/0.png", path, size=size, sha256="f" * 64, content_type="image/png")
    with pytest.raises(ValueError):
        await store.put_verified("../escape.png", path, size=size, sha256="f" * 64, content_type="image/png")
    with pytest.raises(ValueError):
        await store.stat(".comfykube-meta/a/b/c/0.png.json")
    # Nothing became visible: no data file, no leftover temporary upload.
    assert [p for p in root.rglob("*") if p.is_file()] == []


async def test_local_store_delete_prefix(tmp_path: Path) -> None:
    root = tmp_path / "images"
    store = LocalStore(root)
    await store.ensure_ready()
    path, size, sha = make_file(tmp_path, "a.png", b"x" * 100)
    gone = [object_key("ns", "cat", "u1", i, "png") for i in range(2)]
    keep = [object_key("ns", "cat", "u2", 0, "png"), object_key("ns", "cat-2", "u1", 0, "png")]
    for key in gone + keep:
        await store.put_verified(key, path, size=size, sha256=sha, content_type="image/png")

    assert await store.delete_prefix(job_prefix("ns", "cat", "u1")) == 2
    assert [await store.stat(k) for k in gone] == [None, None]
    assert all([await store.stat(k) for k in keep])
    assert not (root / "ns" / "cat" / "u1").exists()
    assert await store.delete_prefix("ns/cat/") == 1  # string prefix, as in S3: not ns/cat-2/
    assert await store.stat(keep[1]) is not None
    with pytest.raises(ValueError):
        await store.delete_prefix("")

    await store.delete(keep[1])
    await store.delete(keep[1])
    assert await store.stat(keep[1]) is None
    sidecars = list((root / ".comfykube-meta").rglob("*.json"))
    assert sidecars == []


async def test_local_store_sidecar_content(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.ensure_ready()
    path, size, sha = make_file(tmp_path, "a.png", b"y" * 10)
    await store.put_verified("n/j/u/0.png", path, size=size, sha256=sha, content_type="image/png")
    sidecar = json.loads((tmp_path / ".comfykube-meta" / "n/j/u/0.png.json").read_text())
    assert sidecar["sha256"] == sha and sidecar["size"] == 10
