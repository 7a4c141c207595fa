"""Input images through the operator: kubectl apply of the img2img-from-a-URL and the
chaining (fromJob) examples, against the Kubernetes stand-in, the ComfyUI stand-in
(a process) and nanio; a chain applied in the wrong order (the second job first), which
waits for the first; and an unknown fromJob, refused after FROM_JOB_WAIT_SECONDS with
nothing submitted.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from tests.harness import REPO, OperatorProcess, kubectl_json, operator_env, wait_until
from tests.test_operator_e2e import fetch_sha256, get_job, wait_phase

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _photo() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (180, 90, 20)).save(buf, format="JPEG")
    return buf.getvalue()


class _Pictures(BaseHTTPRequestHandler):
    body = _photo()
    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def picture_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pictures)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fox.jpg"
    server.shutdown()


def _apply(cluster: Any, namespace: str, manifest: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / f"{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    result = cluster.kubectl("apply", "--validate=false", "-n", namespace, "-f", str(path))
    assert result.returncode == 0, result.stderr


def test_img2img_from_a_url_then_upscale_from_that_job(
    cluster: Any, operator: OperatorProcess, namespace: str, comfyui_process: Any, picture_url: str,
    tmp_path: Path,
) -> None:
    first = yaml.safe_load((REPO / "examples" / "imagejob-img2img-url.yaml").read_text(encoding="utf-8"))
    second = yaml.safe_load((REPO / "examples" / "imagejob-upscale-fromjob.yaml").read_text(encoding="utf-8"))
    assert second["spec"]["images"][0]["fromJob"]["name"] == first["metadata"]["name"]
    first["spec"]["images"][0]["url"] = picture_url  # the example's URL, served on loopback
    first["spec"]["steps"] = 3
    # Both at once (as `kubectl apply -f examples/` does, in file order): the chained job
    # waits while the first one runs.
    _apply(cluster, namespace, first, tmp_path)
    _apply(cluster, namespace, second, tmp_path)

    done = wait_phase(cluster, namespace, first["metadata"]["name"], {"Succeeded", "Failed"}, timeout=90)
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    (image,) = status["images"]
    assert (image["width"], image["height"], image["kind"]) == (96, 64, "image")  # the input's size
    uid = done["metadata"]["uid"]

    chained = wait_phase(cluster, namespace, second["metadata"]["name"], {"Succeeded", "Failed"}, timeout=120)
    chained_status = chained["status"]
    assert chained_status["phase"] == "Succeeded", chained_status
    (big,) = chained_status["images"]
    assert (big["width"], big["height"]) == (192, 128)
    assert fetch_sha256(chained_status["url"]) == big["sha256"]
    uploads = comfyui_process.stats()["uploads"]
    assert f"comfykube/{uid}/init.jpg" in uploads
    assert f"comfykube/{chained['metadata']['uid']}/init.png" in uploads  # the stored PNG of the first job
    table = cluster.kubectl("get", "ij", "-n", namespace).stdout
    header = table.split("\n")[0].split()
    assert "IMAGES" in header  # every stored output counts
    row = next(line.split() for line in table.split("\n") if line.startswith(second["metadata"]["name"] + " "))
    assert row[header.index("IMAGES")] == "1"


def test_a_chain_applied_second_job_first_waits_for_the_first_and_renders_each_once(
    cluster: Any, operator: OperatorProcess, namespace: str, comfyui_process: Any, tmp_path: Path
) -> None:
    first = yaml.safe_load((REPO / "examples" / "imagejob-basic.yaml").read_text(encoding="utf-8"))
    first["spec"].update(width=64, height=64, steps=2)
    second = yaml.safe_load((REPO / "examples" / "imagejob-upscale-fromjob.yaml").read_text(encoding="utf-8"))
    second["spec"]["images"][0]["fromJob"]["name"] = first["metadata"]["name"]
    _apply(cluster, namespace, second, tmp_path)
    # The chained job waits (in status, with no ComfyUI work) while the job it names does not exist.
    waiting = wait_until(
        lambda: "to be created" in ((get_job(cluster, namespace, second["metadata"]["name"]).get("status") or {})
                                    .get("message") or ""),
        timeout=20, what="the chained job saying it waits for the first",
    )
    assert waiting
    job = get_job(cluster, namespace, second["metadata"]["name"])
    assert job["status"]["reason"] == "WaitingForJob", job["status"]
    assert f"ImageJob {first['metadata']['name']!r}" in job["status"]["message"]
    assert comfyui_process.stats()["submissions"] == {}
    time.sleep(1.5)
    _apply(cluster, namespace, first, tmp_path)

    done = wait_phase(cluster, namespace, first["metadata"]["name"], {"Succeeded", "Failed"}, timeout=90)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    chained = wait_phase(cluster, namespace, second["metadata"]["name"], {"Succeeded", "Failed"}, timeout=90)
    assert chained["status"]["phase"] == "Succeeded", chained["status"]
    (big,) = chained["status"]["images"]
    assert (big["width"], big["height"]) == (128, 128)
    assert fetch_sha256(chained["status"]["url"]) == big["sha256"]
    # Rendered once each: the wait never submitted the chained job early.
    assert comfyui_process.stats()["submissions"] == {done["metadata"]["uid"]: 1, chained["metadata"]["uid"]: 1}


def test_an_unknown_from_job_fails_clearly_after_the_wait_with_nothing_submitted(
    cluster: Any, comfyui_process: Any, s3_server: Any, s3_bucket: str, namespace: str, tmp_path: Path
) -> None:
    env = operator_env(cluster.env, comfyui_url=comfyui_process.url, s3=s3_server, bucket=s3_bucket,
                       extra={"FROM_JOB_WAIT_SECONDS": "3"})
    operator = OperatorProcess(env, namespace, tmp_path / "operator.log").start()
    try:
        _refused_after_the_wait(cluster, namespace, comfyui_process, tmp_path)
    finally:
        operator.stop()


def _refused_after_the_wait(cluster: Any, namespace: str, comfyui_process: Any, tmp_path: Path) -> None:
    manifest = yaml.safe_load((REPO / "examples" / "imagejob-upscale-fromjob.yaml").read_text(encoding="utf-8"))
    manifest["metadata"]["name"] = "orphan"
    manifest["spec"]["images"][0]["fromJob"]["name"] = "no-such-job"
    applied = time.monotonic()
    _apply(cluster, namespace, manifest, tmp_path)
    status = wait_phase(cluster, namespace, "orphan", {"Succeeded", "Failed"}, timeout=60)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec", status
    assert "no ImageJob 'no-such-job'" in status["message"] and "FROM_JOB_WAIT_SECONDS" in status["message"]
    # Not before the wait (creationTimestamp has whole seconds: allow one less).
    assert time.monotonic() - applied >= 2
    stats = comfyui_process.stats()
    assert stats["submissions"] == {} and stats["uploads"] == []
    events = kubectl_json(cluster, "get", "events", "-n", namespace)["items"]
    wait_until(lambda: any(e["reason"] == "InvalidSpec" for e in
                           kubectl_json(cluster, "get", "events", "-n", namespace)["items"]) or None,
               timeout=10, what=f"an InvalidSpec event: {[e['reason'] for e in events]}")
