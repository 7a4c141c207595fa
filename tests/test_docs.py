"""What the documents show works: commands run, examples load, one story of the phases.

README.md, docs/*.md, the chart's values.yaml and NOTES.txt are read as a newcomer reads them; each
command or example found there is run or loaded here (the CI workflow's commands are compared
with the documents in test_ci_workflows.py).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from comfykube.types import Phase, parse_spec
from comfykube.workflows import load_workflow
from tests.standins.kube_plugin import KubeApi

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHART = ROOT / "charts" / "comfykube"
VALUES = CHART / "values.yaml"
NOTES = CHART / "templates" / "NOTES.txt"
CANONICAL = [Phase.PENDING, Phase.QUEUED, Phase.RUNNING, Phase.UPLOADING, Phase.SUCCEEDED]
PHASE_CHAIN = re.compile(r"\b(?:%s)(?:\s*(?:→|->|──>)\s*(?:%s))+" % (("|".join(Phase),) * 2))
BIN = Path(sys.executable).parent


def blocks(path: Path, lang: str) -> list[str]:
    """Fenced blocks of one language, dedented (some sit inside list items)."""
    found = re.findall(rf"^([ \t]*)```{lang}\n(.*?)^[ \t]*```", path.read_text(), flags=re.S | re.M)
    return [textwrap.dedent("\n".join(line[len(indent):] for line in body.splitlines())) for indent, body in found]


# --------------------------------------------------------------------------- one truth for the phases


def test_every_phase_sequence_shown_is_the_real_one() -> None:
    shown = 0
    for path in [*DOCS, NOTES]:
        for match in PHASE_CHAIN.finditer(path.read_text()):
            chain = re.split(r"\s*(?:→|->|──>)\s*", match.group(0))
            assert chain == CANONICAL, f"{path.name}: {match.group(0)!r}"
            shown += 1
    assert shown >= 4  # README, docs/helm.md, docs/operator.md, docs/quickstart.md, NOTES.txt


def test_the_canonical_order_is_the_order_of_the_phase_enum() -> None:
    assert [p for p in Phase if not p.terminal or p is Phase.SUCCEEDED] == CANONICAL


# --------------------------------------------------------------------------- workflows shown load


def documented_workflows() -> dict[str, str]:
    """Every extraWorkflows example: docs/helm.md's block and the comment in values.yaml."""
    found: dict[str, str] = {}
    for index, text in enumerate(blocks(ROOT / "docs" / "helm.md", "yaml")):
        doc = yaml.safe_load(text)
        for name, body in (doc or {}).get("extraWorkflows", {}).items():
            found[f"helm.md#{index}:{name}"] = body
    comment = VALUES.read_text().split("# extraWorkflows:\n", 1)[1].split("\nextraWorkflows:", 1)[0]
    example = yaml.safe_load("\n".join(line.removeprefix("#")[1:] for line in comment.splitlines()))
    for name, body in example.items():
        found[f"values.yaml:{name}"] = body
    return found


def test_every_workflow_shown_in_the_docs_loads(tmp_path: Path) -> None:
    shown = documented_workflows()
    assert len(shown) >= 2
    for where, body in shown.items():
        path = tmp_path / where.split(":")[-1]
        path.write_text(body)
        workflow = load_workflow(path)  # a bare graph would raise WorkflowError here
        assert workflow.bindings and workflow.graph, where
        rendered = workflow.render(parse_spec({"prompt": "a portrait"}), seed=7, output_prefix="t/p")
        assert rendered.checkpoint and workflow.default("sampler") == "dpmpp_2m", where


# --------------------------------------------------------------------------- values and ImageJobs shown


def placeholders(text: str) -> str:
    """The docs' `…` placeholders, filled with well-formed values."""
    return text.replace("sha256:…", "sha256:" + "0" * 64)


def yaml_examples() -> list[tuple[str, Any]]:
    found = []
    for path in DOCS:
        for index, text in enumerate(blocks(path, "yaml")):
            found.append((f"{path.name}#{index}", yaml.safe_load(placeholders(text))))
    return found


@pytest.fixture(scope="module")
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def test_every_yaml_example_is_a_valid_imagejob_or_valid_chart_values(chart: helm.Chart) -> None:
    values_seen = jobs_seen = 0
    for where, doc in yaml_examples():
        try:
            if doc.get("kind") == "ImageJob":
                parse_spec(doc["spec"])
                jobs_seen += 1
                continue
            if set(doc) == {"spec"}:  # a fragment of an ImageJob: the fields shown must validate
                parse_spec({"prompt": "a fox", **doc["spec"]})
                jobs_seen += 1
                continue
            chart.validate_schema(doc)
            files = chart.render(doc, name="comfykube", namespace="imaging", is_install=True)
            for path, text in files.items():
                if path.endswith("NOTES.txt"):
                    continue
                for manifest in yaml.safe_load_all(text):
                    if manifest and manifest["kind"] != "ServiceMonitor":
                        kubernetes_validate.validate(manifest, "1.30.0", strict=True)
        except (helm.HelmError, kubernetes_validate.ValidationError, ValueError) as exc:
            pytest.fail(f"{where}: {exc}")
        values_seen += 1
    assert jobs_seen >= 1 and values_seen >= 6


