"""The chart's own ComfyUI (comfyui.enabled) and MinIO (minio.enabled), rendered offline.

Rendering, strict lint and strict kubernetes-validate of these scenarios run in test_chart.py
(SCENARIOS "comfyui-minio" and "comfyui-gpu"); here: what they wire together, their security,
and the rendered model fetcher run as a kubelet would run it, against a real HTTP server.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from comfykube.fetch_models import load_manifest
from tests.test_chart import (
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    chart,  # noqa: F401 - fixture
    container,
    deployment,
    env_of,
    of_kind,
    render,
    rules_of,
    verbs_for,
)

FULL = f"{RELEASE}-comfykube"


def statefulset(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = of_kind(docs, "StatefulSet")
    return found


def test_defaults_deploy_neither_comfyui_nor_minio(chart: helm.Chart) -> None:  # noqa: F811
    docs, notes = render(chart, "default")
    components = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in docs}
    assert components == {"operator"}
    assert "this chart" not in notes


def test_operator_and_bot_follow_the_charts_comfyui_service(chart: helm.Chart) -> None:  # noqa: F811
    docs, _ = render(chart, "comfyui-minio")
    (svc,) = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == f"{FULL}-comfyui"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8188, "targetPort": "http", "protocol": "TCP"}]
    sts = statefulset(docs)
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    url = f"http://{FULL}-comfyui.{NAMESPACE}.svc.cluster.local:8188"
    operator_env = env_of(container(deployment(docs, "operator")))
    assert operator_env["COMFYUI_URL"]["value"] == url
    assert operator_env["COMFYUI_DISCOVERY_SERVICE"]["value"] == f"{FULL}-comfyui"
    assert operator_env["COMFYUI_DISCOVERY_NAMESPACE"]["value"] == NAMESPACE
    assert env_of(container(deployment(docs, "bot")))["COMFYUI_URL"]["value"] == url
    # The operator may read exactly those EndpointSlices (discovery), in the release namespace.
    rules = rules_of(docs, "Role", "backend-discovery")
    assert verbs_for(rules, "discovery.k8s.io", "endpointslices") == {"get", "list", "watch"}
    (role,) = [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("backend-discovery")]
    assert role["metadata"]["namespace"] == NAMESPACE


def test_comfyui_pod_readiness_models_and_security(chart: helm.Chart) -> None:  # noqa: F811
    docs, _ = render(chart, "comfyui-minio")
    pod = statefulset(docs)["spec"]["template"]["spec"]
    (comfy,) = pod["containers"]
    assert comfy["image"] == "registry.example.org/comfyui-cpu:v0.3.64"
    assert comfy["args"] == SCENARIOS["comfyui-minio"]["comfyui"]["args"]
    for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
        assert comfy[probe]["httpGet"] == {"path": "/system_stats", "port": "http"}, probe
    assert "nvidia.com/gpu" not in json.dumps(comfy.get("resources", {}))  # CPU mode
    # Non-root (the image must allow it; values say how to opt out), no escalation, no capabilities.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert pod["automountServiceAccountToken"] is False
    sc = comfy["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    # ComfyUI writes into its own install folder: documented, not hidden.
    assert sc["readOnlyRootFilesystem"] is False
    # The fetcher is the comfykube image, locked down like the operator.
    (fetch,) = pod["initContainers"]
    operator = container(deployment(docs, "operator"))
    assert fetch["image"] == operator["image"]
    assert fetch["securityContext"] == {**operator["securityContext"], "runAsUser": 10001, "runAsGroup": 10001}
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
    assert fetch["args"][0] == "fetch-models"
    mounts = {m["name"]: m["mountPath"] for m in fetch["volumeMounts"]}
    assert mounts["models"] == "/models" == {m["name"]: m["mountPath"] for m in comfy["volumeMounts"]}["models"]
    # One models volume per replica.
    (claim,) = statefulset(docs)["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "models" and claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    # ComfyUI is pointed at the volume's folders by the mounted extra_model_paths.yaml.
    (cm,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == f"{FULL}-comfyui"]
    paths = yaml.safe_load(cm["data"]["extra_model_paths.yaml"])["comfykube"]
    assert paths["base_path"] == "/models" and paths["checkpoints"] == "checkpoints"
    assert "/etc/comfyui/extra_model_paths.yaml" in comfy["args"]


def test_rendered_models_manifest_is_what_the_fetcher_reads(chart: helm.Chart, tmp_path: Path) -> None:  # noqa: F811
    docs, _ = render(chart, "comfyui-minio")
    (cm,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == f"{FULL}-comfyui"]
    (tmp_path / "models.json").write_text(cm["data"]["models.json"])
    (item,) = load_manifest(tmp_path / "models.json", None)
    expected = SCENARIOS["comfyui-minio"]["comfyui"]["models"][0]
    assert (item.path, item.sha256, item.url) == (expected["path"], expected["sha256"], expected["url"])


def test_gpu_replicas_node_selection_and_private_models(chart: helm.Chart) -> None:  # noqa: F811
    docs, _ = render(chart, "comfyui-gpu")
    values = SCENARIOS["comfyui-gpu"]["comfyui"]
    sts = statefulset(docs)
    assert sts["spec"]["replicas"] == 2
    pod = sts["spec"]["template"]["spec"]
    (comfy,) = pod["containers"]
    assert comfy["image"] == "registry.example.org/comfyui-cuda@sha256:" + "b" * 64
    assert comfy["resources"]["limits"] == {"memory": "24Gi", "nvidia.com/gpu": 1}
    assert comfy["resources"]["requests"] == {"cpu": "2", "memory": "16Gi"}
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    # Private URLs and headers: a mounted Secret the fetcher reads, never an env var or a value.
    (fetch,) = pod["initContainers"]
    assert fetch["args"][-2:] == ["--secrets-dir", "/etc/comfykube/model-secrets"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-secrets"]["secret"] == {"secretName": "model-tokens"}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "shared-models"}
    assert "volumeClaimTemplates" not in sts["spec"]


def test_minio_is_wired_into_the_operator_and_bot(chart: helm.Chart) -> None:  # noqa: F811
    docs, notes = render(chart, "comfyui-minio")
    minio = deployment(docs, "minio")
    ctr = container(minio)
    endpoint = f"{FULL}-minio.{NAMESPACE}.svc.cluster.local:9000"
    for component in ("operator", "bot"):
        env = env_of(container(deployment(docs, component)))
        assert env["MINIO_ENDPOINT"]["value"] == endpoint, component
        assert env["MINIO_SECURE"]["value"] == "false"
        assert env["MINIO_PUBLIC_ENDPOINT"]["value"] == "http://127.0.0.1:9000"
        assert env["MINIO_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "comfykube-minio", "key": "secretKey"}
    minio_env = env_of(ctr)
    assert minio_env["MINIO_ROOT_USER"]["valueFrom"]["secretKeyRef"] == {"name": "comfykube-minio", "key": "accessKey"}
    assert minio_env["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "secretKey"
    (svc,) = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == f"{FULL}-minio"]
    assert svc["spec"]["selector"] == minio["spec"]["selector"]["matchLabels"]
    assert minio["spec"]["strategy"] == {"type": "Recreate"}
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/minio/health/ready", "port": "s3"}
    # MinIO runs non-root with a read-only root filesystem (it writes /data and /tmp only).
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert minio["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    (pvc,) = of_kind(docs, "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert f"port-forward service/{FULL}-minio" not in notes  # publicEndpoint is set


def test_minio_secret_is_generated_random_and_kept(chart: helm.Chart) -> None:  # noqa: F811
    def secret() -> dict[str, Any]:
        files = chart.render({"minio": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE, is_install=True)
        docs = [d for text in files.values() if not text.startswith("comfykube ") for d in yaml.safe_load_all(text)
                if d]
        (found,) = of_kind(docs, "Secret")
        return found

    first, second = secret(), secret()
    assert first["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    keys = {k: base64.b64decode(v).decode() for k, v in first["data"].items()}
    assert set(keys) == {"accessKey", "secretKey"} and len(keys["secretKey"]) == 40
    assert first["data"] != second["data"]  # random per install; upgrades reuse the stored one (lookup)
    template = (Path(__file__).resolve().parents[1] / "charts/comfykube/templates/minio.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $m.existingSecret' in template
    assert "get $data $m.secretKeyKey" in template


def test_a_user_secret_is_used_not_rendered_when_named(chart: helm.Chart) -> None:  # noqa: F811
    docs, notes = render(chart, "comfyui-gpu")
    (generated,) = of_kind(docs, "Secret")  # offline render: lookup finds nothing, so it would be created
    assert generated["metadata"]["name"] == "my-minio-root"
    ref = env_of(container(deployment(docs, "operator")))["MINIO_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "my-minio-root"
    assert f"port-forward service/{FULL}-minio" in notes


@pytest.mark.parametrize(
    ("override", "pointer"),
    [
        ({"comfyui": {"models": [{"path": "../x", "sha256": "a" * 64, "url": "https://x"}]}}, "/comfyui/models/0"),
        ({"comfyui": {"models": [{"path": "x", "sha256": "abc", "url": "https://x"}]}}, "/comfyui/models/0"),
        ({"comfyui": {"models": [{"path": "x", "sha256": "a" * 64}]}}, "/comfyui/models/0"),
        ({"comfyui": {"models": [{"path": "x", "sha256": "a" * 64, "url": "ftp://x"}]}}, "/comfyui/models/0"),
        ({"comfyui": {"gpu": {"count": -1}}}, "/comfyui/gpu/count"),
        ({"comfyui": {"replicas": "2"}}, "/comfyui/replicas"),
        ({"comfyui": {"image": {"digest": "latest"}}}, "/comfyui/image/digest"),
        ({"minio": {"server": {"persistence": {"size": "lots"}}}}, "/minio/server/persistence/size"),
        ({"minio": {"enable": True}}, "/minio"),
    ],
)
def test_schema_refuses_bad_comfyui_and_minio_values(
    chart: helm.Chart, override: dict[str, Any], pointer: str  # noqa: F811
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(override)
    assert pointer in str(caught.value)


def test_comfyui_without_an_image_is_refused_saying_why(chart: helm.Chart) -> None:  # noqa: F811
    with pytest.raises(helm.HelmError) as caught:
        chart.render({"comfyui": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert "comfyui.image.repository is required" in str(caught.value)
    assert "there is no official ComfyUI image" in str(caught.value)


# ------------------------------------------------------------- the rendered fetcher, run for real

BODY = b"not really a checkpoint, but bytes all the same" * 2000
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


def test_the_rendered_init_container_fetches_the_models(chart: helm.Chart, tmp_path: Path) -> None:  # noqa: F811
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tiny.safetensors"
        values = {"comfyui": {"enabled": True, "image": {"repository": "r.example.org/comfyui", "tag": "1"},
                              "models": [{"path": "checkpoints/tiny.safetensors", "sha256": SHA, "url": url}]}}
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        docs = [d for p, t in files.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
        (cm,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == f"{FULL}-comfyui"]
        (fetch,) = statefulset(docs)["spec"]["template"]["spec"]["initContainers"]
        # Mount the ConfigMap and the models volume as the kubelet would, at temporary places.
        mounts = {m["mountPath"]: tmp_path / m["name"] for m in fetch["volumeMounts"]}
        for path in mounts.values():
            path.mkdir()
        for key, text in cm["data"].items():
            (tmp_path / "config" / key).write_text(text)
        args = [next((str(mounts[m]) + a[len(m):] for m in mounts if a.startswith(m)), a) for a in fetch["args"]]
        # The image's ENTRYPOINT is `comfykube` (test_dockerfile checks it): the console script.
        result = subprocess.run([sys.executable, "-m", "comfykube.cli", *args], capture_output=True, text=True,
                                timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models" / "checkpoints" / "tiny.safetensors").read_bytes() == BODY


@pytest.mark.parametrize("scenario", ["default", "comfyui-minio", "comfyui-gpu"])
def test_notes_commands_name_objects_and_containers_the_chart_renders(
    chart: helm.Chart, scenario: str  # noqa: F811
) -> None:
    import re

    docs, notes = render(chart, scenario)
    rendered = {(d["kind"].lower(), d["metadata"]["name"]) for d in docs}
    named = re.findall(r"\b(deployment|statefulset|service|secret)[/ ]([a-z0-9][-a-z0-9.]*)", notes)
    assert named
    for kind, name in named:
        if kind == "secret" and not SCENARIOS[scenario].get("minio", {}).get("enabled"):
            continue  # a Secret the user creates (NOTES says "must exist")
        assert (kind, name) in rendered, (kind, name)
    for workload, container_name in re.findall(r"logs statefulset/([-a-z0-9]+) -c ([-a-z]+)", notes):
        pod = statefulset(docs)["spec"]["template"]["spec"]
        names = [c["name"] for c in pod["containers"] + pod.get("initContainers", [])]
        assert container_name in names, (workload, container_name)
    if SCENARIOS[scenario].get("comfyui", {}).get("enabled"):
        assert "-c fetch-models" in notes and "rollout status statefulset/" in notes
