"""`comfykube fetch-models` against a real HTTP server on loopback: verified, resumed, private."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfykube.fetch_models import FetchError, fetch_models, load_manifest

BODY = os.urandom(256 * 1024 + 17)
SHA = hashlib.sha256(BODY).hexdigest()
TOKEN = "Bearer s3cr3t-token"


class Server(http.server.ThreadingHTTPServer):
    """Serves BODY at /model.bin (Range-aware), /private.bin (needs TOKEN), /cut.bin (drops once)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, str | None]] = []
        self.cuts_left = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Range")))
        if self.path == "/private.bin" and self.headers.get("Authorization") != TOKEN:
            self.send_error(401)
            return
        if self.path not in ("/model.bin", "/private.bin", "/cut.bin", "/norange.bin"):
            self.send_error(404)
            return
        start = 0
        ranged = self.headers.get("Range")
        if ranged and self.path != "/norange.bin":
            start = int(ranged.removeprefix("bytes=").rstrip("-"))
            if start >= len(BODY):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(BODY) - start))
        self.end_headers()
        if self.path == "/cut.bin" and self.server.cuts_left:
            self.server.cuts_left -= 1
            self.wfile.write(BODY[start:start + 100_000])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-file
            return
        self.wfile.write(BODY[start:])


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def manifest(tmp_path: Path, *entries: dict[str, str]) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": list(entries)}))
    return path


def run(tmp_path: Path, *entries: dict[str, str], secrets: Path | None = None) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = fetch_models(manifest(tmp_path, *entries), tmp_path / "models", secrets_dir=secrets,
                        attempts=3, timeout=10, log=lines.append)
    return code, lines


def test_fetches_and_verifies_then_skips_without_downloading_again(server: Server, tmp_path: Path) -> None:
    entry = {"path": "checkpoints/tiny.safetensors", "sha256": SHA, "url": f"{server.url}/model.bin"}
    code, lines = run(tmp_path, entry)
    assert code == 0, lines
    target = tmp_path / "models" / "checkpoints" / "tiny.safetensors"
    assert target.read_bytes() == BODY
    assert not (target.parent / "tiny.safetensors.part").exists()
    assert len(server.requests) == 1
    code, lines = run(tmp_path, entry)
    assert code == 0 and "present, sha256 ok" in lines[0]
    assert len(server.requests) == 1  # nothing fetched the second time


def test_sha256_mismatch_fails_and_leaves_nothing_behind(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "0" * 64
    code, _ = run(tmp_path, {"path": "checkpoints/x.safetensors", "sha256": wrong, "url": f"{server.url}/model.bin"})
    assert code == 1
    err = capsys.readouterr().err
    assert f"sha256 mismatch: expected {wrong}, got {SHA}" in err
    assert not list((tmp_path / "models" / "checkpoints").iterdir())


def test_a_partial_download_is_resumed_with_a_range_request(server: Server, tmp_path: Path) -> None:
    part = tmp_path / "models" / "loras" / "l.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY[:1000])
    code, lines = run(tmp_path, {"path": "loras/l.safetensors", "sha256": SHA, "url": f"{server.url}/model.bin"})
    assert code == 0, lines
    assert server.requests == [("/model.bin", "bytes=1000-")]
    assert (tmp_path / "models" / "loras" / "l.safetensors").read_bytes() == BODY
    assert any("resuming at byte 1000" in line for line in lines)


def test_a_dropped_connection_is_resumed_where_it_stopped(server: Server, tmp_path: Path) -> None:
    code, lines = run(tmp_path, {"path": "c/cut.bin", "sha256": SHA, "url": f"{server.url}/cut.bin"})
    assert code == 0, lines
    assert server.requests[0] == ("/cut.bin", None)
    assert server.requests[1][1] is not None and server.requests[1][1].startswith("bytes=")
    assert (tmp_path / "models" / "c" / "cut.bin").read_bytes() == BODY


def test_a_server_ignoring_range_restarts_the_file(server: Server, tmp_path: Path) -> None:
    part = tmp_path / "models" / "n.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage" * 10)
    code, _ = run(tmp_path, {"path": "n.bin", "sha256": SHA, "url": f"{server.url}/norange.bin"})
    assert code == 0
    assert (tmp_path / "models" / "n.bin").read_bytes() == BODY


def test_private_url_and_headers_come_from_the_secret_and_are_never_printed(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = tmp_path / "secret"
    secrets.mkdir()
    (secrets / "privateUrl").write_text(f"{server.url}/private.bin\n")
    (secrets / "hfHeaders").write_text(f"Authorization: {TOKEN}\n")
    entry = {"path": "checkpoints/p.safetensors", "sha256": SHA, "urlSecretKey": "privateUrl",
             "headersSecretKey": "hfHeaders"}
    code, lines = run(tmp_path, entry, secrets=secrets)
    assert code == 0, lines
    assert (tmp_path / "models" / "checkpoints" / "p.safetensors").read_bytes() == BODY
    # Without the headers the server says 401, and the message names the key, not the URL.
    (tmp_path / "models" / "checkpoints" / "p.safetensors").unlink()
    code, lines = run(tmp_path, {k: v for k, v in entry.items() if k != "headersSecretKey"}, secrets=secrets)
    assert code == 1
    printed = capsys.readouterr().err + "\n".join(lines)
    assert "secret key privateUrl answered HTTP 401" in printed
    assert "private.bin" not in printed and "s3cr3t" not in printed


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "../etc/x", "sha256": SHA, "url": "https://x"}, "path must be relative"),
        ({"path": "/abs", "sha256": SHA, "url": "https://x"}, "path must be relative"),
        ({"path": "a.bin", "sha256": "abc", "url": "https://x"}, "sha256 must be 64 hexadecimal digits"),
        ({"path": "a.bin", "sha256": SHA}, "give exactly one of url and urlSecretKey"),
        ({"path": "a.bin", "sha256": SHA, "url": "file:///etc/passwd"}, "must start with https:// or http://"),
        ({"path": "a.bin", "sha256": SHA, "urlSecretKey": "k"}, "no --secrets-dir"),
    ],
)
def test_bad_manifest_entries_are_refused_naming_the_entry(tmp_path: Path, entry: dict[str, str], message: str) -> None:
    with pytest.raises(FetchError, match="models\\[0\\]") as caught:
        load_manifest(manifest(tmp_path, entry), None)
    assert message in str(caught.value)


def test_the_command_line_runs_it(server: Server, tmp_path: Path) -> None:
    path = manifest(tmp_path, {"path": "checkpoints/t.safetensors", "sha256": SHA, "url": f"{server.url}/model.bin"})
    result = subprocess.run(
        [sys.executable, "-m", "comfykube.cli", "fetch-models", "--manifest", str(path), "--dest",
         str(tmp_path / "m")], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "1 of 1 models in place" in result.stdout
    bad = manifest(tmp_path, {"path": "x", "sha256": "1"})
    result = subprocess.run([sys.executable, "-m", "comfykube.cli", "fetch-models", "--manifest", str(bad),
                             "--dest", str(tmp_path / "m")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "sha256 must be 64 hexadecimal digits" in result.stderr
