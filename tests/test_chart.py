"""The Helm chart, rendered and checked offline (helm-python-sdk + kubernetes-validate).

Six installs are rendered (default values, bot enabled, one namespace, all
namespaces with every optional part on, the bot with every setting of its own,
the bot with metrics off); each is linted strictly, every document
is validated against the Kubernetes 1.30 schemas in strict mode, and the
security properties the chart promises are asserted on the parsed manifests.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from comfykube.types import parse_spec

ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = ROOT / "charts" / "comfykube"
REPO_CRD = ROOT / "crds" / "imagejob.yaml"
CHART_CRD = CHART_DIR / "crds" / "imagejob.yaml"
DOCS = ROOT / "docs" / "helm.md"
KUBE_VERSION = "1.30.0"
RELEASE = "ck"
NAMESPACE = "imaging"

#: Kinds rendered from third-party CRDs: kubernetes-validate has no schema for them.
CUSTOM_KINDS = {"ServiceMonitor"}
#: Env vars that carry credentials: they must come from a Secret, never a value.
SECRET_ENV = {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "DISCORD_TOKEN", "BOT_SIGNING_KEY"}
#: The bot's optional settings: rendered only when set in values (else the bot's own default applies).
BOT_OPTIONAL_ENV = {
    "BOT_MODERATOR_ROLES",
    "BOT_DENY_PATTERNS",
    "BOT_NSFW_MODELS",
    "BOT_JOB_TTL_SECONDS",
    "DISCORD_GUILD_SYNC",
}
#: What the operator may do to ImageJobs (kopf: watch, patch finalizers and annotations, TTL delete).
OPERATOR_VERBS = {"get", "list", "watch", "patch", "update", "delete"}
BOT_VERBS = {"create", "get", "list", "watch", "patch", "delete"}
READ_VERBS = {"get", "list", "watch"}

GUILD = "123456789012345678"
MODERATOR = "345678901234567890"
#: A comma and backslashes: the chart must pass them through as one JSON array.
DENY_PATTERNS = [r"\bgore\b", "bl(oo|ee)d{1,2}", "[\"']nude"]
WORKFLOW_JSON = json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1}}})

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "bot": {
        "bot": {"enabled": True, "existingSecret": "comfykube-discord", "allowedGuilds": [GUILD]},
    },
    "one-namespace": {
        "watch": {"namespaces": ["jobs"]},
        "bot": {"enabled": True, "existingSecret": "comfykube-discord"},
        "operator": {"defaultTimeoutSeconds": 3600},
    },
    "all-namespaces": {
        "watch": {"allNamespaces": True},
        "comfyui": {
            "url": "http://comfyui-0.comfyui.gpu:8188, http://comfyui-1.comfyui.gpu:8188",
            "discovery": {"enabled": True, "namespace": "gpu", "service": "comfyui"},
        },
        "minio": {
            "publicEndpoint": "https://images.example.com",
            "secure": True,
            "region": "eu-west-1",
            "existingSecret": "minio-user",
            "accessKeyKey": "rootUser",
            "secretKeyKey": "rootPassword",
        },
        "operator": {"crdDiscovery": True, "podAnnotations": {"team": "imaging"}},
        "bot": {
            "enabled": True,
            "existingSecret": "comfykube-discord",
            "namespace": "discord",
            "allowedChannels": ["234567890123456789"],
        },
        "extraWorkflows": {"t2i_portrait.json": WORKFLOW_JSON},
        "metrics": {"service": {"enabled": True}, "serviceMonitor": {"enabled": True}},
        "networkPolicy": {"enabled": True},
    },
    "bot-tuned": {
        "bot": {
            "enabled": True,
            "existingSecret": "comfykube-discord",
            "tokenKey": "discord-token",
            "signingKeyKey": "signing-key",
            "moderatorRoles": [MODERATOR],
            "allowDms": True,
            "denyPatterns": DENY_PATTERNS,
            "nsfwModels": ["*nsfw*", "pony*"],
            "editIntervalSeconds": 0.5,
            "baseSize": 1024,
            "checkpointRefreshSeconds": 120,
            "jobTtlSeconds": 0,
            "guildSync": [GUILD],
            "syncCommands": False,
            "metricsPort": 9191,
        },
        "minio": {"publicEndpoint": "https://images.example.com", "region": "eu-west-1"},
        "operator": {"presignExpirySeconds": 7200,
                     "checkpoints": {"deny": ["gore,mix*"], "restricted": ["pony*", "adult/*"]}},
        "metrics": {"service": {"enabled": True}},
        "networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {"matchLabels": {"team": "obs"}}}]},
    },
    # ComfyUI (CPU, one public model) and MinIO from the chart: the quickstart's shape.
    "comfyui-minio": {
        "comfyui": {
            "enabled": True,
            "image": {"repository": "registry.example.org/comfyui-cpu", "tag": "v0.3.64"},
            "args": ["--listen", "0.0.0.0", "--port", "8188", "--cpu",
                     "--extra-model-paths-config", "/etc/comfyui/extra_model_paths.yaml"],
            "models": [{"path": "checkpoints/tiny.safetensors", "sha256": "a" * 64,
                        "url": "https://models.example.org/tiny.safetensors"}],
        },
        "minio": {"enabled": True, "publicEndpoint": "http://127.0.0.1:9000"},
        "bot": {"enabled": True, "existingSecret": "comfykube-discord"},
    },
    # GPUs: two replicas, a GPU each, on GPU nodes, a private model through a Secret, one shared claim.
    "comfyui-gpu": {
        "comfyui": {
            "enabled": True,
            "image": {"repository": "registry.example.org/comfyui-cuda", "digest": "sha256:" + "b" * 64},
            "replicas": 2,
            "gpu": {"count": 1},
            "resources": {"limits": {"memory": "24Gi"}, "requests": {"cpu": "2", "memory": "16Gi"}},
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
                    "matchLabels": {"app.kubernetes.io/component": "comfyui"}}}}]}},
            "models": [{"path": "checkpoints/sdxl.safetensors", "sha256": "c" * 64, "urlSecretKey": "sdxlUrl",
                        "headersSecretKey": "hfHeaders"}],
            "modelsSecret": "model-tokens",
            "persistence": {"existingClaim": "shared-models"},
        },
        "minio": {"enabled": True, "existingSecret": "my-minio-root"},
        "networkPolicy": {"enabled": True},
    },
    "bot-no-metrics": {
        "bot": {"enabled": True, "existingSecret": "comfykube-discord", "metricsPort": 0},
        "metrics": {"service": {"enabled": True}, "serviceMonitor": {"enabled": True}},
        "networkPolicy": {"enabled": True},
    },
}


@pytest.fixture(scope="module")
def chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


_RENDERED: dict[str, tuple[list[dict[str, Any]], str]] = {}


def render(chart: helm.Chart, scenario: str) -> tuple[list[dict[str, Any]], str]:
    """Parsed manifests (NOTES.txt excluded) and the NOTES text, cached per scenario."""
    if scenario not in _RENDERED:
        files = chart.render(SCENARIOS[scenario], name=RELEASE, namespace=NAMESPACE, is_install=True)
        docs: list[dict[str, Any]] = []
        notes = ""
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                notes = text
                continue
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
        _RENDERED[scenario] = (docs, notes)
    return _RENDERED[scenario]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (found,) = [
        d for d in of_kind(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


def container(dep: dict[str, Any]) -> dict[str, Any]:
    (only,) = dep["spec"]["template"]["spec"]["containers"]
    return only


def env_of(ctr: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in ctr.get("env", [])}


def rules_of(docs: list[dict[str, Any]], kind: str, name_suffix: str) -> list[dict[str, Any]]:
    roles = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    return [rule for role in roles for rule in role["rules"]]


def verbs_for(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {
        verb for rule in rules if group in rule["apiGroups"] and resource in rule["resources"] for verb in rule["verbs"]
    }


# --------------------------------------------------------------------------- render, lint, validate


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_strict_lint_is_clean(scenario: str) -> None:
    report = helm.lint(CHART_DIR, SCENARIOS[scenario], strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [], report
    assert problems == [], problems


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_document_passes_strict_kubernetes_validation(chart: helm.Chart, scenario: str) -> None:
    docs, _ = render(chart, scenario)
    assert docs
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CUSTOM_KINDS:
            with pytest.raises(SchemaNotFoundError):
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{scenario}: {where}: {exc}")
        assert doc["metadata"].get("namespace") or doc["kind"].startswith("Cluster"), where


def test_default_install_renders_the_operator_only(chart: helm.Chart) -> None:
    docs, _ = render(chart, "default")
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == ["Deployment", "Role", "RoleBinding", "ServiceAccount"]
    assert deployment(docs, "operator")["spec"]["replicas"] == 1


def test_optional_parts_render_when_enabled(chart: helm.Chart) -> None:
    docs, _ = render(chart, "all-namespaces")
    kinds = {doc["kind"] for doc in docs}
    assert {"Service", "ServiceMonitor", "NetworkPolicy", "ConfigMap"} <= kinds
    assert len(of_kind(docs, "Deployment")) == 2
    # One metrics Service and one ServiceMonitor per component, each selecting its own pods.
    services = {svc["metadata"]["labels"]["app.kubernetes.io/component"]: svc for svc in of_kind(docs, "Service")}
    monitors = {m["metadata"]["labels"]["app.kubernetes.io/component"]: m for m in of_kind(docs, "ServiceMonitor")}
    assert set(services) == set(monitors) == {"operator", "bot"}
    for component, svc in services.items():
        selector = deployment(docs, component)["spec"]["selector"]["matchLabels"]
        assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
        assert svc["spec"]["selector"] == selector
        ports = {p["name"] for p in container(deployment(docs, component))["ports"]}
        assert "metrics" in ports, component
        monitor = monitors[component]
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert monitor["spec"]["selector"]["matchLabels"] == selector
        assert selector.items() <= svc["metadata"]["labels"].items()
    assert services["bot"]["metadata"]["name"] == "ck-comfykube-bot-metrics"
    assert len(of_kind(docs, "NetworkPolicy")) == 2


# --------------------------------------------------------------------------- the CRD


def imagejob_examples(chart: helm.Chart) -> dict[str, dict[str, Any]]:
    """The ImageJobs people are told to apply: in NOTES.txt and in docs/helm.md."""
    _, notes = render(chart, "default")
    from_notes = textwrap.dedent(notes.split("apply -f -\n", 1)[1].split("   YAML", 1)[0])
    doc_text = DOCS.read_text()
    from_docs = doc_text.split("kubectl -n imaging apply -f -\n", 1)[1].split("\nYAML\n", 1)[0]
    return {"NOTES.txt": yaml.safe_load(from_notes), "docs/helm.md": yaml.safe_load(from_docs)}


def test_documented_imagejobs_are_valid(chart: helm.Chart) -> None:
    for where, job in imagejob_examples(chart).items():
        assert (job["apiVersion"], job["kind"]) == ("comfykube.dev/v1alpha1", "ImageJob"), where
        parse_spec(job["spec"])  # the operator accepts the example as written
        if CHART_CRD.exists():
            crd = yaml.safe_load(CHART_CRD.read_text().split("\n---\n")[0])
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
            schema = version["schema"]["openAPIV3Schema"]
            jsonschema.Draft4Validator(schema).validate({"spec": job["spec"]})


def test_chart_crd_is_identical_to_the_generated_one() -> None:
    if not REPO_CRD.exists():
        pytest.skip("crds/imagejob.yaml is not generated yet (`comfykube crd` writes it); nothing to compare")
    assert CHART_CRD.exists(), "copy crds/imagejob.yaml to charts/comfykube/crds/imagejob.yaml"
    assert CHART_CRD.read_bytes() == REPO_CRD.read_bytes(), (
        "charts/comfykube/crds/imagejob.yaml differs from crds/imagejob.yaml: copy it again"
    )
    for doc in yaml.safe_load_all(CHART_CRD.read_text()):
        if doc:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


# --------------------------------------------------------------------------- the operator's process


def test_operator_runs_in_the_release_namespace_by_default(chart: helm.Chart) -> None:
    docs, _ = render(chart, "default")
    dep = deployment(docs, "operator")
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    ctr = container(dep)
    assert "command" not in ctr, "the image's ENTRYPOINT (comfykube) must run"
    assert ctr["args"] == [
        "operator", "--namespace", NAMESPACE, "--health-port", "8080", "--metrics-port", "9090",
    ]  # fmt: skip
    env = env_of(ctr)
    assert env["COMFYUI_URL"]["value"] == "http://comfyui.comfyui.svc.cluster.local:8188"
    assert env["MINIO_ENDPOINT"]["value"] == "minio.minio.svc.cluster.local:9000"
    assert env["MINIO_BUCKET"]["value"] == "comfykube"
    assert env["MINIO_SECURE"]["value"] == "false"
    assert env["DEFAULT_TIMEOUT_SECONDS"]["value"] == "600"
    assert env["PRESIGN_EXPIRY_SECONDS"]["value"] == "3600"
    assert env["MAX_INFLIGHT_PER_BACKEND"]["value"] == "4"
    assert env["TMPDIR"]["value"] == "/tmp"
    assert "EXTRA_WORKFLOWS_DIR" not in env
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert ctr["resources"]["requests"] and ctr["resources"]["limits"]


def test_operator_args_for_one_and_all_namespaces(chart: helm.Chart) -> None:
    one = container(deployment(render(chart, "one-namespace")[0], "operator"))
    assert one["args"][:3] == ["operator", "--namespace", "jobs"]
    assert "--all-namespaces" not in one["args"]
    assert env_of(one)["DEFAULT_TIMEOUT_SECONDS"]["value"] == "3600"
    every = container(deployment(render(chart, "all-namespaces")[0], "operator"))
    assert every["args"][:2] == ["operator", "--all-namespaces"]
    assert "--namespace" not in every["args"]


def test_operator_env_matches_the_settings_it_reads(chart: helm.Chart) -> None:
    from comfykube.settings import Settings

    known = {name.upper() for name in Settings.model_fields}
    # Read outside Settings: Python's tempfile reads TMPDIR.
    known |= {"TMPDIR"}
    for scenario in SCENARIOS:
        env = env_of(container(deployment(render(chart, scenario)[0], "operator")))
        assert set(env) <= known, f"{scenario}: unknown env {set(env) - known}"
    fields = Settings.model_fields
    values = chart.values
    assert values["operator"]["defaultTimeoutSeconds"] == fields["default_timeout_seconds"].default
    assert values["operator"]["presignExpirySeconds"] == fields["presign_expiry_seconds"].default
    assert values["operator"]["allowRawGraphs"] is fields["allow_raw_graphs"].default is False
    assert env_of(container(deployment(render(chart, "default")[0], "operator")))["ALLOW_RAW_GRAPHS"]["value"] == (
        "false")
    assert values["minio"]["bucket"] == fields["minio_bucket"].default


def test_checkpoint_rules_reach_the_operator_and_the_bots_nsfw_globs_are_never_a_fallback(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    from comfykube.settings import Settings

    env = env_of(container(deployment(render(chart, "bot-tuned")[0], "operator")))
    for name in ("CHECKPOINT_DENY", "CHECKPOINT_RESTRICTED"):
        monkeypatch.setenv(name, env[name]["value"])
    settings = Settings()
    assert settings.checkpoint_deny == ["gore,mix*"]  # a JSON array: the comma survives
    assert settings.checkpoint_restricted == ["pony*", "adult/*", "*nsfw*"]
    assert "CHECKPOINT_ALLOW" not in env
    default = env_of(container(deployment(render(chart, "default")[0], "operator")))
    assert not {"CHECKPOINT_ALLOW", "CHECKPOINT_DENY", "CHECKPOINT_RESTRICTED"} & set(default)
    bot = env_of(container(deployment(render(chart, "bot-tuned")[0], "bot")))
    assert bot["BOT_SIGNING_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "comfykube-discord", "key": "signing-key"}


def test_all_namespaces_operator_settings(chart: helm.Chart) -> None:
    env = env_of(container(deployment(render(chart, "all-namespaces")[0], "operator")))
    assert env["COMFYUI_URL"]["value"].count("http://") == 2
    assert env["MINIO_PUBLIC_ENDPOINT"]["value"] == "https://images.example.com"
    assert env["MINIO_SECURE"]["value"] == "true"
    assert env["MINIO_REGION"]["value"] == "eu-west-1"
    assert env["COMFYUI_DISCOVERY_NAMESPACE"]["value"] == "gpu"


def test_extra_workflows_configmap_is_mounted_where_the_operator_loads_it(chart: helm.Chart) -> None:
    docs, _ = render(chart, "all-namespaces")
    (cm,) = of_kind(docs, "ConfigMap")
    assert json.loads(cm["data"]["t2i_portrait.json"]) == json.loads(WORKFLOW_JSON)
    dep = deployment(docs, "operator")
    ctr = container(dep)
    mount_dir = env_of(ctr)["EXTRA_WORKFLOWS_DIR"]["value"]
    (mount,) = [m for m in ctr["volumeMounts"] if m["mountPath"] == mount_dir]
    assert mount["readOnly"] is True
    (volume,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert "checksum/workflows" in dep["spec"]["template"]["metadata"]["annotations"]


def test_bot_deployment(chart: helm.Chart) -> None:
    docs, _ = render(chart, "bot")
    ctr = container(deployment(docs, "bot"))
    assert ctr["args"] == ["bot", "--health-port", "8081", "--metrics-port", "9091"]
    env = env_of(ctr)
    assert env["BOT_NAMESPACE"]["value"] == NAMESPACE
    assert env["BOT_ALLOWED_GUILDS"]["value"] == GUILD
    assert env["DISCORD_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "comfykube-discord", "key": "token"}
    # Shared with the operator: checkpoint autocomplete, the stored images and fresh presigned links.
    operator_env = env_of(container(deployment(docs, "operator")))
    for name in ("COMFYUI_URL", "MINIO_ENDPOINT", "MINIO_BUCKET", "MINIO_SECURE", "PRESIGN_EXPIRY_SECONDS"):
        assert env[name] == operator_env[name], name
    assert env["COMFYUI_URL"]["value"] == "http://comfyui.comfyui.svc.cluster.local:8188"
    assert env["MINIO_ENDPOINT"]["value"] == "minio.minio.svc.cluster.local:9000"
    assert env["MINIO_BUCKET"]["value"] == "comfykube"
    assert env["MINIO_SECURE"]["value"] == "false"
    assert env["PRESIGN_EXPIRY_SECONDS"]["value"] == "3600"
    assert "MINIO_PUBLIC_ENDPOINT" not in env and "MINIO_REGION" not in env
    for name, key in (("MINIO_ACCESS_KEY", "accessKey"), ("MINIO_SECRET_KEY", "secretKey")):
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": "comfykube-minio", "key": key}}}
    # Optional settings left at their defaults are not rendered.
    assert not BOT_OPTIONAL_ENV & set(env)
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports == {"health": 8081, "metrics": 9091}
    assert env_of(container(deployment(render(chart, "one-namespace")[0], "bot")))["BOT_NAMESPACE"] == {
        "name": "BOT_NAMESPACE",
        "value": "jobs",
    }


def test_bot_settings_from_values_are_rendered(chart: helm.Chart) -> None:
    docs, _ = render(chart, "bot-tuned")
    ctr = container(deployment(docs, "bot"))
    assert ctr["args"] == ["bot", "--health-port", "8081", "--metrics-port", "9191"]
    assert {p["name"]: p["containerPort"] for p in ctr["ports"]} == {"health": 8081, "metrics": 9191}
    env = env_of(ctr)
    plain = {name: item["value"] for name, item in env.items() if "value" in item}
    assert plain["BOT_MODERATOR_ROLES"] == MODERATOR
    assert plain["BOT_ALLOW_DMS"] == "true"
    assert json.loads(plain["BOT_DENY_PATTERNS"]) == DENY_PATTERNS
    assert json.loads(plain["BOT_NSFW_MODELS"]) == ["*nsfw*", "pony*"]
    assert plain["BOT_EDIT_INTERVAL_SECONDS"] == "0.5"
    assert plain["BOT_BASE_SIZE"] == "1024"
    assert plain["BOT_CHECKPOINT_REFRESH_SECONDS"] == "120"
    assert plain["BOT_JOB_TTL_SECONDS"] == "0", "0 (delete at once) is a value, not unset"
    assert plain["DISCORD_GUILD_SYNC"] == GUILD
    assert plain["DISCORD_SYNC_COMMANDS"] == "false"
    assert plain["MINIO_PUBLIC_ENDPOINT"] == "https://images.example.com"
    assert plain["MINIO_REGION"] == "eu-west-1"
    assert plain["PRESIGN_EXPIRY_SECONDS"] == "7200"
    assert env["DISCORD_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "comfykube-discord", "key": "discord-token"}
    # The metrics Service exists for the bot too, and its NetworkPolicy lets only metricsFrom scrape it.
    (svc,) = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == "ck-comfykube-bot-metrics"]
    assert svc["spec"]["selector"] == deployment(docs, "bot")["spec"]["selector"]["matchLabels"]
    assert of_kind(docs, "ServiceMonitor") == []
    (policy,) = [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-bot")]
    (metrics_rule,) = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "metrics"]
    assert metrics_rule["from"] == [{"namespaceSelector": {"matchLabels": {"team": "obs"}}}]


def _bot_env_for_the_process(chart: helm.Chart, scenario: str) -> dict[str, str]:
    """The bot container's environment as the kubelet would set it (Secrets resolved to stand-ins)."""
    env: dict[str, str] = {}
    for name, item in env_of(container(deployment(render(chart, scenario)[0], "bot"))).items():
        env[name] = item["value"] if "value" in item else f"from-secret-{item['valueFrom']['secretKeyRef']['key']}"
    return env


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if SCENARIOS[s].get("bot", {}).get("enabled")])
def test_bot_env_is_what_the_bot_reads(chart: helm.Chart, scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rendered variable is one the bot reads, and the bot parses each rendered value as meant."""
    from comfykube.settings import Settings
    from comfykube_bot.settings import BotSettings

    env = _bot_env_for_the_process(chart, scenario)
    known = {name.upper() for name in BotSettings.model_fields} | {name.upper() for name in Settings.model_fields}
    known |= {"TMPDIR"}
    assert set(env) <= known, f"{scenario}: unknown env {set(env) - known}"
    for name in known:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bot = BotSettings()  # type: ignore[call-arg]  # from the environment
    core = Settings()
    values = SCENARIOS[scenario]["bot"]
    assert bot.discord_token.get_secret_value() == f"from-secret-{values.get('tokenKey', 'token')}"
    minio = {"accessKeyKey": "accessKey", "secretKeyKey": "secretKey", **SCENARIOS[scenario].get("minio", {})}
    assert core.minio_access_key == f"from-secret-{minio['accessKeyKey']}"
    assert core.minio_secret_key == f"from-secret-{minio['secretKeyKey']}"
    assert core.minio_endpoint == env["MINIO_ENDPOINT"]
    assert core.comfyui_urls
    assert bot.bot_moderator_roles == [int(i) for i in values.get("moderatorRoles", [])]
    assert bot.bot_deny_patterns == values.get("denyPatterns", [])
    assert bot.bot_nsfw_models == values.get("nsfwModels", [])
    assert bot.bot_allow_dms is values.get("allowDms", False)
    assert bot.bot_edit_interval_seconds == values.get("editIntervalSeconds", 2)
    assert bot.bot_base_size == values.get("baseSize", 512)
    assert bot.bot_checkpoint_refresh_seconds == values.get("checkpointRefreshSeconds", 60)
    assert bot.bot_job_ttl_seconds == values.get("jobTtlSeconds")
    assert bot.discord_guild_sync == [int(i) for i in values.get("guildSync", [])]
    assert bot.discord_sync_commands is values.get("syncCommands", True)
    # /imagine image: is checked against the operator's input limits, not defaults of its own.
    operator = env_of(container(deployment(render(chart, scenario)[0], "operator")))
    for name in ("INPUT_IMAGE_MAX_BYTES", "INPUT_IMAGE_MAX_PIXELS"):
        assert env[name] == operator[name]["value"], name


def test_bot_defaults_in_values_are_the_bot_defaults(chart: helm.Chart) -> None:
    from comfykube_bot.settings import BotSettings

    fields = BotSettings.model_fields
    bot = chart.values["bot"]
    pairs = {
        "maxActiveJobs": "bot_max_active_jobs",
        "cooldownSeconds": "bot_cooldown_seconds",
        "queueCap": "bot_queue_cap",
        "allowDms": "bot_allow_dms",
        "editIntervalSeconds": "bot_edit_interval_seconds",
        "baseSize": "bot_base_size",
        "checkpointRefreshSeconds": "bot_checkpoint_refresh_seconds",
        "jobTtlSeconds": "bot_job_ttl_seconds",
        "syncCommands": "discord_sync_commands",
    }
    for key, field in pairs.items():
        assert bot[key] == fields[field].default, key
    lists = ("allowedGuilds", "allowedChannels", "allowedRoles", "moderatorRoles", "denyPatterns", "nsfwModels")
    for key in (*lists, "guildSync"):
        assert bot[key] == [], key


def test_bot_metrics_port_zero_disables_the_bot_metrics(chart: helm.Chart) -> None:
    docs, _ = render(chart, "bot-no-metrics")
    ctr = container(deployment(docs, "bot"))
    assert ctr["args"][-2:] == ["--metrics-port", "0"]
    assert [p["name"] for p in ctr["ports"]] == ["health"]
    # The operator's metrics stay; the bot gets no Service, ServiceMonitor or metrics ingress.
    assert [s["metadata"]["name"] for s in of_kind(docs, "Service")] == ["ck-comfykube-metrics"]
    assert [m["metadata"]["name"] for m in of_kind(docs, "ServiceMonitor")] == ["ck-comfykube-operator"]
    (policy,) = [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-bot")]
    assert [r["ports"][0]["port"] for r in policy["spec"]["ingress"]] == ["health"]


def test_bot_sees_the_extra_workflows_the_operator_runs(chart: helm.Chart) -> None:
    docs, _ = render(chart, "all-namespaces")
    operator, bot = deployment(docs, "operator"), deployment(docs, "bot")
    op_ctr, bot_ctr = container(operator), container(bot)
    assert env_of(bot_ctr)["EXTRA_WORKFLOWS_DIR"] == env_of(op_ctr)["EXTRA_WORKFLOWS_DIR"]
    mount_dir = env_of(bot_ctr)["EXTRA_WORKFLOWS_DIR"]["value"]
    (mount,) = [m for m in bot_ctr["volumeMounts"] if m["mountPath"] == mount_dir]
    assert mount["readOnly"] is True
    (volume,) = [v for v in bot["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    (cm,) = of_kind(docs, "ConfigMap")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    checksums = [dep["spec"]["template"]["metadata"]["annotations"]["checksum/workflows"] for dep in (operator, bot)]
    assert checksums[0] == checksums[1], "changing extraWorkflows restarts the bot too"
    assert "EXTRA_WORKFLOWS_DIR" not in env_of(container(deployment(render(chart, "bot")[0], "bot")))


def test_notes_tell_how_to_create_and_watch_an_imagejob(chart: helm.Chart) -> None:
    _, notes = render(chart, "default")
    assert "kind: ImageJob" in notes and "apiVersion: comfykube.dev/v1alpha1" in notes
    assert f"kubectl -n {NAMESPACE} get imagejobs -w" in notes
    _, notes = render(chart, "bot")
    assert "/imagine" in notes


# --------------------------------------------------------------------------- RBAC


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_has_no_wildcards(chart: helm.Chart, scenario: str) -> None:
    docs, _ = render(chart, scenario)
    roles = of_kind(docs, "Role") + of_kind(docs, "ClusterRole")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(field, [])), (role["metadata"]["name"], rule)


def test_one_namespace_gets_a_role_and_no_cluster_rights(chart: helm.Chart) -> None:
    docs, _ = render(chart, "one-namespace")
    assert of_kind(docs, "ClusterRole") == [] and of_kind(docs, "ClusterRoleBinding") == []
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in of_kind(docs, "Role")}
    assert roles == {("jobs", "ck-comfykube-operator"), ("jobs", "ck-comfykube-bot")}
    rules = rules_of(docs, "Role", "-operator")
    assert verbs_for(rules, "comfykube.dev", "imagejobs") == OPERATOR_VERBS
    assert verbs_for(rules, "comfykube.dev", "imagejobs/status") == {"get", "patch", "update"}
    assert verbs_for(rules, "", "events") == {"create", "patch"}
    assert verbs_for(rules, "", "namespaces") == set()
    assert verbs_for(rules, "", "secrets") == set()
    (binding,) = [b for b in of_kind(docs, "RoleBinding") if b["metadata"]["name"].endswith("-operator")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ck-comfykube-operator", "namespace": NAMESPACE}]


def test_all_namespaces_gets_a_cluster_role(chart: helm.Chart) -> None:
    docs, _ = render(chart, "all-namespaces")
    operator_roles = [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("-operator")]
    assert operator_roles == []
    rules = rules_of(docs, "ClusterRole", "-operator")
    assert verbs_for(rules, "comfykube.dev", "imagejobs") == OPERATOR_VERBS
    assert verbs_for(rules, "comfykube.dev", "imagejobs/status") == {"get", "patch", "update"}
    assert verbs_for(rules, "", "events") == {"create", "patch"}
    assert verbs_for(rules, "", "namespaces") == {"list", "watch"}
    crd_rules = rules_of(docs, "ClusterRole", "-crd-discovery")
    assert verbs_for(crd_rules, "apiextensions.k8s.io", "customresourcedefinitions") == READ_VERBS
    # Backend discovery stays namespaced, in the ComfyUI namespace.
    (disc,) = [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("-backend-discovery")]
    assert disc["metadata"]["namespace"] == "gpu"
    assert verbs_for(disc["rules"], "discovery.k8s.io", "endpointslices") == READ_VERBS
    # The bot gets a Role in its own namespace, never cluster rights.
    (bot,) = [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("-bot")]
    assert bot["metadata"]["namespace"] == "discord"
    assert verbs_for(bot["rules"], "comfykube.dev", "imagejobs") == BOT_VERBS
    assert not any("bot" in r["metadata"]["name"] for r in of_kind(docs, "ClusterRole"))


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if SCENARIOS[s].get("bot", {}).get("enabled")])
def test_bot_rbac_is_exactly_what_the_bot_does(chart: helm.Chart, scenario: str) -> None:
    """jobs.py: create, get, list, watch, merge-patch annotations (claim/record), delete; prefs.py: ConfigMaps."""
    docs, _ = render(chart, scenario)
    (role,) = [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("-bot")]
    assert verbs_for(role["rules"], "comfykube.dev", "imagejobs") == BOT_VERBS
    assert {res for rule in role["rules"] for res in rule["resources"]} == {"imagejobs", "configmaps"}
    # /settings (prefs.py): read, create, replace with resourceVersion.
    assert verbs_for(role["rules"], "", "configmaps") == {"get", "create", "update"}
    assert verbs_for(role["rules"], "", "secrets") == set()
    assert verbs_for(role["rules"], "", "events") == set()
    assert verbs_for(role["rules"], "comfykube.dev", "imagejobs/status") == set()


def test_service_accounts_bind_to_their_roles(chart: helm.Chart) -> None:
    docs, _ = render(chart, "all-namespaces")
    accounts = {sa["metadata"]["name"] for sa in of_kind(docs, "ServiceAccount")}
    for dep in of_kind(docs, "Deployment"):
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] in accounts
    for binding in of_kind(docs, "RoleBinding") + of_kind(docs, "ClusterRoleBinding"):
        for subject in binding["subjects"]:
            assert subject["name"] in accounts and subject["namespace"] == NAMESPACE


# --------------------------------------------------------------------------- pod security and secrets


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_is_non_root_with_a_read_only_root_filesystem(chart: helm.Chart, scenario: str) -> None:
    docs, _ = render(chart, scenario)
    for dep in of_kind(docs, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for ctr in pod["containers"] + pod.get("initContainers", []):
            sc = ctr["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc.get("privileged", False) is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            (tmp,) = [m for m in ctr["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp["name"] in tmp_volumes
            assert env_of(ctr)["TMPDIR"]["value"] == "/tmp"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_secrets_are_only_referenced(chart: helm.Chart, scenario: str) -> None:
    docs, _ = render(chart, scenario)
    secrets = of_kind(docs, "Secret")
    if SCENARIOS[scenario].get("minio", {}).get("enabled"):
        # The one exception: the chart's own MinIO gets root keys generated once (see test_minio_*).
        assert [s["metadata"]["name"] for s in secrets] == [SCENARIOS[scenario]["minio"].get(
            "existingSecret", "comfykube-minio")]
    else:
        assert secrets == []
    seen = set()
    for dep in of_kind(docs, "Deployment"):
        for ctr in dep["spec"]["template"]["spec"]["containers"]:
            for name, item in env_of(ctr).items():
                if name in SECRET_ENV:
                    seen.add(name)
                    assert "value" not in item, f"{name} rendered as a plain value"
                    assert set(item["valueFrom"]) == {"secretKeyRef"}
    assert {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"} <= seen
    if SCENARIOS[scenario].get("bot", {}).get("enabled"):
        assert "DISCORD_TOKEN" in seen
    for cm in of_kind(docs, "ConfigMap"):
        assert not SECRET_ENV & set(cm.get("data", {}))


def test_secret_values_have_no_place_in_values(chart: helm.Chart) -> None:
    for bad in (
        {"minio": {"secretKey": "hunter2"}},
        {"minio": {"accessKey": "admin"}},
        {"bot": {"token": "xyz"}},
        {"operator": {"extraEnv": [{"name": "MINIO_SECRET_KEY", "value": "hunter2"}]}},
        {"bot": {"extraEnv": [{"name": "DISCORD_TOKEN", "value": "xyz"}]}},
    ):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)
    by_reference = {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    chart.validate_schema({"operator": {"extraEnv": [by_reference]}})


# --------------------------------------------------------------------------- schema refuses bad values

BAD_VALUES = [
    ({"comfyui": {"url": "ftp://comfyui:8188"}}, "/comfyui/url"),
    ({"comfyui": {"url": "comfyui:8188"}}, "/comfyui/url"),
    ({"comfyui": {"url": ""}}, "/comfyui/url"),
    ({"minio": {"endpoint": "http://minio:9000"}}, "/minio/endpoint"),
    ({"minio": {"endpoint": ""}}, "/minio/endpoint"),
    ({"minio": {"publicEndpoint": "images.example.com"}}, "/minio/publicEndpoint"),
    ({"minio": {"bucket": "My_Bucket"}}, "/minio/bucket"),
    ({"minio": {"secure": "yes"}}, "/minio/secure"),
    ({"minio": {"existingSecret": ""}}, "/minio/existingSecret"),
    ({"operator": {"defaultTimeoutSeconds": "600"}}, "/operator/defaultTimeoutSeconds"),
    ({"operator": {"defaultTimeoutSeconds": 0}}, "/operator/defaultTimeoutSeconds"),
    ({"operator": {"maxInflightPerBackend": 1.5}}, "/operator/maxInflightPerBackend"),
    ({"operator": {"presignExpirySeconds": 30}}, "/operator/presignExpirySeconds"),
    ({"operator": {"presignExpirySeconds": 8 * 24 * 3600}}, "/operator/presignExpirySeconds"),
    ({"operator": {"healthPort": 70000}}, "/operator/healthPort"),
    ({"operator": {"defaultTimeout": 600}}, "/operator"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"watch": {"namespaces": ["Jobs"]}}, "/watch/namespaces/0"),
    ({"watch": {"allNamespaces": True, "namespaces": ["jobs"]}}, "/watch/namespaces"),
    ({"bot": {"enabled": True}}, "/bot/existingSecret"),
    ({"bot": {"allowedGuilds": [123456789012345678]}}, "/bot/allowedGuilds/0"),
    ({"bot": {"maxActiveJobs": 0}}, "/bot/maxActiveJobs"),
    ({"bot": {"metricsPort": 70000}}, "/bot/metricsPort"),
    ({"bot": {"metricsPort": "9091"}}, "/bot/metricsPort"),
    ({"bot": {"allowDms": "yes"}}, "/bot/allowDms"),
    ({"bot": {"syncCommands": "false"}}, "/bot/syncCommands"),
    ({"bot": {"moderatorRoles": [345678901234567890]}}, "/bot/moderatorRoles/0"),
    ({"bot": {"moderatorRoles": ["admins"]}}, "/bot/moderatorRoles/0"),
    ({"bot": {"guildSync": ["12"]}}, "/bot/guildSync/0"),
    ({"bot": {"denyPatterns": "gore,blood"}}, "/bot/denyPatterns"),
    ({"bot": {"denyPatterns": [""]}}, "/bot/denyPatterns/0"),
    ({"bot": {"nsfwModels": ["  "]}}, "/bot/nsfwModels/0"),
    ({"bot": {"nsfwModels": [1]}}, "/bot/nsfwModels/0"),
    ({"bot": {"editIntervalSeconds": 0}}, "/bot/editIntervalSeconds"),
    ({"bot": {"editIntervalSeconds": 61}}, "/bot/editIntervalSeconds"),
    ({"bot": {"editIntervalSeconds": "2s"}}, "/bot/editIntervalSeconds"),
    ({"bot": {"baseSize": 4096}}, "/bot/baseSize"),
    ({"bot": {"baseSize": 512.5}}, "/bot/baseSize"),
    ({"bot": {"checkpointRefreshSeconds": 0.5}}, "/bot/checkpointRefreshSeconds"),
    ({"bot": {"jobTtlSeconds": -1}}, "/bot/jobTtlSeconds"),
    ({"bot": {"jobTtlSeconds": "1h"}}, "/bot/jobTtlSeconds"),
    ({"bot": {"allowDMs": True}}, "/bot"),
    ({"securityContext": {"readOnlyRootFilesystem": False}}, "/securityContext/readOnlyRootFilesystem"),
    ({"securityContext": {"allowPrivilegeEscalation": True}}, "/securityContext/allowPrivilegeEscalation"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    ({"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser"),
    ({"extraWorkflows": {"../evil.json": "{}"}}, "evil"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
    ({"typo": 1}, "typo"),
]


@pytest.mark.parametrize(("override", "pointer"), BAD_VALUES, ids=[p for _, p in BAD_VALUES])
def test_schema_refuses_bad_values(chart: helm.Chart, override: dict[str, Any], pointer: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(override)
    assert pointer in str(caught.value)
    with pytest.raises(helm.HelmError):
        chart.render(override, name=RELEASE, namespace=NAMESPACE, is_install=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_schema_accepts_the_scenarios(chart: helm.Chart, scenario: str) -> None:
    chart.validate_schema(SCENARIOS[scenario])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"bot": {"enabled": True, "existingSecret": "d", "namespace": "other"}}, "is not watched"),
        ({"operator": {"metricsPort": 0}, "metrics": {"serviceMonitor": {"enabled": True}}}, "metricsPort"),
        ({"comfyui": {"discovery": {"enabled": True}}}, "comfyui.discovery.service"),
        ({"operator": {"healthPort": 9090}}, "must differ"),
        ({"bot": {"enabled": True, "existingSecret": "d", "metricsPort": 8081}}, "bot.healthPort and bot.metricsPort"),
    ],
)
def test_templates_refuse_inconsistent_values(chart: helm.Chart, override: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        chart.render(override, name=RELEASE, namespace=NAMESPACE, is_install=True)


def test_metrics_port_zero_disables_metrics(chart: helm.Chart) -> None:
    files = chart.render({"operator": {"metricsPort": 0}}, name=RELEASE, namespace=NAMESPACE)
    docs = [d for p, t in files.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
    ctr = container(deployment(docs, "operator"))
    assert ctr["args"][-2:] == ["--metrics-port", "0"]
    assert [p["name"] for p in ctr["ports"]] == ["health"]


def test_values_file_is_what_the_chart_loads(chart: helm.Chart) -> None:
    on_disk = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert chart.values == on_disk


# --------------------------------------------------------------------------- shards

SHARDED = {
    "watch": {"namespaces": ["jobs-a", "jobs-b"]},
    "operator": {
        "shards": [
            {"name": "a", "selector": "comfykube.dev/shard=a"},
            {"name": "b", "selector": "comfykube.dev/shard in (b)", "namespaces": ["jobs-b"]},
        ],
        "refusedGraceSeconds": 3,
    },
}


def render_values(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [doc for path, text in files.items() if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def test_one_operator_deployment_per_shard(chart: helm.Chart) -> None:
    report = helm.lint(CHART_DIR, SHARDED, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report
    docs = render_values(chart, SHARDED)
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    operators = {
        d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    }
    assert set(operators) == {f"{RELEASE}-comfykube-operator-a", f"{RELEASE}-comfykube-operator-b"}
    a, b = (operators[f"{RELEASE}-comfykube-operator-{n}"] for n in "ab")
    assert container(a)["args"][:7] == ["operator", "--namespace", "jobs-a", "--namespace", "jobs-b",
                                        "--selector", "comfykube.dev/shard=a"]
    assert container(b)["args"][:5] == ["operator", "--namespace", "jobs-b", "--selector", "comfykube.dev/shard in (b)"]
    # Each Deployment owns only its own pods, one replica each.
    assert a["spec"]["selector"]["matchLabels"]["comfykube.dev/shard"] == "a"
    assert b["spec"]["template"]["metadata"]["labels"]["comfykube.dev/shard"] == "b"
    assert a["spec"]["replicas"] == b["spec"]["replicas"] == 1
    assert env_of(container(a))["COMFYUI_REFUSED_GRACE"]["value"] == "3"
    # Every flag the chart passes is one the CLI takes.
    from comfykube.cli import build_parser

    build_parser().parse_args(container(b)["args"])


def test_default_is_one_unsharded_operator_with_the_graces_of_the_settings(chart: helm.Chart) -> None:
    from comfykube.settings import Settings

    ctr = container(deployment(render(chart, "default")[0], "operator"))
    assert "--selector" not in ctr["args"]
    env = env_of(ctr)
    fields = Settings.model_fields
    assert float(env["COMFYUI_UNREACHABLE_GRACE"]["value"]) == fields["comfyui_unreachable_grace"].default
    assert float(env["COMFYUI_REFUSED_GRACE"]["value"]) == fields["comfyui_refused_grace"].default
    assert float(env["FROM_JOB_WAIT_SECONDS"]["value"]) == fields["from_job_wait_seconds"].default


@pytest.mark.parametrize("shards, message", [
    ([{"name": "a", "selector": "x=1"}, {"name": "b"}], "needs a selector or namespaces"),
    ([{"name": "a", "namespaces": ["elsewhere"]}], "not in watch.namespaces"),
])
def test_shards_that_could_overlap_or_lack_rbac_are_refused(
    chart: helm.Chart, shards: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(Exception, match=message):
        render_values(chart, {"operator": {"shards": shards}})
