"""The operator as users run it: real processes end to end.

Kubernetes API stand-in (or a real cluster, see tests/standins/kube_plugin.py),
`comfykube operator` as a subprocess, the ComfyUI stand-in as a subprocess,
nanio for S3, and kubectl for the user's side.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness import REPO, OperatorProcess, kubectl_json, operator_env, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def job_manifest(name: str, **spec: Any) -> dict[str, Any]:
    body = {"prompt": "a red fox in the snow", "width": 64, "height": 64, "steps": 3}
    body.update(spec)
    return {"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob", "metadata": {"name": name}, "spec": body}


def create(cluster: Any, namespace: str, manifest: dict[str, Any]) -> None:
    manifest = dict(manifest, metadata=dict(manifest["metadata"], namespace=namespace))
    cluster.apply(manifest)


def get_job(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return kubectl_json(cluster, "get", "imagejob", name, "-n", namespace)


def phase_of(cluster: Any, namespace: str, name: str) -> str | None:
    return (get_job(cluster, namespace, name).get("status") or {}).get("phase")


def wait_phase(cluster: Any, namespace: str, name: str, phases: set[str], timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job = get_job(cluster, namespace, name)
        return job if (job.get("status") or {}).get("phase") in phases else None

    return wait_until(check, timeout=timeout, interval=0.2, what=f"{name} in {phases}")


def fetch_sha256(url: str) -> str:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text[:200]
    return hashlib.sha256(response.content).hexdigest()


def test_kubectl_apply_example_reaches_succeeded_with_a_working_url(
    cluster: Any, operator: OperatorProcess, namespace: str, comfyui_process: Any
) -> None:
    result = cluster.kubectl("apply", "--validate=false", "-n", namespace, "-f",
                             str(REPO / "examples" / "imagejob-basic.yaml"))
    assert result.returncode == 0, result.stderr
    name = yaml.safe_load((REPO / "examples" / "imagejob-basic.yaml").read_text(encoding="utf-8"))["metadata"]["name"]
    job = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=90)
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    image = status["images"][0]
    assert fetch_sha256(status["url"]) == image["sha256"]
    assert status["promptId"] == job["metadata"]["uid"]
    assert status["imageCount"] == 1 and status["startTime"] and status["completionTime"]
    assert status["observedGeneration"] == job["metadata"]["generation"]
    [cond] = [c for c in status["conditions"] if c["type"] == "Succeeded"]
    assert cond["status"] == "True"

    table = cluster.kubectl("get", "ij", "-n", namespace).stdout
    assert table.split("\n")[0].split() == ["NAME", "PHASE", "PROGRESS", "IMAGES", "REASON", "AGE"]
    assert "Succeeded" in table
    wide = cluster.kubectl("get", "ij", "-n", namespace, "-o", "wide").stdout
    assert "SEED" in wide and "URL" in wide and "PROMPT" in wide and str(status["seed"]) in wide

    def reasons() -> set[str]:
        events = kubectl_json(cluster, "get", "events", "-n", namespace)["items"]
        return {e["reason"] for e in events if e["involvedObject"]["name"] == name}

    wait_until(lambda: {"Queued", "Running", "Uploading", "Succeeded"} <= reasons(), timeout=10,
               what=f"events: {reasons()} {cluster.kubectl('get', 'events', '-A').stdout}")
    assert comfyui_process.stats()["submissions"][job["metadata"]["uid"]] == 1
    assert status["model"] == "sd15-base.safetensors"  # the checkpoint actually used
    # A presigned URL is a bearer credential: the log names the object key, never the URL.
    logged = operator.log_path.read_text(encoding="utf-8")
    assert image["key"] in logged
    assert status["url"].split("?")[1] not in logged and "X-Amz-Signature" not in logged


def test_invalid_spec_that_slipped_past_the_schema_fails_with_invalid_spec(
    cluster: Any, operator: OperatorProcess, namespace: str
) -> None:
    create(cluster, namespace, job_manifest("bad-width", width=513))
    status = wait_phase(cluster, namespace, "bad-width", {"Failed", "Succeeded"})["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec"
    assert "spec.width" in status["message"]
    # The operator survived it and still works.
    create(cluster, namespace, job_manifest("good-after-bad"))
    assert wait_phase(cluster, namespace, "good-after-bad", {"Succeeded", "Failed"})["status"]["phase"] == "Succeeded"


def test_euler_a_fails_with_a_message_naming_the_allowed_samplers(
    cluster: Any, operator: OperatorProcess, namespace: str
) -> None:
    create(cluster, namespace, job_manifest("euler-a", sampler="euler_a"))
    status = wait_phase(cluster, namespace, "euler-a", {"Failed", "Succeeded"})["status"]
    assert status["phase"] == "Failed" and status["reason"] == "PreflightFailed"
    assert "euler_ancestral" in status["message"]
    def warned() -> bool:
        events = kubectl_json(cluster, "get", "events", "-n", namespace)["items"]
        return any(e["reason"] == "PreflightFailed" and e["type"] == "Warning" for e in events)

    wait_until(warned, timeout=10, what="a PreflightFailed warning event")


@pytest.mark.parametrize("kill_when", ["before-submit", "running", "uploading"])
def test_operator_killed_mid_job_resumes_without_resubmitting(
    cluster: Any, comfyui_process: Any, s3_server: Any, s3_bucket: str, namespace: str, tmp_path: Path,
    kill_when: str,
) -> None:
    comfyui_process.configure(exec_seconds=2.0, pad_bytes=40_000_000 if kill_when == "uploading" else 0)
    env = operator_env(cluster.env, comfyui_url=comfyui_process.url, s3=s3_server, bucket=s3_bucket)
    op = OperatorProcess(env, namespace, tmp_path / "operator.log")
    name = f"kill-{kill_when}"
    if kill_when == "before-submit":
        # ComfyUI is unhealthy, so the job is held before its submission (retrying the health check).
        comfyui_process.configure(unhealthy_for_seconds=600)
        op.start()
        create(cluster, namespace, job_manifest(name, steps=4))
        wait_until(
            lambda: "ComfyUIUnavailable" in str(get_job(cluster, namespace, name).get("status")),
            timeout=60, what="the job waiting for ComfyUI, before any submission",
        )
        op.kill()
        assert comfyui_process.stats()["submissions"] == {}
        comfyui_process.configure(unhealthy_for_seconds=0)
    else:
        op.start()
        create(cluster, namespace, job_manifest(name, steps=4))
        target = {"running": {"Running"}, "uploading": {"Uploading"}}[kill_when]
        wait_phase(cluster, namespace, name, target | {"Succeeded"}, timeout=60)
        op.kill()
    op.start()
    try:
        job = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=90)
    finally:
        op.stop()
    assert job["status"]["phase"] == "Succeeded", (job["status"], op.logs()[-3000:])
    uid = job["metadata"]["uid"]
    assert comfyui_process.stats()["submissions"].get(uid) == 1
    assert fetch_sha256(job["status"]["url"]) == job["status"]["images"][0]["sha256"]


def test_deleting_a_running_job_cancels_it_in_comfyui(
    cluster: Any, operator: OperatorProcess, namespace: str, comfyui_process: Any
) -> None:
    comfyui_process.configure(exec_seconds=20.0)
    create(cluster, namespace, job_manifest("to-delete", steps=10))
    job = wait_phase(cluster, namespace, "to-delete", {"Running"}, timeout=60)
    uid = job["metadata"]["uid"]
    cluster.kubectl("delete", "imagejob", "to-delete", "-n", namespace, "--wait=false")

    def gone() -> bool:
        result = cluster.kubectl("get", "imagejob", "to-delete", "-n", namespace, check=False)
        return result.returncode != 0 and "NotFound" in result.stderr

    wait_until(gone, timeout=30, what="finalizer released")
    stats = comfyui_process.stats()
    assert uid in stats["interrupts"], stats
    assert uid not in stats["running"]


def test_deadline_expiry_cancels_and_fails_with_deadline_exceeded(
    cluster: Any, operator: OperatorProcess, namespace: str, comfyui_process: Any
) -> None:
    comfyui_process.configure(exec_seconds=30.0)
    create(cluster, namespace, job_manifest("too-slow", timeoutSeconds=3, steps=10))
    job = wait_phase(cluster, namespace, "too-slow", {"Failed", "Succeeded"}, timeout=60)
    assert job["status"]["phase"] == "Failed" and job["status"]["reason"] == "DeadlineExceeded"
    assert job["metadata"]["uid"] in comfyui_process.stats()["interrupts"]


def test_comfyui_down_for_a_while_then_back_still_succeeds(
    cluster: Any, operator: OperatorProcess, namespace: str, comfyui_process: Any
) -> None:
    comfyui_process.configure(unhealthy_for_seconds=4.0)
    create(cluster, namespace, job_manifest("comfy-outage"))
    job = wait_phase(cluster, namespace, "comfy-outage", {"Succeeded", "Failed"}, timeout=90)
    assert job["status"]["phase"] == "Succeeded", job["status"]


def test_minio_down_then_back_still_succeeds(
    cluster: Any, comfyui_process: Any, s3_server_private: Any, namespace: str, tmp_path: Path
) -> None:
    env = operator_env(cluster.env, comfyui_url=comfyui_process.url, s3=s3_server_private, bucket="outage")
    s3_server_private.stop()
    op = OperatorProcess(env, namespace, tmp_path / "operator.log").start()
    try:
        create(cluster, namespace, job_manifest("s3-outage"))
        wait_until(
            lambda: "StorageUnavailable" in str(get_job(cluster, namespace, "s3-outage").get("status")),
            timeout=30, what="a StorageUnavailable retry on record",
        )
        s3_server_private.start()
        job = wait_phase(cluster, namespace, "s3-outage", {"Succeeded", "Failed"}, timeout=90)
    finally:
        op.stop()
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert fetch_sha256(job["status"]["url"]) == job["status"]["images"][0]["sha256"]


def test_lost_prompt_is_submitted_again_once_with_the_reason_recorded(
    cluster: Any, operator: OperatorProcess, namespace: str, comfyui_process: Any
) -> None:
    comfyui_process.configure(lose_next_prompt=True)
    create(cluster, namespace, job_manifest("lost"))
    job = wait_phase(cluster, namespace, "lost", {"Succeeded", "Failed"}, timeout=90)
    assert job["status"]["phase"] == "Succeeded" and job["status"]["submissions"] == 2
    assert comfyui_process.stats()["submissions"][job["metadata"]["uid"]] == 2
    def told() -> bool:
        events = kubectl_json(cluster, "get", "events", "-n", namespace)["items"]
        return any(e["reason"] == "PromptResubmitted" and "not found on" in e.get("message", "") for e in events)

    wait_until(told, timeout=10, what="a PromptResubmitted event")


def test_finished_job_is_deleted_after_its_ttl(cluster: Any, operator: OperatorProcess, namespace: str) -> None:
    create(cluster, namespace, job_manifest("short-lived", ttlSecondsAfterFinished=1))
    wait_phase(cluster, namespace, "short-lived", {"Succeeded"}, timeout=60)

    def gone() -> bool:
        return cluster.kubectl("get", "imagejob", "short-lived", "-n", namespace, check=False).returncode != 0

    wait_until(gone, timeout=30, what="TTL deletion")


def test_deleting_a_job_while_comfyui_is_gone_releases_the_finalizer_with_a_warning(
    cluster: Any, operator: OperatorProcess, namespace: str, comfyui_process: Any
) -> None:
    comfyui_process.configure(exec_seconds=30.0)
    create(cluster, namespace, job_manifest("orphan-risk", steps=10))
    wait_phase(cluster, namespace, "orphan-risk", {"Running"}, timeout=60)
    comfyui_process.stop_listening(600)  # ComfyUI is gone: the cancel cannot reach it
    cluster.kubectl("delete", "imagejob", "orphan-risk", "-n", namespace, "--wait=false")

    def gone() -> bool:
        result = cluster.kubectl("get", "imagejob", "orphan-risk", "-n", namespace, check=False)
        return result.returncode != 0 and "NotFound" in result.stderr

    wait_until(gone, timeout=60, what="the finalizer released despite ComfyUI being down")

    def warned() -> bool:
        events = kubectl_json(cluster, "get", "events", "-n", namespace)["items"]
        return any(e["reason"] == "CancelFailed" and e["type"] == "Warning" for e in events)

    wait_until(warned, timeout=10, what="a CancelFailed warning event")


def test_download_dirs_a_killed_operator_left_are_swept_at_start(
    cluster: Any, comfyui_process: Any, s3_server: Any, s3_bucket: str, namespace: str, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = temp / f"comfykube-{gone.pid}-half"  # what a SIGKILL mid-download leaves
    stale.mkdir()
    (stale / "comfy-1.part").write_bytes(b"\0" * 1024)
    kept = temp / "comfykube-something-else"
    kept.mkdir()
    env = operator_env(cluster.env, comfyui_url=comfyui_process.url, s3=s3_server, bucket=s3_bucket,
                       extra={"TMPDIR": str(temp)})
    proc = OperatorProcess(env, namespace, tmp_path / "operator.log").start()
    try:
        assert not stale.exists() and kept.is_dir()
    finally:
        proc.stop()


def test_a_finished_job_leaves_the_watch_and_is_deleted_at_once(
    cluster: Any, operator: OperatorProcess, namespace: str
) -> None:
    """Released when finished: labelled, without the finalizer, so deleting it waits for nobody;
    a job whose deletion deletes its images keeps the finalizer (and kopf's watch)."""
    create(cluster, namespace, job_manifest("released"))
    create(cluster, namespace, job_manifest("kept", output={"deleteWithJob": True}))
    wait_phase(cluster, namespace, "released", {"Succeeded"}, timeout=60)
    wait_phase(cluster, namespace, "kept", {"Succeeded"}, timeout=60)

    def released() -> bool:
        meta = get_job(cluster, namespace, "released")["metadata"]
        return (meta.get("labels") or {}).get("comfykube.dev/finished") == "true" and not meta.get("finalizers")

    wait_until(released, timeout=10, what="the finished job released")
    kept = get_job(cluster, namespace, "kept")["metadata"]
    assert "comfykube.dev/finalizer" in kept["finalizers"]
    assert "comfykube.dev/finished" not in (kept.get("labels") or {})
    cluster.kubectl("delete", "imagejob", "released", "-n", namespace, "--timeout=10s", timeout=20)
    assert cluster.kubectl("get", "imagejob", "released", "-n", namespace, check=False).returncode != 0
