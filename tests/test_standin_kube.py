"""Tests of the Kubernetes API stand-in (tests/standins/kube.py) with real clients and sockets.

The ``kube_api`` tests run kubectl, kubernetes_asyncio and a real ``kopf run`` against the FakeKube
subprocess, or against a real cluster when COMFYKUBE_E2E_REAL_CLUSTER=1 and KUBECONFIG are set (then
they use unique names and clean up). The ``kube_api_inprocess`` tests pin the emulator's own rules.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import yaml
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.standins.kube import FakeKube, human_age, jsonpath_find, parse_label_selector
from tests.standins.kube_plugin import REPO_ROOT, KubeApi, fallback_imagejob_crd, start_kube_subprocess

GROUP, VERSION, PLURAL = "comfykube.dev", "v1alpha1", "imagejobs"
IJ = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
MERGE = "application/merge-patch+json"
STATUS = {
    "phase": "Running",
    "reason": "Sampling",
    "progress": {"value": 3, "max": 20},
    "progressText": "3/20",
    "seed": 42,
    "imageCount": 1,
    "url": "http://images.test/0.png",
    "images": [{"key": "default/x/0.png", "bytes": 10, "sha256": "a" * 64, "contentType": "image/png",
                "url": "http://images.test/0.png"}],
}
# What printer columns (by jsonPath) must show once STATUS is written; unknown paths are not checked.
EXPECTED_CELLS = {".status.phase": "Running", ".status.progress.value": "3", ".status.progressText": "3/20",
                  ".status.seed": "42",
                  ".status.imageCount": "1", ".status.images[0].url": "http://images.test/0.png",
                  ".status.url": "http://images.test/0.png", ".spec.prompt": "a red fox"}


def unique(prefix: str) -> str:
    """Names unique per run, so tests can share a real cluster."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def imagejob(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageJob",
            "metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": {"prompt": "a red fox"}}


def printer_columns(crd: dict[str, Any]) -> list[dict[str, Any]]:
    return next(v for v in crd["spec"]["versions"] if v.get("served", True)).get("additionalPrinterColumns", [])


def parse_table(text: str, headers: list[str]) -> list[dict[str, str]]:
    """Split kubectl's aligned output into cells by the header positions (cells may be blank)."""
    lines = text.splitlines()
    starts = [lines[0].index(h) for h in headers]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{h: line[a:b].strip() for h, (a, b) in zip(headers, bounds, strict=True)} for line in lines[1:]]


