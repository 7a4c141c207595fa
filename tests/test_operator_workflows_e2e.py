"""Workflows with parameters through the operator: kubectl apply of the examples, and refusals.

Real processes as in test_operator_e2e: the Kubernetes API stand-in, `comfykube operator`,
the ComfyUI stand-in, nanio. A refused job ends Failed/InvalidSpec naming the problem, and
the ComfyUI stand-in shows it never received the prompt.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.harness import REPO, OperatorProcess
from tests.test_operator_e2e import create, job_manifest, wait_phase

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def apply_example(cluster: Any, namespace: str, name: str) -> str:
    path = REPO / "examples" / name
    result = cluster.kubectl("apply", "--validate=false", "-n", namespace, "-f", str(path))
    assert result.returncode == 0, result.stderr
    job_name: str = yaml.safe_load(path.read_text(encoding="utf-8"))["metadata"]["name"]
    return job_name


def test_parameter_examples_succeed_and_bad_inputs_or_raw_graphs_fail_before_comfyui(
    cluster: Any, operator: OperatorProcess, namespace: str, comfyui_process: Any
) -> None:
    lora = apply_example(cluster, namespace, "imagejob-lora.yaml")
    hires = apply_example(cluster, namespace, "imagejob-hires.yaml")
    raw = apply_example(cluster, namespace, "imagejob-graph.yaml")
    create(cluster, namespace, job_manifest("bad-input", workflow="t2i_lora",
                                            inputs={"lora": "detail-tweaker.safetensors", "strenght": 1}))
    create(cluster, namespace, job_manifest("no-lora", workflow="t2i_lora", inputs={"lora": "missing.safetensors"}))

    done = {"Succeeded", "Failed"}
    status = wait_phase(cluster, namespace, lora, done, timeout=90)["status"]
    assert status["phase"] == "Succeeded", status
    hires_status = wait_phase(cluster, namespace, hires, done, timeout=90)["status"]
    assert hires_status["phase"] == "Succeeded", hires_status
    assert (hires_status["images"][0]["width"], hires_status["images"][0]["height"]) == (768, 768)

    raw_status = wait_phase(cluster, namespace, raw, done)["status"]
    assert raw_status["phase"] == "Failed" and raw_status["reason"] == "InvalidSpec"
    assert "spec.graph" in raw_status["message"] and "ALLOW_RAW_GRAPHS=true" in raw_status["message"]
    bad = wait_phase(cluster, namespace, "bad-input", done)["status"]
    assert bad["reason"] == "InvalidSpec"
    assert "spec.inputs.strenght: workflow 't2i_lora' has no parameter 'strenght'" in bad["message"]
    missing = wait_phase(cluster, namespace, "no-lora", done)["status"]
    assert missing["reason"] == "PreflightFailed" and "'missing.safetensors' is not offered" in missing["message"]

    submitted = comfyui_process.stats()["submissions"]
    uids = {n: cluster.kubectl("get", "ij", n, "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
            for n in (lora, hires, raw, "bad-input", "no-lora")}
    assert submitted.get(uids[lora]) == 1 and submitted.get(uids[hires]) == 1
    assert not {uids[raw], uids["bad-input"], uids["no-lora"]} & set(submitted)
