"""The chart's optional web gallery, in each auth mode: rendered, linted strictly, validated strictly.

Same method as tests/test_chart.py (helm-python-sdk + kubernetes-validate, Kubernetes 1.30
schemas, strict), plus what the gallery promises: read-only RBAC, secrets only by
reference, loopback-only without auth, a NetworkPolicy that admits only the proxy in
proxy mode, and an environment `WebSettings` accepts.
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from comfykube_web.settings import AuthMode, WebSettings
from tests.test_chart import (
    CHART_DIR,
    KUBE_VERSION,
    NAMESPACE,
    READ_VERBS,
    RELEASE,
    container,
    deployment,
    env_of,
    of_kind,
    verbs_for,
)

PROXY_PEER = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "oauth2-proxy"}}}
WEB_SCENARIOS: dict[str, dict[str, Any]] = {
    "web-none": {"web": {"enabled": True, "auth": "none"}},
    "web-token": {
        "web": {"enabled": True, "auth": "token", "existingSecret": "comfykube-web",
                "ingress": {"enabled": True, "host": "gallery.example.com", "className": "nginx",
                            "tls": [{"secretName": "gallery-tls", "hosts": ["gallery.example.com"]}]}},
    },
    "web-basic": {
        "watch": {"namespaces": ["jobs", "art"]},
        "web": {"enabled": True, "auth": "basic", "existingSecret": "comfykube-web", "userKey": "user"},
        "networkPolicy": {"enabled": True},
    },
    "web-proxy": {
        "watch": {"allNamespaces": True},
        "web": {"enabled": True, "auth": "proxy", "proxy": {"header": "X-Auth-Request-User", "from": [PROXY_PEER]},
                "ingress": {"enabled": True, "host": "gallery.example.com",
                            "annotations": {"nginx.ingress.kubernetes.io/auth-url": "http://oauth2-proxy/oauth2/auth"}}},
    },
    "web-proxy-narrowed": {
        "watch": {"allNamespaces": True},
        "web": {"enabled": True, "auth": "proxy", "namespaces": ["art"], "proxy": {"from": [PROXY_PEER]}},
    },
}

_CACHE: dict[str, list[dict[str, Any]]] = {}


@pytest.fixture(scope="module")
def chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


def render(chart: helm.Chart, scenario: str) -> list[dict[str, Any]]:
    if scenario not in _CACHE:
        files = chart.render(WEB_SCENARIOS[scenario], name=RELEASE, namespace=NAMESPACE, is_install=True)
        _CACHE[scenario] = [d for p, t in sorted(files.items()) if not p.endswith("NOTES.txt")
                            for d in yaml.safe_load_all(t) if d]
    return _CACHE[scenario]


def web_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "web"]


@pytest.mark.parametrize("scenario", WEB_SCENARIOS)
def test_strict_lint_is_clean(scenario: str) -> None:
    report = helm.lint(CHART_DIR, WEB_SCENARIOS[scenario], strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("scenario", WEB_SCENARIOS)
def test_every_web_document_passes_strict_kubernetes_validation(chart: helm.Chart, scenario: str) -> None:
    docs = web_docs(render(chart, scenario))
    assert {d["kind"] for d in docs} >= {"Deployment", "ServiceAccount"}
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{scenario}: {doc['kind']}/{doc['metadata']['name']}: {exc}")


def test_web_is_off_by_default(chart: helm.Chart) -> None:
    files = chart.render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = [d for p, t in files.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
    assert web_docs(docs) == []


@pytest.mark.parametrize("scenario", WEB_SCENARIOS)
def test_web_rbac_is_read_only_on_imagejobs_and_events(chart: helm.Chart, scenario: str) -> None:
    docs = web_docs(render(chart, scenario))
    roles = of_kind(docs, "Role") + of_kind(docs, "ClusterRole")
    assert roles
    for role in roles:
        assert {r for rule in role["rules"] for r in rule["resources"]} == {"imagejobs", "events"}
        assert verbs_for(role["rules"], "comfykube.dev", "imagejobs") == READ_VERBS
        assert verbs_for(role["rules"], "", "events") == READ_VERBS
    accounts = {sa["metadata"]["name"] for sa in of_kind(docs, "ServiceAccount")}
    assert deployment(docs, "web")["spec"]["template"]["spec"]["serviceAccountName"] in accounts
    for binding in of_kind(docs, "RoleBinding") + of_kind(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ck-comfykube-web", "namespace": NAMESPACE}]


def test_web_namespaces_follow_the_operator_or_narrow_it(chart: helm.Chart) -> None:
    basic = web_docs(render(chart, "web-basic"))
    assert {r["metadata"]["namespace"] for r in of_kind(basic, "Role")} == {"jobs", "art"}
    assert env_of(container(deployment(basic, "web")))["WEB_NAMESPACES"]["value"] == "jobs,art"
    proxy = web_docs(render(chart, "web-proxy"))
    assert of_kind(proxy, "Role") == [] and len(of_kind(proxy, "ClusterRole")) == 1
    assert env_of(container(deployment(proxy, "web")))["WEB_ALL_NAMESPACES"]["value"] == "true"
    narrowed = web_docs(render(chart, "web-proxy-narrowed"))
    assert of_kind(narrowed, "ClusterRole") == []
    assert [r["metadata"]["namespace"] for r in of_kind(narrowed, "Role")] == ["art"]


@pytest.mark.parametrize("scenario", WEB_SCENARIOS)
def test_web_env_is_what_the_gallery_accepts(chart: helm.Chart, scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ctr = container(deployment(web_docs(render(chart, scenario)), "web"))
    assert ctr["args"] == ["web"]
    for name, item in env_of(ctr).items():
        if "value" in item:
            monkeypatch.setenv(name, item["value"])
        else:  # a secretKeyRef: stand in for what the Secret holds
            monkeypatch.setenv(name, "from-the-secret")
    settings = WebSettings()
    assert settings.auth is AuthMode(WEB_SCENARIOS[scenario]["web"]["auth"])
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports == {"http": settings.port, "health": settings.health_port}
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


@pytest.mark.parametrize("scenario", WEB_SCENARIOS)
def test_web_secrets_are_only_referenced(chart: helm.Chart, scenario: str) -> None:
    docs = web_docs(render(chart, scenario))
    assert of_kind(docs, "Secret") == []
    env = env_of(container(deployment(docs, "web")))
    for name in ("WEB_TOKEN", "WEB_BASIC_USER", "WEB_BASIC_PASSWORD", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        if name in env:
            assert set(env[name]["valueFrom"]) == {"secretKeyRef"}, name
    auth = WEB_SCENARIOS[scenario]["web"]["auth"]
    assert ("WEB_TOKEN" in env) == (auth == "token")
    assert ("WEB_BASIC_PASSWORD" in env) == (auth == "basic")
    if auth == "basic":
        assert env["WEB_BASIC_USER"]["valueFrom"]["secretKeyRef"] == {"name": "comfykube-web", "key": "user"}


def test_auth_none_binds_loopback_and_has_no_service_or_ingress(chart: helm.Chart) -> None:
    docs = web_docs(render(chart, "web-none"))
    assert env_of(container(deployment(docs, "web")))["WEB_HOST"]["value"] == "127.0.0.1"
    assert of_kind(docs, "Service") == [] and of_kind(docs, "Ingress") == []
    for scenario in ("web-token", "web-basic", "web-proxy"):
        assert env_of(container(deployment(web_docs(render(chart, scenario)), "web")))["WEB_HOST"]["value"] == "0.0.0.0"


def test_ingress_points_at_the_gallery_service(chart: helm.Chart) -> None:
    docs = web_docs(render(chart, "web-token"))
    (ingress,) = of_kind(docs, "Ingress")
    (service,) = of_kind(docs, "Service")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    assert ingress["spec"]["rules"][0]["host"] == "gallery.example.com"
    assert ingress["spec"]["tls"][0]["secretName"] == "gallery-tls"
    assert service["spec"]["selector"] == deployment(docs, "web")["spec"]["selector"]["matchLabels"]


def test_proxy_mode_admits_only_the_proxy_to_the_gallery_port(chart: helm.Chart) -> None:
    for scenario in ("web-proxy", "web-proxy-narrowed"):
        docs = web_docs(render(chart, scenario))
        (policy,) = of_kind(docs, "NetworkPolicy")
        rules = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
        assert rules["http"]["from"] == [PROXY_PEER]
        assert "from" not in rules["health"]  # kubelet probes
        env = env_of(container(deployment(docs, "web")))
        assert env["WEB_PROXY_HEADER"]["value"] == WEB_SCENARIOS[scenario]["web"].get("proxy", {}).get(
            "header", "X-Forwarded-User")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"web": {"enabled": True, "auth": "none", "ingress": {"enabled": True, "host": "g.example.com"}}},
         "needs authentication"),
        ({"web": {"enabled": True, "auth": "proxy"}}, "web.proxy.from"),
        ({"web": {"enabled": True, "auth": "none", "port": 8091}}, "must differ"),
        ({"web": {"enabled": True, "existingSecret": "w", "ingress": {"enabled": True}}}, "web.ingress.host"),
    ],
)
def test_templates_refuse_inconsistent_web_values(chart: helm.Chart, override: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        chart.render(override, name=RELEASE, namespace=NAMESPACE, is_install=True)


@pytest.mark.parametrize(
    ("override", "pointer"),
    [
        ({"web": {"enabled": True, "auth": "token"}}, "/web"),
        ({"web": {"enabled": True, "auth": "basic", "existingSecret": ""}}, "/web"),
        ({"web": {"enabled": True, "auth": "oauth", "existingSecret": "w"}}, "/web/auth"),
        ({"web": {"enabled": True, "auth": "token", "existingSecret": "w", "token": "hunter2"}}, "/web"),
        ({"web": {"proxy": {"header": "X Forwarded"}}}, "/web/proxy/header"),
        ({"web": {"namespaces": ["Art"]}}, "/web/namespaces/0"),
        ({"web": {"port": 0}}, "/web/port"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_schema_refuses_bad_web_values(chart: helm.Chart, override: dict[str, Any], pointer: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(override)
    assert pointer in str(caught.value)


@pytest.mark.parametrize("scenario", WEB_SCENARIOS)
def test_schema_accepts_the_web_scenarios(chart: helm.Chart, scenario: str) -> None:
    chart.validate_schema(WEB_SCENARIOS[scenario])


def test_the_image_ships_the_gallery_and_exposes_its_ports() -> None:
    from tests.test_dockerfile import INSTRUCTIONS, final_stage, is_ignored

    copies = [ins.args.split() for ins in INSTRUCTIONS if ins.keyword == "COPY" and "--from" not in ins.args]
    assert ["web/", "web/"] in copies
    for kept in ("web/comfykube_web/app.py", "web/comfykube_web/templates/grid.html",
                 "web/comfykube_web/static/gallery.js"):
        assert not is_ignored(kept), kept
    exposed = {int(p.split("/")[0]) for ins in final_stage() if ins.keyword == "EXPOSE" for p in ins.args.split()}
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert {values["web"]["port"], values["web"]["healthPort"]} <= exposed