class LineReader:
    """Collect a subprocess's stdout lines on a thread (select() on a buffered pipe misses lines)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.text = ""
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """Wait for a line satisfying ``predicate``; returns it."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            self.text += line
            if predicate(line):
                return line
        raise AssertionError(f"no matching line within {timeout}s; got:\n{self.text}")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def api_client(api: KubeApi) -> client.ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(api.kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


# ------------------------------------------------------------------------------------- real clients


def test_standalone_server_prints_ready_writes_kubeconfig_and_stops_on_sigterm(
    tmp_path: Path, imagejob_crd_path: Path
) -> None:
    with start_kube_subprocess(tmp_path, crds=[imagejob_crd_path]) as api:
        assert api.url.startswith("http://127.0.0.1:")
        kubeconfig = yaml.safe_load(api.kubeconfig.read_text())
        assert kubeconfig["clusters"][0]["cluster"]["server"] == api.url
        assert kubeconfig["users"][0]["user"]["token"]
        with urllib.request.urlopen(f"{api.url}/apis/{GROUP}/{VERSION}", timeout=5) as resp:
            names = [r["name"] for r in json.load(resp)["resources"]]
        assert names == ["imagejobs", "imagejobs/status"]
        assert api.process is not None
        api.process.send_signal(signal.SIGTERM)
        assert api.process.wait(timeout=10) == 0


def test_kubectl_apply_get_columns_wide_labels_and_status(kube_api: KubeApi, imagejob_crd: dict[str, Any]) -> None:
    kube_api.install_crd(imagejob_crd)
    name, other = unique("fox"), unique("owl")
    try:
        assert "created" in kube_api.apply(imagejob(name, owner="alice"))
        assert "unchanged" in kube_api.apply(imagejob(name, owner="alice"))
        kube_api.apply(imagejob(other, owner="bob"))
        kube_api.kubectl("patch", "ij", name, "--subresource=status", "--type=merge", "-p",
                         json.dumps({"status": STATUS}))
        columns = printer_columns(imagejob_crd)
        narrow = [c for c in columns if not c.get("priority")]

        out = kube_api.kubectl("get", "ij", name).stdout
        headers = ["NAME"] + [c["name"].upper() for c in narrow]
        assert out.splitlines()[0].split() == [w for h in headers for w in h.split()]
        (row,) = parse_table(out, headers)
        assert row["NAME"] == name
        for column in narrow:
            cell = row[column["name"].upper()]
            if column["jsonPath"] in EXPECTED_CELLS:
                assert cell == EXPECTED_CELLS[column["jsonPath"]], column
            if column["type"] == "date":
                assert cell.endswith(("s", "m")), row  # an age, not a timestamp

        wide = kube_api.kubectl("get", "ij", name, "-o", "wide").stdout
        header = wide.splitlines()[0]
        for column in columns:
            assert column["name"].upper() in header
            if column.get("priority") and column["jsonPath"] in EXPECTED_CELLS:
                assert EXPECTED_CELLS[column["jsonPath"]] in wide

        assert kube_api.kubectl("get", "ij", "-l", "owner=alice", "-o", "name").stdout.split() == [
            f"imagejob.{GROUP}/{name}"]
        assert other in kube_api.kubectl("get", "comfy", "-l", "owner in (bob)").stdout
        meta = json.loads(kube_api.kubectl("get", "ij", name, "-o", "json").stdout)
        assert meta["metadata"]["generation"] == 1 and meta["metadata"]["uid"]
        assert meta["status"]["phase"] == "Running"
    finally:
        kube_api.kubectl("delete", "ij", name, other, "--ignore-not-found", "--wait=false")


def test_kubectl_create_namespace_configmap_secret(kube_api: KubeApi) -> None:
    """kubectl's typed clients send protobuf for these; FakeKube decodes the basics."""
    namespace = unique("team")
    try:
        kube_api.kubectl("create", "namespace", namespace)
        kube_api.kubectl("-n", namespace, "create", "configmap", "cm1", "--from-literal=a=b")
        kube_api.kubectl("-n", namespace, "create", "secret", "generic", "s1", "--from-literal=pw=hunter2")
        cm = json.loads(kube_api.kubectl("-n", namespace, "get", "cm", "cm1", "-o", "json").stdout)
        assert cm["data"] == {"a": "b"}
        secret = json.loads(kube_api.kubectl("-n", namespace, "get", "secret", "s1", "-o", "json").stdout)
        assert secret["data"]["pw"] == base64.b64encode(b"hunter2").decode()
    finally:
        kube_api.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")


def test_kubectl_get_watch_shows_a_change(kube_api: KubeApi, imagejob_crd: dict[str, Any]) -> None:
    kube_api.install_crd(imagejob_crd)
    name = unique("watched")
    kube_api.apply(imagejob(name))
    proc = subprocess.Popen(["kubectl", "get", "ij", name, "-w", "-o", "wide"], env=kube_api.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        reader = LineReader(proc)
        reader.until(lambda line: line.startswith(name), timeout=15)
        kube_api.kubectl("patch", "ij", name, "--subresource=status", "--type=merge", "-p",
                         json.dumps({"status": dict(STATUS, phase="Succeeded")}))
        reader.until(lambda line: line.startswith(name) and "Succeeded" in line, timeout=15)
    finally:
        stop(proc)
        kube_api.kubectl("delete", "ij", name, "--ignore-not-found", "--wait=false")


async def test_kubernetes_asyncio_create_patch_watch_and_conflicts(
    kube_api: KubeApi, imagejob_crd: dict[str, Any]
) -> None:
    kube_api.install_crd(imagejob_crd)
    name = unique("asyncio")
    async with await api_client(kube_api) as api:
        custom = client.CustomObjectsApi(api)
        try:
            created = await custom.create_namespaced_custom_object(
                GROUP, VERSION, "default", PLURAL, imagejob(name, owner="carol"))
            assert created is not None, "201 expected: the client returns None on 200"
            assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
            rv = created["metadata"]["resourceVersion"]

            patched = await custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, "default", PLURAL, name, {"status": {"phase": "Queued"}}, _content_type=MERGE)
            assert patched["status"]["phase"] == "Queued"
            assert patched["metadata"]["generation"] == 1  # a status write does not bump generation
            assert int(patched["metadata"]["resourceVersion"]) > int(rv)

            w = watch.Watch()
            seen = []
            async with asyncio.timeout(10):
                async for event in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, "default",
                                            PLURAL, label_selector="owner=carol", resource_version=rv,
                                            timeout_seconds=5):
                    seen.append((event["type"], event["object"].get("status", {}).get("phase")))
                    if ("MODIFIED", "Queued") in seen:
                        w.stop()
                        break
            assert ("MODIFIED", "Queued") in seen

            listed = await custom.list_namespaced_custom_object(
                GROUP, VERSION, "default", PLURAL, label_selector="owner=carol")
            assert [i["metadata"]["name"] for i in listed["items"]] == [name]
            assert not (await custom.list_namespaced_custom_object(
                GROUP, VERSION, "default", PLURAL, label_selector="owner=nobody"))["items"]

            stale = dict(created, metadata=dict(created["metadata"], labels={"owner": "dave"}))
            with pytest.raises(ApiException) as conflict:
                await custom.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name, stale)
            assert conflict.value.status == 409

            with pytest.raises(ApiException) as failed_test:
                await custom.patch_namespaced_custom_object(
                    GROUP, VERSION, "default", PLURAL, name,
                    [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                     {"op": "add", "path": "/metadata/finalizers", "value": ["x.dev/f"]}],
                    _content_type="application/json-patch+json")
            assert failed_test.value.status in (409, 422)
        finally:
            with contextlib.suppress(ApiException):
                await custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)


