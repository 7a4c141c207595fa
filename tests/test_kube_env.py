"""`KubeApi` keeps aiohttp from looking up ~/.netrc and the proxy variables on every request,
unless a proxy applies to the API server (then aiohttp keeps finding it itself)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from comfykube.kube import KubeApi


async def _trusts_env(host: str) -> Any:
    api = KubeApi(client.ApiClient(configuration=client.Configuration(host=host)))
    try:
        return api.api_client.rest_client.pool_manager.trust_env
    finally:
        await api.close()


async def test_no_proxy_means_no_lookups_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert await _trusts_env("https://127.0.0.1:6443") is False


async def test_a_proxy_in_the_environment_is_still_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert await _trusts_env("https://kube.invalid:6443") is True
    monkeypatch.setenv("NO_PROXY", "kube.invalid")  # bypassed: no proxy applies
    assert await _trusts_env("https://kube.invalid:6443") is False