def test_quickstart_values_render_with_a_model_and_pass_strict_validation(chart: helm.Chart) -> None:
    values = yaml.safe_load((ROOT / "examples" / "helm" / "quickstart-values.yaml").read_text())
    values["comfyui"]["models"] = [{"path": "checkpoints/quickstart.safetensors", "sha256": "a" * 64,
                                    "url": "https://models.example.org/q.safetensors"}]
    files = chart.render(values, name="comfykube", namespace="imaging", is_install=True)
    kinds = []
    for path, text in files.items():
        if not path.endswith("NOTES.txt"):
            for manifest in yaml.safe_load_all(text):
                if manifest:
                    kubernetes_validate.validate(manifest, "1.30.0", strict=True)
                    kinds.append((manifest["kind"], manifest["metadata"]["name"]))
    # The names the quickstart's commands use.
    assert ("Deployment", "comfykube-operator") in kinds and ("Deployment", "comfykube-minio") in kinds
    assert ("StatefulSet", "comfykube-comfyui") in kinds and ("Service", "comfykube-minio") in kinds
    job = yaml.safe_load((ROOT / "examples" / "imagejob-quickstart.yaml").read_text())
    assert job["metadata"]["name"] == "quickstart"
    assert parse_spec(job["spec"]).model == "quickstart.safetensors"  # what the --set-json path names
    assert "checkpoints/quickstart.safetensors" in (ROOT / "docs" / "quickstart.md").read_text()


# --------------------------------------------------------------------------- the README, in order


def readme_blocks() -> list[str]:
    return blocks(ROOT / "README.md", "bash")


def test_the_first_readme_command_creates_the_venv_every_later_one_uses() -> None:
    first = readme_blocks()[0]
    assert first.splitlines()[0] == "python3 -m venv .venv && .venv/bin/pip install -e ."
    text = (ROOT / "README.md").read_text()
    assert text.index(".venv/bin/") > text.index("python3 -m venv .venv")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_here(line: str, port: int) -> list[str]:
    """A README line as argv: this venv's binaries, a free port instead of 8188 (tests run in parallel)."""
    return [part.replace(".venv/bin/", f"{BIN}/").replace("8188", str(port))
            for part in __import__("shlex").split(line.removesuffix("&").strip())]


def test_the_readme_stand_in_commands_render_a_picture(tmp_path: Path) -> None:
    standin_block = next(b for b in readme_blocks() if "tests.standins.comfyui" in b)
    start, generate = standin_block.splitlines()
    assert generate == readme_blocks()[0].splitlines()[1]  # "the same generate" as the first block
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "COMFYUI_"))}
    server = subprocess.Popen(as_here(start, port), cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("READY ")
        argv = as_here(generate, port)
        assignments = [a for a in argv if re.match(r"^[A-Z_]+=", a)]
        command = argv[len(assignments):]
        run_env = dict(env, COMFYUI_POLL_INTERVAL="0.2", **dict(a.split("=", 1) for a in assignments))
        result = subprocess.run(command, cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("seed ")
    stored = list((tmp_path / "comfykube-output").rglob("*.png"))  # "stored under ./comfykube-output"
    assert len(stored) == 1


def test_readme_kubernetes_commands_work_against_the_api(kube_api: KubeApi) -> None:
    block = next(b for b in readme_blocks() if b.startswith("kubectl apply -f crds/imagejob.yaml"))
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    apply_crd, apply_job, get_wide = lines[0], lines[3], lines[5]
    assert apply_crd.startswith("kubectl apply -f crds/") and apply_job.startswith("kubectl apply -f examples/")
    kube_api.kubectl(*apply_crd.split()[1:], "--validate=false")
    kube_api.kubectl("wait", "--for", "condition=established", "crd/imagejobs.comfykube.dev", "--timeout=20s")
    name = yaml.safe_load((ROOT / apply_job.split()[-1]).read_text())["metadata"]["name"]
    kube_api.kubectl("delete", "ij", name, "--ignore-not-found", "--wait=false")
    kube_api.kubectl(*apply_job.split()[1:], "--validate=false")
    out = kube_api.kubectl(*get_wide.split()[1:]).stdout
    header = out.splitlines()[0].split()
    from comfykube.crd import printer_columns

    assert header == ["NAME", *(c["name"].upper() for c in printer_columns())]
    assert "REASON" in header
    wide = [c["name"].lower() for c in printer_columns() if c.get("priority")]
    comment = block.splitlines()[5].split("#")[1]  # "with seed, model, URL and prompt"
    assert all(name in comment.lower() for name in wide), comment
    assert any(line.startswith(name) for line in out.splitlines()[1:])
    # The CRD the README applies is the one `comfykube crd` prints (its "or:").
    printed = subprocess.run([sys.executable, "-m", "comfykube.cli", "crd"], capture_output=True, text=True,
                             timeout=60).stdout
    assert printed == (ROOT / "crds" / "imagejob.yaml").read_text()


def test_documented_cli_usage_matches_the_parser() -> None:
    from comfykube.cli import build_parser

    usage = (ROOT / "README.md").read_text().split("## `comfykube generate`", 1)[1].split("```", 2)[1]
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    generate_flags = {o for a in sub.choices["generate"]._actions for o in a.option_strings}
    models_flags = {o for a in sub.choices["models"]._actions for o in a.option_strings}
    for line in usage.splitlines():
        flags = set(re.findall(r"\[(-{1,2}[a-z-]+)", line))
        known = models_flags if line.startswith("comfykube models") else generate_flags
        if line.startswith("comfykube --version"):
            known = {o for a in parser._actions for o in a.option_strings}
            flags = {"--version"}
        assert flags <= known, (line, flags - known)


def test_docs_name_only_commands_the_cli_has() -> None:
    from comfykube.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    text = "\n".join(path.read_text() for path in DOCS)
    named = set(re.findall(r"\bcomfykube ([a-z][a-z-]+)\b", text))
    words = {"operator", "bot", "generate", "crd", "models", "completion", "fetch-models"}
    assert named & words <= set(sub.choices)
    assert {"models", "completion", "fetch-models", "generate"} <= named


def test_json_blocks_in_the_docs_parse() -> None:
    for path in DOCS:
        for text in blocks(path, "json"):
            json.loads(text)