def test_kopf_operator_lifecycle(kube_api: KubeApi, imagejob_crd: dict[str, Any], tmp_path: Path) -> None:
    kube_api.install_crd(imagejob_crd)
    name = unique("kopf")
    log_path = tmp_path / "kopf.log"
    with open(log_path, "w") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "-n", "default", "--verbose",
             str(REPO_ROOT / "tests/standins/kopf_probe_operator.py")],
            env=kube_api.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    def get() -> dict[str, Any]:
        return json.loads(kube_api.kubectl("get", "ij", name, "-o", "json").stdout)

    try:
        kube_api.apply(imagejob(name))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            obj = get()
            if obj.get("status", {}).get("phase") == "Succeeded":
                break
            assert operator.poll() is None, log_path.read_text()
            time.sleep(0.2)
        else:
            raise AssertionError(f"kopf never wrote the status:\n{log_path.read_text()[-4000:]}")
        assert "comfykube.dev/finalizer" in obj["metadata"]["finalizers"]
        assert obj["status"]["observedGeneration"] == 1
        assert not any(key.startswith("kopf.zalando.org") for key in obj["metadata"].get("annotations", {}))

        events = json.loads(kube_api.kubectl(
            "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json").stdout)["items"]
        assert any(e["metadata"]["name"].startswith("kopf-event-") and e["reason"] == "Rendered" for e in events)

        kube_api.kubectl("delete", "ij", name, "--timeout=30s", timeout=40)  # waits for the finalizer
        gone = kube_api.kubectl("get", "ij", name, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr
        assert "Deleted, really deleted" in log_path.read_text() or kube_api.real
    finally:
        stop(operator)
        kube_api.kubectl("delete", "ij", name, "--ignore-not-found", "--wait=false")


async def test_events_generate_name_and_endpointslices(kube_api: KubeApi) -> None:
    service = unique("comfyui")
    async with await api_client(kube_api) as api:
        core = client.CoreV1Api(api)
        event = {"metadata": {"generateName": "probe-event-"}, "reason": "Probe", "message": "hello",
                 "type": "Normal", "involvedObject": {"kind": "ImageJob", "name": service, "namespace": "default"}}
        first = await core.create_namespaced_event("default", event)
        second = await core.create_namespaced_event("default", event)
        assert first.metadata.name.startswith("probe-event-") and first.metadata.name != second.metadata.name

        slices = client.DiscoveryV1Api(api)

        def endpoint_slice(index: int) -> dict[str, Any]:
            return {"metadata": {"name": f"{service}-{index}", "labels": {"kubernetes.io/service-name": service}},
                    "addressType": "IPv4", "ports": [{"name": "http", "port": 8188, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [f"10.0.0.{index}"], "conditions": {"ready": True}}]}

        try:
            created = await slices.create_namespaced_endpoint_slice("default", endpoint_slice(1))
            listed = await slices.list_namespaced_endpoint_slice(
                "default", label_selector=f"kubernetes.io/service-name={service}")
            assert [s.metadata.name for s in listed.items] == [f"{service}-1"]
            assert listed.items[0].endpoints[0].addresses == ["10.0.0.1"]

            w = watch.Watch()
            seen: list[tuple[str, str]] = []

            async def consume() -> None:
                async for ev in w.stream(slices.list_namespaced_endpoint_slice, "default",
                                         label_selector=f"kubernetes.io/service-name={service}",
                                         resource_version=created.metadata.resource_version, timeout_seconds=5):
                    seen.append((ev["type"], ev["object"].metadata.name))
                    if ev["type"] == "ADDED":
                        w.stop()
                        break

            consumer = asyncio.create_task(consume())
            await asyncio.sleep(0.3)
            await slices.create_namespaced_endpoint_slice("default", endpoint_slice(2))
            await asyncio.wait_for(consumer, 10)
            assert seen == [("ADDED", f"{service}-2")]
        finally:
            for index in (1, 2):
                with contextlib.suppress(ApiException):
                    await slices.delete_namespaced_endpoint_slice(f"{service}-{index}", "default")
            for ev in (first, second):
                with contextlib.suppress(ApiException):
                    await core.delete_namespaced_event(ev.metadata.name, "default")


# ------------------------------------------------------------------------- in-process emulator rules


@pytest.fixture()
async def kube(kube_api_inprocess: FakeKube) -> AsyncIterator[tuple[FakeKube, aiohttp.ClientSession]]:
    kube_api_inprocess.register_crd(fallback_imagejob_crd())
    async with aiohttp.ClientSession(kube_api_inprocess.base_url) as session:
        yield kube_api_inprocess, session


async def call(session: aiohttp.ClientSession, method: str, path: str, body: Any = None, *,
               content_type: str = "application/json", accept: str = "application/json") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body)
    async with session.request(method, path, data=data,
                               headers={"Content-Type": content_type, "Accept": accept}) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_namespaces_paths_and_checks(kube: tuple[FakeKube, aiohttp.ClientSession]) -> None:
    _, s = kube
    status, body = await call(s, "GET", "/api/v1/namespaces")
    assert status == 200 and body["kind"] == "NamespaceList"
    assert {"default", "kube-system", "kube-public"} <= {n["metadata"]["name"] for n in body["items"]}
    status, body = await call(s, "GET", "/api/v1/namespaces/default")
    assert status == 200 and body["status"]["phase"] == "Active"
    assert (await call(s, "POST", "/api/v1/namespaces", {"metadata": {"name": "team"}}))[0] == 201
    status, body = await call(s, "POST", f"/apis/{GROUP}/{VERSION}/namespaces/nowhere/{PLURAL}", imagejob("x"))
    assert status in (400, 404)  # body namespace "default" mismatches, or the namespace is missing
    status, body = await call(s, "POST", f"/apis/{GROUP}/{VERSION}/namespaces/nowhere/{PLURAL}",
                              {"metadata": {"name": "x"}, "spec": {}})
    assert status == 404 and body["reason"] == "NotFound" and "nowhere" in body["message"]


