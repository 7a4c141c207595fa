"""Download the model files a ComfyUI needs, each checked against its sha256, before it starts.

`comfykube fetch-models --manifest models.json --dest /models` runs as the chart's initContainer
(the comfykube image, so no extra image): for each entry it downloads `url` to `dest/path`,
resuming a partial download (`.part` file, HTTP Range) after a dropped connection or a restarted
pod, and moves the file into place only when its sha256 matches. A file already in place with a
matching record (`.sha256` beside it, with size and mtime) is not read again, so a restart with a
full volume costs nothing.

Private URLs and headers (tokens) come from a mounted Secret, never from the manifest:
`urlSecretKey` names a file in `--secrets-dir` holding the URL, `headersSecretKey` one holding
headers as `Name: value` lines. Neither the URL of such an entry nor any header is ever printed.

The manifest is JSON (a list, or `{"models": [...]}`); each entry:
`{"path": "checkpoints/x.safetensors", "sha256": "<64 hex>", "url": "https://..."}`
with `urlSecretKey` instead of `url`, and an optional `headersSecretKey`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

CHUNK = 1024 * 1024
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FetchError(Exception):
    """A model could not be fetched or did not verify; the message is safe to print."""


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """One entry of the manifest, resolved: where it goes, what it must hash to, where from."""

    path: str
    sha256: str
    url: str
    headers: dict[str, str]
    shown_as: str  # the URL, or "secret key K" for a private one

    @property
    def name(self) -> str:
        """The file's place under the destination, for messages."""
        return self.path


def load_manifest(manifest: Path, secrets_dir: Path | None) -> list[ModelFile]:
    """Read and check the manifest; FetchError names the entry and what is wrong."""
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FetchError(f"cannot read the model manifest {manifest}: {exc}") from None
    entries = doc.get("models", []) if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise FetchError(f"{manifest}: expected a list of models or {{\"models\": [...]}}")
    files = [_entry(index, entry, secrets_dir) for index, entry in enumerate(entries)]
    seen: set[str] = set()
    for item in files:
        if item.path in seen:
            raise FetchError(f"models[{[f.path for f in files].index(item.path)}]: path {item.path!r} is listed twice")
        seen.add(item.path)
    return files


def _entry(index: int, entry: Any, secrets_dir: Path | None) -> ModelFile:
    where = f"models[{index}]"
    if not isinstance(entry, dict):
        raise FetchError(f"{where}: expected an object with path, sha256 and url (or urlSecretKey)")
    path = str(entry.get("path", ""))
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or path.endswith("/"):
        raise FetchError(f"{where}: path must be relative inside the models volume, e.g. checkpoints/x.safetensors")
    sha = str(entry.get("sha256", "")).lower()
    if not SHA256.match(sha):
        raise FetchError(f"{where} ({path}): sha256 must be 64 hexadecimal digits")
    if ("url" in entry) == ("urlSecretKey" in entry):
        raise FetchError(f"{where} ({path}): give exactly one of url and urlSecretKey")
    if "url" in entry:
        url, shown = str(entry["url"]), str(entry["url"])
    else:
        url, shown = _secret(secrets_dir, entry["urlSecretKey"], where).strip(), f"secret key {entry['urlSecretKey']}"
    if not url.startswith(("https://", "http://")):
        raise FetchError(f"{where} ({path}): the URL must start with https:// or http://")
    headers: dict[str, str] = {}
    if "headersSecretKey" in entry:
        for line in _secret(secrets_dir, entry["headersSecretKey"], where).splitlines():
            if line.strip():
                header, sep, value = line.partition(":")
                if not sep or not header.strip():
                    raise FetchError(f"{where} ({path}): secret key {entry['headersSecretKey']}: "
                                     "each line must be 'Name: value'")
                headers[header.strip()] = value.strip()
    return ModelFile(path=path, sha256=sha, url=url, headers=headers, shown_as=shown)


def _secret(secrets_dir: Path | None, key: Any, where: str) -> str:
    if secrets_dir is None:
        raise FetchError(f"{where}: uses a secret key but no --secrets-dir is given")
    name = str(key)
    if not name or "/" in name or name.startswith("."):
        raise FetchError(f"{where}: secret key {name!r} is not a plain key name")
    try:
        return (secrets_dir / name).read_text(encoding="utf-8")
    except OSError:
        raise FetchError(f"{where}: secret key {name!r} is not in {secrets_dir}") from None


