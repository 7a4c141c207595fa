"""pytest fixtures for the Kubernetes API stand-in (``tests.standins.kube.FakeKube``).

Fixtures:

* ``kube_api`` (function scope) and ``kube_api_shared`` (session scope): a :class:`KubeApi` handle
  for a FakeKube **subprocess** on a free loopback port, with ``.url``, ``.kubeconfig`` (a path),
  ``.env`` (``os.environ`` + ``KUBECONFIG`` + a private ``KUBECACHEDIR``), ``.kubectl(...)``,
  ``.apply(manifest)``, ``.install_crd(crd)``. Pass ``.env`` to every subprocess you start
  (``kopf run``, ``comfykube operator``, ``kubectl``).
* ``kube_api_inprocess`` (function scope, async): a running in-process :class:`FakeKube` (same
  event loop as the test) with ``.base_url``; seed with ``create_object``/``register_crd``, read with
  ``get_object``/``objects``, inject faults with kmock reactions.
* ``imagejob_crd``: the CRD dict from ``crds/imagejob.yaml`` when that file exists, else
  ``fallback_imagejob_crd()``; ``imagejob_crd_path``: the same written to a file.

Real cluster: when ``COMFYKUBE_E2E_REAL_CLUSTER=1`` and ``KUBECONFIG`` is set, ``kube_api`` and
``kube_api_shared`` start nothing and yield that cluster (``.real is True``, ``.url`` from the
kubeconfig). Tests written against ``kube_api`` must then create unique names, install the CRD with
``.install_crd`` (a no-op apply if it is already there), and clean up after themselves;
``kube_api_inprocess`` always uses FakeKube (tests that use it are stand-in unit tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from tests.standins.kube import FakeKube

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "imagejob.yaml"
KUBECTL = os.environ.get("KUBECTL", "kubectl")
REAL_CLUSTER_ENV = "COMFYKUBE_E2E_REAL_CLUSTER"


def fallback_imagejob_crd() -> dict[str, Any]:
    """A small, permissive ImageJob CRD used until ``crds/imagejob.yaml`` exists.

    Printer columns: Phase, Progress, Images, Reason, Age; with ``-o wide`` also Seed, URL, Prompt.
    """
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "integer", "jsonPath": ".status.progress.value"},
        {"name": "Images", "type": "integer", "jsonPath": ".status.imageCount"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Seed", "type": "integer", "jsonPath": ".status.seed", "priority": 1},
        {"name": "URL", "type": "string", "jsonPath": ".status.images[0].url", "priority": 1},
        {"name": "Prompt", "type": "string", "jsonPath": ".spec.prompt", "priority": 1},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "imagejobs.comfykube.dev"},
        "spec": {
            "group": "comfykube.dev",
            "scope": "Namespaced",
            "names": {
                "plural": "imagejobs", "singular": "imagejob", "kind": "ImageJob", "listKind": "ImageJobList",
                "shortNames": ["ij"], "categories": ["comfy"],
            },
            "versions": [{
                "name": "v1alpha1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    },
                }},
                "additionalPrinterColumns": columns,
            }],
        },
    }


def load_imagejob_crd() -> dict[str, Any]:
    """The project's CRD if it has been generated, else the fallback."""
    if CRD_FILE.exists():
        for doc in yaml.safe_load_all(CRD_FILE.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                return dict(doc)
    return fallback_imagejob_crd()


@dataclasses.dataclass
class KubeApi:
    """A reachable Kubernetes API: the FakeKube subprocess, or a real cluster."""

    url: str
    kubeconfig: Path
    env: dict[str, str]
    real: bool = False
    process: subprocess.Popen[str] | None = None

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this API; raises with kubectl's stderr when ``check`` fails."""
        proc = subprocess.run(
            [KUBECTL, *args], env=self.env, input=input, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    def apply(self, manifest: Mapping[str, Any] | str | Path, *args: str) -> str:
        """``kubectl apply --validate=false`` a dict, a YAML string or a file; returns stdout."""
        if isinstance(manifest, Path):
            return self.kubectl("apply", "--validate=false", "-f", str(manifest), *args).stdout
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "--validate=false", "-f", "-", *args, input=text).stdout

    def install_crd(self, crd: Mapping[str, Any], timeout: float = 20) -> None:
        """Apply a CRD and wait until it is Established."""
        self.apply(crd)
        self.kubectl("wait", "--for", "condition=established", f"crd/{crd['metadata']['name']}",
                     f"--timeout={int(timeout)}s", timeout=timeout + 5)


def _real_cluster() -> KubeApi | None:
    if os.environ.get(REAL_CLUSTER_ENV) != "1" or not os.environ.get("KUBECONFIG"):
        return None
    env = dict(os.environ)
    kubeconfig = Path(env["KUBECONFIG"].split(os.pathsep)[0])
    url = subprocess.run(
        [KUBECTL, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()
    return KubeApi(url=url, kubeconfig=kubeconfig, env=env, real=True)


@contextlib.contextmanager
def start_kube_subprocess(
    workdir: Path, *, crds: list[Path] | None = None, startup_timeout: float = 20
) -> Iterator[KubeApi]:
    """Start ``python -m tests.standins.kube`` on a free port; stop it (SIGTERM, then kill) afterwards."""
    kubeconfig = workdir / "kubeconfig.yaml"
    stderr_path = workdir / "fakekube.stderr"
    cmd = [sys.executable, "-m", "tests.standins.kube", "--port", "0", "--kubeconfig-out", str(kubeconfig)]
    for crd in crds or []:
        cmd += ["--crd", str(crd)]
    with open(stderr_path, "w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + startup_timeout
        line = ""
        while time.monotonic() < deadline and not line.startswith("READY "):
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = proc.stdout.readline()
            if not line:  # EOF: the server died
                break
        if not line.startswith("READY "):
            proc.kill()
            raise RuntimeError(f"FakeKube did not start: {stderr_path.read_text(encoding='utf-8')[-2000:]}")
        url = line.split(maxsplit=1)[1].strip()
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), KUBECACHEDIR=str(workdir / "kube-cache"))
        yield KubeApi(url=url, kubeconfig=kubeconfig, env=env, process=proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="session")
def kube_api_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    """One FakeKube subprocess for the whole session (or the real cluster, see the module doc)."""
    real = _real_cluster()
    if real is not None:
        yield real
        return
    with start_kube_subprocess(tmp_path_factory.mktemp("kube-shared")) as api:
        yield api


@pytest.fixture()
def kube_api(tmp_path: Path) -> Iterator[KubeApi]:
    """A fresh FakeKube subprocess for one test (or the real cluster, see the module doc)."""
    real = _real_cluster()
    if real is not None:
        yield real
        return
    workdir = Path(tempfile.mkdtemp(prefix="kube-", dir=tmp_path))
    with start_kube_subprocess(workdir) as api:
        yield api


@pytest_asyncio.fixture()
async def kube_api_inprocess() -> AsyncIterator[FakeKube]:
    """A FakeKube served on a free loopback port inside the test's event loop (``.base_url``)."""
    fake = FakeKube()
    async with fake, fake.serve():
        yield fake


@pytest.fixture()
def imagejob_crd() -> dict[str, Any]:
    """The ImageJob CRD: ``crds/imagejob.yaml`` when present, else :func:`fallback_imagejob_crd`."""
    return load_imagejob_crd()


@pytest.fixture()
def imagejob_crd_path(tmp_path: Path, imagejob_crd: dict[str, Any]) -> Path:
    """:func:`imagejob_crd` written to a YAML file (for ``--crd`` or ``kubectl apply -f``)."""
    path = tmp_path / "imagejob-crd.yaml"
    path.write_text(yaml.safe_dump(imagejob_crd, sort_keys=False), encoding="utf-8")
    return path
