"""The small things a new user reaches for first: --version, -o, the seed, models, help, completion,
and configuration errors that name the variable or flag in one line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from comfykube.cli import build_parser
from comfykube.completion import commands
from tests.test_cli import cli_env, comfykube  # noqa: F401 - cli_env is a fixture

CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "COMFYUI_"))}


def test_version_prints_the_package_version() -> None:
    result = comfykube("--version", env=CLEAN)
    assert result.returncode == 0
    from importlib.metadata import version

    assert result.stdout.strip() == f"comfykube {version('comfykube')}"


def test_output_file_gets_the_stored_image_and_plain_output_names_the_seed(
    cli_env: dict[str, str], tmp_path: Path  # noqa: F811
) -> None:
    target = tmp_path / "out" / "fox.png"
    result = comfykube("generate", "a red fox", "--width", "64", "--height", "64", "--steps", "1",
                       "--seed", "1234", "-o", str(target), env=cli_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "seed 1234"
    assert lines[-1] == f"written to {target}"
    sha = lines[1].split("sha256 ")[1]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_output_file_with_the_local_store(comfyui_process: Any, tmp_path: Path) -> None:
    env = dict(CLEAN, COMFYUI_URL=comfyui_process.url.removeprefix("http://"), COMFYUI_POLL_INTERVAL="0.2")
    result = comfykube("generate", "fox", "--width", "64", "--height", "64", "--steps", "1",
                       "--output-dir", str(tmp_path / "store"), "-o", str(tmp_path / "fox.png"), "--json", env=env)
    assert result.returncode == 0, result.stderr  # host:port without a scheme is accepted
    status = json.loads(result.stdout)
    assert hashlib.sha256((tmp_path / "fox.png").read_bytes()).hexdigest() == status["images"][0]["sha256"]


def test_output_file_refuses_a_batch(cli_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    result = comfykube("generate", "fox", "--batch-size", "2", "-o", str(tmp_path / "x.png"), env=cli_env)
    assert result.returncode == 2
    assert "-o/--output writes one image" in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"COMFYUI_URL": "ftp://gpu:8188"}, [],
         "comfykube: bad configuration: COMFYUI_URL='ftp://gpu:8188': each entry must be host:port or an http(s)"),
        ({}, ["--comfyui-url", "gpu:port"],
         "comfykube: bad configuration: --comfyui-url='gpu:port': the port must be a number"),
        ({"MINIO_ENDPOINT": "http://minio:9000/bucket"}, [],
         "comfykube: bad configuration: MINIO_ENDPOINT='http://minio:9000/bucket': must be host:port or"),
        ({"PRESIGN_EXPIRY_SECONDS": "5"}, [],
         "comfykube: bad configuration: PRESIGN_EXPIRY_SECONDS='5': input should be greater than or equal to 60"),
    ],
)
def test_configuration_errors_are_one_line_naming_the_variable_or_flag(
    env: dict[str, str], args: list[str], expected: str
) -> None:
    result = comfykube("generate", "fox", *args, env=dict(CLEAN, **env))
    assert result.returncode == 2
    assert result.stderr.startswith(expected), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "pydantic" not in result.stderr and "https://errors" not in result.stderr


def test_a_secret_is_never_echoed_in_a_configuration_error() -> None:
    from pydantic import ValidationError

    from comfykube.settings import Settings, describe_settings_error

    with pytest.raises(ValidationError) as caught:
        Settings(minio_secret_key=["not", "a", "string"], comfyui_url="x:y")  # type: ignore[arg-type]
    text = describe_settings_error(caught.value)
    assert "MINIO_SECRET_KEY: " in text and "not" not in text.split("MINIO_SECRET_KEY: ")[1].split(";")[0]


def test_minio_endpoint_takes_both_forms() -> None:
    from comfykube.settings import Settings

    assert Settings(minio_endpoint="minio:9000").minio_endpoint == "minio:9000"
    assert Settings(minio_endpoint="https://minio:9000").minio_endpoint == "https://minio:9000"
    assert Settings(comfyui_url="gpu-0:8188, https://gpu-1").comfyui_urls == ["http://gpu-0:8188", "https://gpu-1"]


def test_models_lists_what_the_comfyui_offers(comfyui_process: Any) -> None:
    env = dict(CLEAN, COMFYUI_URL=comfyui_process.url)
    result = comfykube("models", "--json", env=env)
    assert result.returncode == 0, result.stderr
    catalog = json.loads(result.stdout)
    from tests.standins.comfyui import DEFAULT_CHECKPOINTS, DEFAULT_LORAS, DEFAULT_UPSCALE_MODELS

    assert catalog["checkpoints"] == list(DEFAULT_CHECKPOINTS)
    assert "euler_ancestral" in catalog["samplers"] and "karras" in catalog["schedulers"]
    # The stand-in's "disk" holds LoRAs and upscale models for the t2i_lora/upscale_model workflows.
    assert catalog["loras"] == list(DEFAULT_LORAS) and catalog["upscaleModels"] == list(DEFAULT_UPSCALE_MODELS)
    plain = comfykube("models", env=env)
    assert plain.returncode == 0
    assert f"checkpoints (--model): {len(DEFAULT_CHECKPOINTS)}" in plain.stdout
    assert f"  {DEFAULT_CHECKPOINTS[0]}" in plain.stdout.splitlines()


def test_models_with_comfyui_down_exits_1_naming_it() -> None:
    result = comfykube("models", "--comfyui-url", "http://127.0.0.1:9", env=CLEAN)
    assert result.returncode == 1
    assert "ComfyUIUnavailable" in result.stderr and "127.0.0.1:9" in result.stderr


def test_generate_help_shows_the_defaults_from_the_types() -> None:
    result = comfykube("generate", "--help", env=CLEAN)
    text = " ".join(result.stdout.split("options:")[1].split())
    for flag, default in [("--width", 512), ("--height", 512), ("--steps", 20), ("--cfg", 7.0),
                          ("--sampler", "euler"), ("--scheduler", "normal"), ("--batch-size", 1),
                          ("--workflow", "t2i_basic")]:
        after = text.split(f"{flag} {flag.lstrip('-').replace('-', '_').upper()}", 1)[1]
        assert f"(default {default})" in after.split(" --")[0], flag


def test_bash_completion_completes_subcommands_and_their_flags(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash
    result = comfykube("completion", "bash", env=CLEAN)
    assert result.returncode == 0
    script = tmp_path / "c.bash"
    script.write_text(result.stdout)

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        probe = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
                 "_comfykube_complete; printf '%s\\n' \"${COMPREPLY[@]}\"")
        out = subprocess.run([bash, "-c", probe], capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.split()

    assert set(complete("comfykube", "")) >= {"generate", "models", "crd", "operator", "bot", "completion"}
    assert complete("comfykube", "gen") == ["generate"]
    assert set(complete("comfykube", "generate", "--w")) == {"--width", "--workflow"}
    assert complete("comfykube", "-v", "models", "--j") == ["--json"]
    assert "--version" in complete("comfykube", "--")


def test_zsh_and_fish_scripts_name_every_subcommand_and_flag() -> None:
    table = commands(build_parser())
    zsh = comfykube("completion", "zsh", env=CLEAN).stdout
    fish = comfykube("completion", "fish", env=CLEAN).stdout
    assert zsh.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    for name, (_, flags) in table.items():
        if name:
            assert f"-a {name} " in fish
        for flag, _ in flags:
            assert f"-l {flag[2:]} " in fish and flag in zsh
    for shell, text in (("zsh", zsh), ("fish", fish)):
        binary = shutil.which(shell)
        if binary:  # syntax check where the shell is installed
            subprocess.run([binary, "-n"], input=text, text=True, check=True, timeout=30)


def test_operator_configuration_error_is_one_line_too() -> None:
    result = comfykube("operator", env=dict(CLEAN, COMFYUI_URL="ftp://gpu:8188"), timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "comfykube operator: bad configuration: COMFYUI_URL='ftp://gpu:8188': each entry must be host:port "
        "or an http(s):// URL, e.g. http://127.0.0.1:8188"
    )
