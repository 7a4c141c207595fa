"""Shared pytest configuration: each stand-in registers its fixtures as a plugin.

The end-to-end fixtures every operator test file uses live here too: `cluster` (the
Kubernetes API with the CRD installed), `namespace` (a fresh one per test, named with the
module's `NAMESPACE_PREFIX`) and `operator` (`comfykube operator` on the ComfyUI stand-in
and nanio).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import REPO, OperatorProcess, operator_env

pytest_plugins = [
    "tests.standins.comfyui_plugin",
    "tests.standins.s3_plugin",
    "tests.standins.kube_plugin",
    "tests.standins.discord_plugin",
]


@pytest.fixture
def cluster(kube_api: Any) -> Any:
    """The Kubernetes API (stand-in or real) with the ImageJob CRD installed."""
    kube_api.install_crd(yaml.safe_load((REPO / "crds" / "imagejob.yaml").read_text(encoding="utf-8")))
    return kube_api


@pytest.fixture
def namespace(cluster: Any, request: pytest.FixtureRequest) -> str:
    """A new namespace for one test."""
    prefix = getattr(request.module, "NAMESPACE_PREFIX", "e2e")
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture
def operator(
    cluster: Any, comfyui_process: Any, s3_server: Any, s3_bucket: str, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """`comfykube operator` watching `namespace`, on the ComfyUI stand-in process and nanio."""
    env = operator_env(cluster.env, comfyui_url=comfyui_process.url, s3=s3_server, bucket=s3_bucket)
    proc = OperatorProcess(env, namespace, tmp_path / "operator.log").start()
    yield proc
    proc.stop()
