"""`comfykube generate` as a user runs it: a real process against the stand-ins."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
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
