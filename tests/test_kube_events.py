"""Events posted by comfykube read top to bottom in `kubectl describe imagejob`.

kubectl sorts the Events of `describe` by lastTimestamp, which has whole seconds, and keeps the
API's order (by name) among ties; generated names shuffled the events of one second. Events are
now named `<object>.<UnixNano hex>` as client-go's recorder names them, and carry a microsecond
eventTime.
"""

from __future__ import annotations

import json
import os
from typing import Any

from kubernetes_asyncio import client, config

from comfykube.kube import KubeApi as ComfyKube
from comfykube.types import API_GROUP, API_VERSION
from tests.standins.kube_plugin import KubeApi

REASONS = ["Queued", "Submitted", "Running", "Sampling", "Uploading", "Stored", "Succeeded", "Cleaned"]


def events_section(describe: str) -> list[str]:
    """The Reason column of the Events table at the end of `kubectl describe`."""
    lines = describe.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Events:"))
    header, rows = lines[start + 1], lines[start + 3:]
    column = header.index("Reason")
    return [row[column:].split()[0] for row in rows if row.strip()]


async def test_describe_lists_events_of_one_second_in_order(
    kube_api: KubeApi, imagejob_crd: dict[str, Any]
) -> None:
    kube_api.install_crd(imagejob_crd)
    name = f"ordered-{os.getpid()}"
    kube_api.apply({"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "ImageJob",
                    "metadata": {"name": name, "namespace": "default"}, "spec": {"prompt": "a red fox"}})
    obj = json.loads(kube_api.kubectl("get", "imagejob", name, "-n", "default", "-o", "json").stdout)

    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kube_api.kubeconfig), client_configuration=cfg)
    api = ComfyKube(client.ApiClient(configuration=cfg))
    try:
        for reason in REASONS:  # well within one second
            await api.post_event(obj, type_="Normal", reason=reason, message=f"step {reason}")
    finally:
        await api.close()

    events = json.loads(kube_api.kubectl(
        "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout)["items"]
    assert len(events) == len(REASONS)
    stamps = [event["eventTime"] for event in events]
    assert all("." in stamp for stamp in stamps), stamps  # microseconds, not whole seconds
    assert len({stamp[:19] for stamp in stamps}) <= 2  # the case that broke: (mostly) one second

    describe = kube_api.kubectl("describe", "imagejob", name, "-n", "default").stdout
    assert events_section(describe) == REASONS, describe
