"""The operator Deployment rendered by the chart really runs the operator (issue 5).

The chart is rendered offline (helm-python-sdk) with values that point at the
test stand-ins. The operator container is then started the way a kubelet would
start it, with nothing hand-written in between:

* argv: the image ENTRYPOINT (read from the Dockerfile) + the rendered ``args``;
  ``comfykube`` is the console script of ``comfykube.cli:main``, so it runs as
  ``sys.executable -m comfykube.cli``.
* environment: the image ``ENV`` (Dockerfile paths mapped to this checkout), then
  the rendered ``env`` in order: plain values with ``$(VAR)`` expansion,
  ``secretKeyRef`` resolved from a Secret defined here (the nanio credentials),
  ``fieldRef`` resolved for the pod; plus ``KUBECONFIG`` of the Kubernetes API
  stand-in, which replaces the service account of a real pod.
* ports: the chart is rendered with free ports as ``operator.healthPort`` and
  ``operator.metricsPort``, so the rendered args are used verbatim.

It then checks the rendered probes answer 200, runs an ImageJob to Succeeded,
compares the stored picture's sha256, and stops the process with SIGTERM
within the rendered ``terminationGracePeriodSeconds``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import pytest
import yaml

from tests.harness import REPO, free_port, kubectl_json, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CHART_DIR = REPO / "charts" / "comfykube"
CHART_CRD = CHART_DIR / "crds" / "imagejob.yaml"
DOCKERFILE = REPO / "Dockerfile"
RELEASE = "ck"
#: The release (pod) namespace differs from the watched one, as with `watch.namespaces` in real installs.
RELEASE_NAMESPACE = "comfykube-system"
SECRET_NAME = "ck-minio-credentials"
#: Console scripts of the image and the module each one runs (pyproject.toml [project.scripts]).
CONSOLE_SCRIPTS = {"comfykube": "comfykube.cli"}
#: Directories of the image (Dockerfile) and where the same content is in this checkout.
IMAGE_PATHS = {
    "/opt/comfykube/share/workflows": str(REPO / "workflows"),
    "/opt/comfykube/bin": str(Path(sys.executable).parent),
}


# --------------------------------------------------------------------------- emulating image and kubelet


def dockerfile_runtime() -> tuple[list[str], dict[str, str]]:
    """The runtime stage's ENTRYPOINT and ENV, with image paths mapped to this checkout."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    runtime = text.split(" AS runtime", 1)[1]
    entrypoint: list[str] = []
    env: dict[str, str] = {}
    for line in runtime.splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword == "ENTRYPOINT":
            entrypoint = list(json.loads(rest))
        elif keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                for image_path, local_path in IMAGE_PATHS.items():
                    value = value.replace(image_path, local_path)
                env[name] = value.replace("$PATH", os.environ.get("PATH", "/usr/bin:/bin"))
    assert entrypoint, "no ENTRYPOINT in the Dockerfile's runtime stage"
    return entrypoint, env


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`, the rest stays."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return re.sub(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)", repl, text)


@dataclasses.dataclass
class Pod:
    """What the kubelet knows about the pod when it starts the container."""

    namespace: str
    name: str
    service_account: str
    secrets: dict[str, dict[str, Any]]

    def field(self, path: str) -> str:
        """A `fieldRef.fieldPath` value."""
        fields = {
            "metadata.namespace": self.namespace,
            "metadata.name": self.name,
            "spec.serviceAccountName": self.service_account,
            "spec.nodeName": "standin-node",
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        assert path in fields, f"fieldRef {path!r} is not emulated by this test"
        return fields[path]

    def secret_value(self, ref: Mapping[str, Any]) -> str | None:
        """A `secretKeyRef` value as the kubelet injects it (None: optional and missing)."""
        secret = self.secrets.get(ref["name"])
        if secret is None or secret["metadata"]["namespace"] != self.namespace:
            assert ref.get("optional"), f"Secret {ref['name']!r} not found in namespace {self.namespace!r}"
            return None
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        if ref["key"] not in data:
            assert ref.get("optional"), f"Secret {ref['name']!r} has no key {ref['key']!r}"
            return None
        return data[ref["key"]]


def container_env(container: Mapping[str, Any], pod: Pod, base: Mapping[str, str]) -> dict[str, str]:
    """The container's environment: `base` (the image ENV) overlaid with the rendered `env`."""
    assert not container.get("envFrom"), "envFrom is not emulated by this test"
    env = dict(base)
    for item in container.get("env", []):
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(item.get("value", ""), env)
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            value = pod.secret_value(source["secretKeyRef"])
            if value is not None:
                env[name] = value
        elif "fieldRef" in source:
            env[name] = pod.field(source["fieldRef"]["fieldPath"])
        else:
            raise AssertionError(f"env {name}: valueFrom {sorted(source)} is not emulated by this test")
    return env


def container_argv(container: Mapping[str, Any], entrypoint: list[str], env: Mapping[str, str]) -> list[str]:
    """`command` (or the image ENTRYPOINT) + `args`, expanded, with the console script run by this Python."""
    command = container.get("command") or entrypoint
    argv = [expand(part, env) for part in [*command, *container.get("args", [])]]
    assert argv[0] in CONSOLE_SCRIPTS, f"{argv[0]!r} is not a console script of the image"
    return [sys.executable, "-m", CONSOLE_SCRIPTS[argv[0]], *argv[1:]]


def probe_url(container: Mapping[str, Any], probe: str) -> str:
    """The URL an `httpGet` probe requests (named ports resolved through `ports`)."""
    get = container[probe]["httpGet"]
    assert get.get("scheme", "HTTP") == "HTTP", get
    port = get["port"]
    if isinstance(port, str) and not port.isdigit():
        (port,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return f"http://127.0.0.1:{int(port)}{get.get('path', '/')}"


# --------------------------------------------------------------------------- rendering


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart's manifests (NOTES.txt excluded) for `values`."""
    files = helm.Chart.load(CHART_DIR).render(values, name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True)
    return [
        doc for path, text in sorted(files.items()) if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text) if doc
    ]


def operator_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's Deployment."""
    (found,) = [
        d for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    return found


# --------------------------------------------------------------------------- the running container


@dataclasses.dataclass
class Container:
    """The operator container running as a local process."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, cwd: Path) -> None:
        """Start it in its own session (so SIGTERM reaches the whole group)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=cwd, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def logs(self) -> str:
        """What it printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def answers_200(self, url: str) -> bool:
        """True when `url` answers 200; fails at once (with the log) if the process died."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def terminate(self, grace: float) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL (what the kubelet does); the exit code or None."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            return None


@dataclasses.dataclass
class Rendered:
    """The rendered install and the pieces of it the test looks at."""

    docs: list[dict[str, Any]]
    deployment: dict[str, Any]
    container: dict[str, Any]
    pod: Pod


@pytest.fixture
def watched_namespace(kube_api: Any) -> str:
    """A fresh namespace the chart is told to watch, with the chart's CRD installed."""
    kube_api.install_crd(yaml.safe_load(CHART_CRD.read_text(encoding="utf-8")))
    name = f"chart-e2e-{uuid.uuid4().hex[:8]}"
    kube_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture
def rendered(comfyui_process: Any, s3_server: Any, s3_bucket: str, watched_namespace: str) -> Rendered:
    """The chart rendered against the stand-ins, and the pod the kubelet would build from it."""
    health_port, metrics_port = free_port(), free_port()
    while metrics_port == health_port:
        metrics_port = free_port()
    values = {
        "comfyui": {"url": comfyui_process.url},
        "minio": {"endpoint": s3_server.endpoint, "bucket": s3_bucket, "existingSecret": SECRET_NAME},
        "watch": {"namespaces": [watched_namespace]},
        "operator": {"healthPort": health_port, "metricsPort": metrics_port},
    }
    docs = render(values)
    deployment = operator_deployment(docs)
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": RELEASE_NAMESPACE},
        "type": "Opaque",
        "data": {
            "accessKey": base64.b64encode(s3_server.access_key.encode()).decode(),
            "secretKey": base64.b64encode(s3_server.secret_key.encode()).decode(),
        },
    }
    pod = Pod(
        namespace=deployment["metadata"]["namespace"],
        name=f"{deployment['metadata']['name']}-5d8f7c9b4-x2x7q",
        service_account=pod_spec.get("serviceAccountName", "default"),
        secrets={SECRET_NAME: secret},
    )
    return Rendered(docs=docs, deployment=deployment, container=container, pod=pod)


@pytest.fixture
def operator_container(rendered: Rendered, kube_api: Any, tmp_path: Path) -> Iterator[Container]:
    """The rendered operator container, started; SIGTERM (then SIGKILL) in teardown."""
    entrypoint, image_env = dockerfile_runtime()
    # HOME as the image's user has it (/nonexistent); PATH etc. from the image ENV.
    base = {"HOME": str(tmp_path / "nonexistent"), "LANG": "C.UTF-8", **image_env}
    env = container_env(rendered.container, rendered.pod, base)
    # In a cluster the operator logs in as its service account; here the stand-in's kubeconfig does.
    env["KUBECONFIG"] = str(kube_api.kubeconfig)
    argv = container_argv(rendered.container, entrypoint, env)
    workdir = tmp_path / "workdir"  # the image's WORKDIR is /tmp
    workdir.mkdir()
    proc = Container(argv=argv, env=env, log_path=tmp_path / "operator.log")
    proc.start(workdir)
    try:
        yield proc
    finally:
        proc.terminate(grace=20)


# --------------------------------------------------------------------------- the test


def test_rendered_operator_deployment_runs_an_imagejob_to_succeeded(
    rendered: Rendered, operator_container: Container, kube_api: Any, s3_server: Any, watched_namespace: str,
) -> None:
    container = rendered.container

    # Credentials are only referenced: neither value appears anywhere in the rendered install.
    text = json.dumps(rendered.docs)
    assert s3_server.secret_key not in text and s3_server.access_key not in text
    env_items = {item["name"]: item for item in container["env"]}
    for name, key in (("MINIO_ACCESS_KEY", "accessKey"), ("MINIO_SECRET_KEY", "secretKey")):
        assert "value" not in env_items[name], env_items[name]
        assert env_items[name]["valueFrom"] == {"secretKeyRef": {"name": SECRET_NAME, "key": key}}
    # …and the kubelet emulation did inject them.
    assert operator_container.env["MINIO_SECRET_KEY"] == s3_server.secret_key
    # The rendered args are the ones the process runs with (nothing rewritten).
    assert operator_container.argv[3:] == container["args"]
    assert container["args"][:3] == ["operator", "--namespace", watched_namespace]

    # The rendered probes (and the metrics port) answer on the running process.
    probes = [probe_url(container, "readinessProbe"), probe_url(container, "livenessProbe")]
    assert [url.rsplit("/", 1)[1] for url in probes] == ["readyz", "healthz"]
    for url in probes:
        wait_until(lambda url=url: operator_container.answers_200(url), timeout=30, interval=0.2, what=f"GET {url}")
    (metrics_port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
    assert operator_container.answers_200(f"http://127.0.0.1:{metrics_port}/metrics")

    # A user's ImageJob in the watched namespace runs to Succeeded.
    job = {
        "apiVersion": "comfykube.dev/v1alpha1",
        "kind": "ImageJob",
        "metadata": {"name": "from-the-chart"},
        "spec": {"prompt": "a lighthouse drawn by a Helm chart", "width": 64, "height": 64, "steps": 3},
    }
    result = kube_api.kubectl("apply", "--validate=false", "-n", watched_namespace, "-f", "-",
                              input=json.dumps(job))
    assert result.returncode == 0, result.stderr

    def finished() -> dict[str, Any] | None:
        current = kubectl_json(kube_api, "get", "imagejob", "from-the-chart", "-n", watched_namespace)
        return current if (current.get("status") or {}).get("phase") in {"Succeeded", "Failed"} else None

    status = wait_until(finished, timeout=30, interval=0.2, what="ImageJob finished")["status"]
    assert status["phase"] == "Succeeded", (status, operator_container.logs()[-3000:])
    response = httpx.get(status["url"], timeout=10)
    assert response.status_code == 200, response.text[:200]
    assert hashlib.sha256(response.content).hexdigest() == status["images"][0]["sha256"]

    # SIGTERM (a rollout or a node drain) ends it cleanly within the rendered grace period.
    grace = rendered.deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    code = operator_container.terminate(grace=grace)
    assert code == 0, (code, operator_container.logs()[-3000:])