def _record(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _recorded_ok(target: Path, sha: str) -> bool:
    """True when `target` was verified before and has not changed since (size and mtime)."""
    try:
        stat = target.stat()
        saved = json.loads(_record(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and saved == {"sha256": sha, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_record(target: Path, sha: str) -> None:
    stat = target.stat()
    _record(target).write_text(json.dumps({"sha256": sha, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))


def _hash_file(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest


def fetch_one(
    item: ModelFile, dest: Path, *, http: httpx.Client, attempts: int = 5, log: Callable[[str], None] = print
) -> str:
    """Bring one model into place; returns "present" or "fetched". FetchError on failure."""
    target = dest / item.path
    if target.is_file():
        if _recorded_ok(target, item.sha256) or _hash_file(target).hexdigest() == item.sha256:
            if not _recorded_ok(target, item.sha256):
                _write_record(target, item.sha256)
            log(f"{item.name}: present, sha256 ok")
            return "present"
        log(f"{item.name}: present but its sha256 differs; fetching it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    last_error = "no attempt made"
    for attempt in range(1, attempts + 1):
        try:
            _download(item, part, http=http, log=log)
            break
        except (httpx.TransportError, FetchError) as exc:
            if isinstance(exc, FetchError) and not str(exc).startswith("retry:"):
                raise
            last_error = str(exc).removeprefix("retry:").strip() or type(exc).__name__
            log(f"{item.name}: attempt {attempt}/{attempts} broke off ({last_error}); resuming")
            time.sleep(min(2 ** (attempt - 1) * 0.2, 5))
    else:
        raise FetchError(f"{item.name}: could not be downloaded from {item.shown_as}: {last_error}")
    actual = _hash_file(part).hexdigest()
    if actual != item.sha256:
        part.unlink(missing_ok=True)  # a wrong file must not be resumed from
        raise FetchError(f"{item.name}: sha256 mismatch: expected {item.sha256}, got {actual} "
                         f"(from {item.shown_as}); the download was deleted")
    os.replace(part, target)
    _write_record(target, item.sha256)
    log(f"{item.name}: fetched, sha256 ok ({target.stat().st_size} bytes)")
    return "fetched"


def _download(item: ModelFile, part: Path, *, http: httpx.Client, log: Callable[[str], None]) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = dict(item.headers)
    if have:
        headers["Range"] = f"bytes={have}-"
    with http.stream("GET", item.url, headers=headers) as response:
        if response.status_code == 416 and have:
            # Range past the end: the partial file is already complete (or wrong, which the hash tells).
            return
        if response.status_code == 206 and have:
            mode = "ab"
            log(f"{item.name}: resuming at byte {have}")
        elif response.status_code == 200:
            mode = "wb"  # the server ignored Range, or a fresh start: write from the beginning
        elif response.status_code >= 500 or response.status_code == 429:
            raise FetchError(f"retry: {item.shown_as} answered HTTP {response.status_code}")
        else:
            raise FetchError(f"{item.name}: {item.shown_as} answered HTTP {response.status_code}")
        expected = response.headers.get("Content-Length")
        written = 0
        with part.open(mode) as handle:
            for block in response.iter_raw():  # as received: a drop loses nothing buffered
                handle.write(block)
                written += len(block)
        if expected is not None and written < int(expected):
            raise FetchError(f"retry: the connection ended after {written} of {expected} bytes")


def fetch_models(
    manifest: Path, dest: Path, *, secrets_dir: Path | None = None, timeout: float = 60.0, attempts: int = 5,
    log: Callable[[str], None] = print,
) -> int:
    """Fetch every model of the manifest into `dest`; returns the CLI exit code (0, 1, 2)."""
    try:
        files = load_manifest(manifest, secrets_dir)
    except FetchError as exc:
        print(f"comfykube fetch-models: {exc}", file=sys.stderr)
        return 2
    failed = 0
    with httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)), follow_redirects=True) as http:
        for item in files:
            try:
                fetch_one(item, dest, http=http, attempts=attempts, log=log)
            except FetchError as exc:
                print(f"comfykube fetch-models: {exc}", file=sys.stderr)
                failed += 1
    log(f"{len(files) - failed} of {len(files)} models in place under {dest}")
    return 1 if failed else 0