async def test_versions_generation_status_rules_and_identity(kube: tuple[FakeKube, aiohttp.ClientSession]) -> None:
    fake, s = kube
    status, obj = await call(s, "POST", IJ, dict(imagejob("j1"), status={"phase": "Hacked"}))
    assert status == 201 and "status" not in obj and obj["metadata"]["generation"] == 1
    rv1 = int(obj["metadata"]["resourceVersion"])
    # Main-resource writes keep .status; /status writes keep everything else.
    _, obj = await call(s, "PATCH", f"{IJ}/j1/status", {"status": {"phase": "Running"}, "spec": {"prompt": "no"}},
                        content_type=MERGE)
    assert obj["status"] == {"phase": "Running"} and obj["spec"]["prompt"] == "a red fox"
    assert obj["metadata"]["generation"] == 1 and int(obj["metadata"]["resourceVersion"]) > rv1
    _, obj = await call(s, "PATCH", f"{IJ}/j1", {"status": {"phase": "Lost"}, "metadata": {"labels": {"a": "b"}}},
                        content_type=MERGE)
    assert obj["status"] == {"phase": "Running"} and obj["metadata"]["generation"] == 1
    _, obj = await call(s, "PATCH", f"{IJ}/j1", {"spec": {"steps": 30}, "metadata": {"uid": "forged"}},
                        content_type=MERGE)
    assert obj["metadata"]["generation"] == 2 and obj["metadata"]["uid"] != "forged"
    # A no-op write bumps nothing.
    rv = obj["metadata"]["resourceVersion"]
    _, same = await call(s, "PATCH", f"{IJ}/j1", {"spec": {"steps": 30}}, content_type=MERGE)
    assert same["metadata"]["resourceVersion"] == rv
    # Optimistic concurrency and patch types.
    stale = dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(rv1)))
    assert (await call(s, "PUT", f"{IJ}/j1", stale))[0] == 409
    assert (await call(s, "PUT", f"{IJ}/j1", dict(obj, spec={"prompt": "new"})))[0] == 200
    test_op = [{"op": "test", "path": "/metadata/resourceVersion", "value": str(rv1)}]
    assert (await call(s, "PATCH", f"{IJ}/j1", test_op, content_type="application/json-patch+json"))[0] == 422
    assert (await call(s, "PATCH", f"{IJ}/j1", {"spec": {}}, content_type="application/json-patch+json"))[0] == 400
    assert (await call(s, "PATCH", f"{IJ}/j1", {"metadata": {"resourceVersion": "1"}}, content_type=MERGE))[0] == 409
    assert (await call(s, "PATCH", f"{IJ}/j1", {"spec": {}}, content_type="text/plain"))[0] == 415
    status, applied = await call(s, "PATCH", f"{IJ}/j2?fieldManager=t", imagejob("j2"),
                                 content_type="application/apply-patch+yaml")
    assert status == 201 and applied["metadata"]["uid"]
    status, body = await call(s, "POST", IJ, {"metadata": {"generateName": "gen-"}, "spec": {}})
    assert status == 201 and body["metadata"]["name"].startswith("gen-") and len(body["metadata"]["name"]) == 9
    assert (await call(s, "POST", IJ, imagejob("j1")))[0] == 409
    assert fake.get_object(f"{GROUP}/{VERSION}/{PLURAL}", "default", "j1")["spec"] == {"prompt": "new"}


