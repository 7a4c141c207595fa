"""One operator per shard: two operators with different label selectors share a namespace.

Each job is run exactly once, by its shard's operator; a job in no shard is never
touched (no status, no finalizer, no kopf annotation). Real processes: the Kubernetes
API stand-in and both operators; each operator has its own ComfyUI stand-in, so the
backend in a job's status says which operator ran it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from comfykube.controller.shard import Selector
from tests.harness import REPO, OperatorProcess, kubectl_json, operator_env, wait_until
from tests.standins.comfyui import run_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_two_sharded_operators_each_run_their_own_jobs_once(
    kube_api: Any, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    kube_api.install_crd(yaml.safe_load((REPO / "crds" / "imagejob.yaml").read_text(encoding="utf-8")))
    namespace = f"shards-{uuid.uuid4().hex[:8]}"
    kube_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    shards = {"a": 6, "b": 6, "c": 2}  # no operator runs shard c
    docs = [
        {"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob",
         "metadata": {"name": f"{shard}{i}", "namespace": namespace, "labels": {"comfykube.dev/shard": shard}},
         "spec": {"prompt": f"shard {shard}", "width": 64, "height": 64, "steps": 2}}
        for shard, count in shards.items() for i in range(count)
    ]
    docs.append({"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob",
                 "metadata": {"name": "unlabelled", "namespace": namespace},
                 "spec": {"prompt": "nobody's", "width": 64, "height": 64, "steps": 2}})
    with run_in_thread(exec_seconds=0.1) as comfy_a, run_in_thread(exec_seconds=0.1) as comfy_b:
        operators = [
            OperatorProcess(
                operator_env(kube_api.env, comfyui_url=comfy.url, s3=s3_server, bucket=s3_bucket,
                             extra={"OPERATOR_SELECTOR": selector, "MAINTENANCE_INTERVAL_SECONDS": "0.5"}),
                namespace, tmp_path / f"operator-{name}.log",
            ).start()
            for name, comfy, selector in (
                ("a", comfy_a, "comfykube.dev/shard=a"),
                # The set-based form, also filtered server-side.
                ("b", comfy_b, "comfykube.dev/shard in (b)"),
            )
        ]
        try:
            kube_api.apply(yaml.safe_dump_all(docs))

            def items() -> dict[str, dict[str, Any]]:
                listed = kubectl_json(kube_api, "get", "imagejobs", "-n", namespace)["items"]
                return {j["metadata"]["name"]: j for j in listed}

            def shards_done() -> dict[str, dict[str, Any]] | None:
                now = items()
                done = [n for n, j in now.items() if (j.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
                return now if len(done) == shards["a"] + shards["b"] else None

            final = wait_until(shards_done, timeout=120, interval=0.5, what="the jobs of shards a and b")
            for name, job in final.items():
                status = job.get("status") or {}
                if name[0] in "ab" and name != "unlabelled":
                    assert status["phase"] == "Succeeded", (name, status)
                    expected = comfy_a if name[0] == "a" else comfy_b
                    assert status["backend"] == expected.url, (name, status)
                else:
                    # Nobody's shard: not a byte written by any operator.
                    assert not status, (name, status)
                    assert not job["metadata"].get("finalizers"), job["metadata"]
                    assert not any(k.startswith("comfykube.dev/") for k in job["metadata"].get("annotations") or {})
            for comfy, shard in ((comfy_a, "a"), (comfy_b, "b")):
                submissions = comfy.stats()["submissions"]
                uids = {final[f"{shard}{i}"]["metadata"]["uid"] for i in range(shards[shard])}
                assert set(submissions) == uids, (shard, submissions)  # only its own shard's prompts
                assert all(n == 1 for n in submissions.values()), submissions  # each once
            for op in operators:
                assert "labelled comfykube.dev/shard" in op.logs()
        finally:
            for op in operators:
                op.stop()


def test_selector_syntax_and_matching() -> None:
    shard_a = Selector.parse("comfykube.dev/shard=a")
    assert shard_a.matches({"comfykube.dev/shard": "a", "x": "y"})
    assert not shard_a.matches({"comfykube.dev/shard": "b"}) and not shard_a.matches({})
    several = Selector.parse("tier in (gpu, cpu),team!=ops,!legacy,owner")
    assert several.matches({"tier": "gpu", "team": "art", "owner": "x"})
    assert not several.matches({"tier": "gpu", "team": "ops", "owner": "x"})
    assert not several.matches({"tier": "gpu", "owner": "x", "legacy": "1"})
    assert not several.matches({"tier": "tpu", "owner": "x"})
    assert Selector.parse("").matches({}) and not Selector.parse(None)
    for bad in ("a=b=c", "in (x)", "k in ()", "=v", "k = (v)"):
        with pytest.raises(ValueError):
            Selector.parse(bad)


def test_a_bad_selector_stops_the_operator_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    from comfykube.cli import main

    assert main(["operator", "-n", "x", "--selector", "a=b=c", "--health-port", "0"]) == 2
    assert "bad --selector" in capsys.readouterr().err
