"""`comfykube generate` as a user runs it: a real process against the stand-ins."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def comfykube(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "comfykube.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.fixture
def cli_env(comfyui_process: Any, s3_server: Any, s3_bucket: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "COMFYUI_"))}
    env.update(
        COMFYUI_URL=comfyui_process.url,
        MINIO_ENDPOINT=s3_server.endpoint,
        MINIO_ACCESS_KEY=s3_server.access_key,
        MINIO_SECRET_KEY=s3_server.secret_key,
        MINIO_BUCKET=s3_bucket,
        COMFYUI_POLL_INTERVAL="0.2",
    )
    return env


def test_generate_json_stores_an_image_whose_presigned_url_returns_the_same_bytes(cli_env: dict[str, str]) -> None:
    result = comfykube(
        "generate", "a red fox in the snow", "--width", "96", "--height", "64", "--steps", "3", "--seed", "42",
        "--json", env=cli_env,
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["phase"] == "Succeeded" and status["seed"] == 42
    image = status["images"][0]
    assert image["width"] == 96 and image["height"] == 64 and image["bytes"] > 0
    body = httpx.get(status["url"]).content
    assert hashlib.sha256(body).hexdigest() == image["sha256"]


def test_generate_from_a_manifest_with_flag_overrides(cli_env: dict[str, str], tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: comfykube.dev/v1alpha1\nkind: ImageJob\nmetadata:\n  name: from-file\n"
        "spec:\n  prompt: a lighthouse\n  width: 64\n  height: 64\n  steps: 2\n",
        encoding="utf-8",
    )
    result = comfykube("generate", "-f", str(manifest), "--height", "128", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["images"][0]["key"].startswith("local/from-file/")
    assert status["images"][0]["height"] == 128


def test_output_dir_keeps_a_local_copy_of_what_was_stored_in_minio(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = comfykube(
        "generate", "a fox", "--width", "64", "--height", "64", "--steps", "1", "--output-dir", str(tmp_path),
        "--json", env=cli_env,
    )
    assert result.returncode == 0, result.stderr
    image = json.loads(result.stdout)["images"][0]
    assert image["url"].startswith("http://")  # stored in MinIO …
    copy = tmp_path / image["key"]  # … and kept locally, byte for byte
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == image["sha256"]


def test_bad_input_exits_2_naming_the_field(cli_env: dict[str, str]) -> None:
    result = comfykube("generate", "fox", "--width", "513", env=cli_env)
    assert result.returncode == 2
    assert "spec.width" in result.stderr and "multiple of 8" in result.stderr
    assert "Traceback" not in result.stderr


def test_euler_a_exits_2_as_bad_input_with_a_message_naming_the_right_sampler(cli_env: dict[str, str]) -> None:
    result = comfykube("generate", "fox", "--sampler", "euler_a", "--json", env=cli_env)
    assert result.returncode == 2, result.stderr  # the README: 2 is bad input, and this is
    status = json.loads(result.stdout)
    assert status["phase"] == "Failed" and status["reason"] == "PreflightFailed"
    assert "euler_ancestral" in status["message"]
    assert "Traceback" not in result.stderr


def test_missing_checkpoint_exits_2_as_bad_input(cli_env: dict[str, str]) -> None:
    result = comfykube("generate", "fox", "--model", "not-installed.safetensors", env=cli_env)
    assert result.returncode == 2, result.stderr
    assert "PreflightFailed" in result.stderr and "not-installed.safetensors" in result.stderr
    assert "Traceback" not in result.stderr


def test_comfyui_down_exits_1_saying_which_endpoint_failed(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, COMFYUI_URL="http://127.0.0.1:9", COMFYUI_HEALTH_RETRIES="1")
    result = comfykube("generate", "fox", env=env)
    assert result.returncode == 1
    assert "ComfyUIUnavailable" in result.stderr and "127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_local_store_is_used_when_no_minio_is_configured(comfyui_process: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "COMFYUI_"))}
    env["COMFYUI_URL"] = comfyui_process.url
    env["COMFYUI_POLL_INTERVAL"] = "0.2"
    result = comfykube(
        "generate", "fox", "--width", "64", "--height", "64", "--steps", "1", "--output-dir", str(tmp_path),
        "--json", env=env,
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    stored = tmp_path / status["images"][0]["key"]
    assert stored.is_file() and stored.stat().st_size == status["images"][0]["bytes"]
    assert status["url"].startswith("file://")


def test_crd_command_prints_the_committed_crd() -> None:
    result = comfykube("crd", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "crds" / "imagejob.yaml").read_text(encoding="utf-8")


def test_json_on_failure_reports_what_was_known(cli_env: dict[str, str], comfyui_process: Any) -> None:
    comfyui_process.configure(fail_next_prompt=1)
    result = comfykube("generate", "fox", "--width", "64", "--height", "64", "--steps", "1", "--seed", "9",
                       "--json", env=cli_env)
    assert result.returncode == 1, result.stderr
    status = json.loads(result.stdout)
    assert (status["phase"], status["reason"]) == ("Failed", "ExecutionFailed")
    # The job was submitted before it failed: say so, as the operator's status does.
    assert status["submissions"] == 1 and status["seed"] == 9
    assert status["promptId"] in comfyui_process.stats()["submissions"]
    assert status["backend"] == comfyui_process.url
    assert status["startTime"] <= status["completionTime"]


def test_the_deadline_covers_the_download(cli_env: dict[str, str], comfyui_process: Any) -> None:
    # A 2 MB picture over a /view that sends 20 kB/s would take 100 s: far longer than --timeout 4.
    comfyui_process.configure(pad_bytes=2 * 1024 * 1024, view_bytes_per_second=20_000)
    started = time.monotonic()
    result = comfykube("generate", "fox", "--width", "64", "--height", "64", "--steps", "1", "--timeout", "4",
                       "--json", env=cli_env)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    status = json.loads(result.stdout)
    assert status["reason"] == "DeadlineExceeded" and "within 4 s" in status["message"]
    # Process start-up and the render under CI load take some seconds; the download alone takes 100.
    assert took < 4 + 40, f"ran {took:.0f} s past a 4 s deadline"
    assert "Traceback" not in result.stderr


BAD_NAMES = {
    "dotdot": '".."',
    "dot": '"."',
    "blanks": '"   "',
    "number": "42",
    "list": "[a, b]",
    "long": "x" * 2000,
    "slash": '"a/b"',
}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_bad_metadata_name_exits_2_before_anything_is_rendered(
    cli_env: dict[str, str], comfyui_process: Any, tmp_path: Path, case: str
) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(f"metadata:\n  name: {BAD_NAMES[case]}\nspec:\n  prompt: fox\n", encoding="utf-8")
    result = comfykube("generate", "-f", str(manifest), env=cli_env)
    assert result.returncode == 2, result.stderr
    assert "metadata.name" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr) < 1000  # 2,000 characters are not echoed back
    assert comfyui_process.stats()["submissions"] == {}


def test_a_manifest_that_is_not_utf8_exits_2(cli_env: dict[str, str], comfyui_process: Any, tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_bytes(b"metadata:\n  name: caf\xe9\nspec:\n  prompt: fox\n")  # Latin-1
    result = comfykube("generate", "-f", str(manifest), env=cli_env)
    assert result.returncode == 2, result.stderr
    assert "not UTF-8" in result.stderr and "Traceback" not in result.stderr
    assert comfyui_process.stats()["submissions"] == {}


def test_download_dirs_of_a_killed_run_are_swept_at_start(cli_env: dict[str, str], tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = temp / f"comfykube-{dead.pid}-abc123"
    stale.mkdir()
    (stale / "comfy-x.part").write_bytes(b"\0" * 1024)
    mine = temp / f"comfykube-{os.getppid()}-keep"  # a live process's (pytest's parent): not ours to touch
    mine.mkdir()
    foreign = temp / "comfykube-cache"  # not our pattern
    foreign.mkdir()
    result = comfykube("generate", "fox", "--width", "64", "--height", "64", "--steps", "1",
                       env=dict(cli_env, TMPDIR=str(temp)))
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert mine.is_dir() and foreign.is_dir()
    assert sorted(p.name for p in temp.iterdir()) == sorted([mine.name, foreign.name])  # its own dir is gone too
def _png(path: Path, width: int, height: int) -> Path:
    from PIL import Image

    Image.new("RGB", (width, height), (90, 160, 20)).save(path)
    return path


def test_generate_img2img_with_a_local_image(cli_env: dict[str, str], comfyui_process: Any, tmp_path: Path) -> None:
    photo = _png(tmp_path / "photo.png", 72, 56)
    env = {**cli_env, "EXTRA_WORKFLOWS_DIR": str(REPO / "tests" / "data" / "workflows")}
    result = comfykube(
        "generate", "a red fox", "--workflow", "io_img2img", "--image", f"init={photo}", "--steps", "2", "--json",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    (image,) = json.loads(result.stdout)["images"]
    assert (image["width"], image["height"], image["kind"]) == (72, 56, "image")
    (upload,) = comfyui_process.stats()["uploads"]
    assert upload.startswith("comfykube/") and upload.endswith("/init.png")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--image", "init=/no/such/photo.png"], "no such file"),
        (["--image", "init"], "expected NAME=PATH or NAME=URL"),
        ([], "needs the image 'init'"),
    ],
)
def test_generate_refuses_bad_images_before_contacting_comfyui(
    cli_env: dict[str, str], comfyui_process: Any, flags: list[str], expected: str
) -> None:
    env = {**cli_env, "EXTRA_WORKFLOWS_DIR": str(REPO / "tests" / "data" / "workflows")}
    result = comfykube("generate", "a red fox", "--workflow", "io_img2img", *flags, env=env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    stats = comfyui_process.stats()
    assert stats["submissions"] == {} and stats["uploads"] == []


def test_generate_refuses_a_text_file_as_an_image(
    cli_env: dict[str, str], comfyui_process: Any, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture\n")
    env = {**cli_env, "EXTRA_WORKFLOWS_DIR": str(REPO / "tests" / "data" / "workflows")}
    result = comfykube("generate", "a red fox", "--workflow", "io_img2img", "--image", f"init={notes}", env=env)
    assert result.returncode == 1 and "InputImageFailed" in result.stderr and "not a PNG" in result.stderr
    stats = comfyui_process.stats()
    assert stats["submissions"] == {} and stats["uploads"] == []