async def test_finalizers_delay_deletion(kube: tuple[FakeKube, aiohttp.ClientSession]) -> None:
    fake, s = kube
    await call(s, "POST", IJ, dict(imagejob("f1"), metadata={"name": "f1", "finalizers": ["a.dev/f"]}))
    status, obj = await call(s, "DELETE", f"{IJ}/f1")
    assert status == 200 and obj["metadata"]["deletionTimestamp"]
    assert (await call(s, "PATCH", f"{IJ}/f1", {"metadata": {"finalizers": ["a.dev/f", "b.dev/g"]}},
                       content_type=MERGE))[0] == 422  # no new finalizers while terminating
    assert (await call(s, "GET", f"{IJ}/f1"))[0] == 200
    status, _ = await call(s, "PATCH", f"{IJ}/f1", {"metadata": {"finalizers": None}}, content_type=MERGE)
    assert status == 200
    assert (await call(s, "GET", f"{IJ}/f1"))[0] == 404
    assert fake.objects[f"{GROUP}/{VERSION}/{PLURAL}", "default", "f1"].deleted


async def test_watch_resume_selectors_and_gone(kube: tuple[FakeKube, aiohttp.ClientSession]) -> None:
    _, s = kube
    _, obj = await call(s, "POST", IJ, imagejob("w1", tier="gold"))
    rv = obj["metadata"]["resourceVersion"]
    await call(s, "PATCH", f"{IJ}/w1", {"metadata": {"labels": {"tier": "tin"}}}, content_type=MERGE)
    await call(s, "PATCH", f"{IJ}/w1", {"metadata": {"labels": {"tier": "gold"}}}, content_type=MERGE)
    await call(s, "DELETE", f"{IJ}/w1")

    async def events(query: str) -> list[tuple[str, str]]:
        async with s.get(f"{IJ}?watch=1&timeoutSeconds=1&{query}") as resp:
            assert resp.headers["Content-Type"].startswith("application/json")
            lines = (await resp.text()).splitlines()
        return [(e["type"], e["object"].get("metadata", {}).get("resourceVersion", "")) for e in map(json.loads, lines)]

    everything = await events(f"resourceVersion={rv}")
    assert [t for t, _ in everything] == ["MODIFIED", "MODIFIED", "DELETED"]
    assert [int(v) for _, v in everything] == sorted(int(v) for _, v in everything)
    gold = await events(f"resourceVersion={rv}&labelSelector=tier%3Dgold")
    assert [t for t, _ in gold] == ["DELETED", "ADDED", "DELETED"]  # leaving/entering the selector

    small = FakeKube(event_log_limit=3)
    async with small, small.serve() as url, aiohttp.ClientSession(url) as session:
        for index in range(5):
            await call(session, "POST", "/api/v1/namespaces", {"metadata": {"name": f"n{index}"}})
        async with session.get("/api/v1/namespaces?watch=true&resourceVersion=1&timeoutSeconds=1") as resp:
            event = json.loads((await resp.text()).splitlines()[0])
        assert event["type"] == "ERROR" and event["object"]["code"] == 410


async def test_tables_for_kubectl(kube: tuple[FakeKube, aiohttp.ClientSession]) -> None:
    _, s = kube
    await call(s, "POST", IJ, imagejob("t1"))
    await call(s, "PATCH", f"{IJ}/t1/status", {"status": STATUS}, content_type=MERGE)
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    _, table = await call(s, "GET", IJ, accept=accept)
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Phase", "Progress", "Images", "Reason", "Age", "Seed", "URL", "Prompt"]
    assert [c["priority"] for c in table["columnDefinitions"]][-3:] == [1, 1, 1]
    cells = table["rows"][0]["cells"]
    assert cells[:5] == ["t1", "Running", 3, 1, "Sampling"] and cells[5].endswith("s")
    assert cells[6:] == [42, "http://images.test/0.png", "a red fox"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    _, single = await call(s, "GET", f"{IJ}/t1", accept=accept)
    assert single["rows"][0]["cells"][0] == "t1"


async def test_discovery_and_crd_registration(kube: tuple[FakeKube, aiohttp.ClientSession]) -> None:
    _, s = kube
    _, core = await call(s, "GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    _, group = await call(s, "GET", f"/apis/{GROUP}")
    assert group["preferredVersion"]["version"] == VERSION
    _, resources = await call(s, "GET", f"/apis/{GROUP}/{VERSION}")
    rows = {r["name"]: r for r in resources["resources"]}
    assert rows["imagejobs"]["shortNames"] == ["ij"] and rows["imagejobs"]["categories"] == ["comfy"]
    assert "shortNames" not in rows["imagejobs/status"]
    assert rows["imagejobs/status"]["verbs"] == ["get", "patch", "update"]
    for path in ("/apis/discovery.k8s.io/v1", "/apis/coordination.k8s.io/v1", "/apis/events.k8s.io/v1"):
        assert (await call(s, "GET", path))[0] == 200
    _, crd = await call(s, "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}")
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {"NamesAccepted": "True",
                                                                             "Established": "True"}
    assert (await call(s, "GET", "/openapi/v2"))[0] == 200
    await call(s, "DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}")
    assert (await call(s, "GET", IJ))[0] == 404


async def test_request_history_is_bounded_and_reactions_still_work(
    kube: tuple[FakeKube, aiohttp.ClientSession]
) -> None:
    fake, s = kube
    fake["delete", kmock.resource(GROUP, VERSION, PLURAL)] << 503  # fault injection
    for _ in range(120):
        assert (await call(s, "GET", "/api/v1/namespaces/default"))[0] == 200
    assert len(list(fake)) <= fake.history_limit
    assert all(len(list(reaction)) <= fake.history_limit for reaction in fake._payloads)
    assert len(list(fake["get", kmock.resource("v1/namespaces")])) == fake.history_limit  # kmock views work
    await call(s, "POST", IJ, imagejob("h1"))
    async with s.delete(f"{IJ}/h1") as resp:
        assert resp.status == 503
    started = time.monotonic()
    for _ in range(50):
        await call(s, "GET", f"{IJ}/h1")
    assert (time.monotonic() - started) / 50 < 0.1  # stays fast after many requests (unbounded: 150+ ms)


def test_helpers() -> None:
    obj = {"status": {"images": [{"url": "u0"}, {"url": "u1"}], "conditions": [
        {"type": "Ready", "status": "False"}, {"type": "Done", "status": "True"}]}}
    assert jsonpath_find(obj, ".status.images[0].url") == ["u0"]
    assert jsonpath_find(obj, "{.status.images[*].url}") == ["u0", "u1"]
    assert jsonpath_find(obj, '.status.conditions[?(@.type=="Done")].status') == ["True"]
    assert jsonpath_find(obj, ".status.missing.deeper") == []
    sel = parse_label_selector("app=x,tier!=y,env in (a, b),!legacy,owner")
    labels = {"app": "x", "env": "b", "owner": "o"}
    assert all(r.matches(labels) for r in sel)
    assert not all(r.matches(dict(labels, legacy="1")) for r in sel)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    ages = [human_age((now - timedelta(seconds=sec)).isoformat(), now=now) for sec in (5, 200, 3 * 3600, 3 * 86400)]
    assert ages == ["5s", "3m20s", "3h", "3d"]
