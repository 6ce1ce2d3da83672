"""The Kubernetes manifests (deploy/k8s/) can't be applied here (no cluster), so check them offline: against
the Kubernetes OpenAPI schemas that kubernetes-validate bundles, and against the code they start."""

from __future__ import annotations

import re
import secrets
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet

from app.cli import build_parser
from app.config import ConfigError, Settings
from app.main import create_app
from tests.test_deploy import _services, _settings_from

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "contactsync"
# The oldest Kubernetes release the manifests are checked against besides the newest the validator knows:
# policy/v1 PodDisruptionBudget (GA in 1.21) and autoscaling/v2 (GA in 1.23) exist there, so older clusters
# still supported by their vendors take these manifests as they are.
OLDEST_VERSION = "1.27"

Doc = dict[str, Any]


def _load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _all_docs() -> list[Doc]:
    return [doc for path in _manifests() for doc in _load(path)]


def _one(kind: str, name: str) -> Doc:
    found = [d for d in _all_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def _workloads() -> list[Doc]:
    return [d for d in _all_docs() if d["kind"] in ("Deployment", "Job")]


def _containers() -> list[tuple[str, Doc]]:
    return [(w["metadata"]["name"], c) for w in _workloads() for c in _pod_spec(w)["containers"]]


def _placeholder_free_secret() -> dict[str, str]:
    """The Secret template with its placeholders replaced by generated values, as an operator fills it in."""
    data: dict[str, str] = dict(_one("Secret", "contactsync-secrets")["stringData"])
    data["CONTACTSYNC_SECRET_KEYS"] = Fernet.generate_key().decode()
    data["CONTACTSYNC_ADMIN_TOKEN"] = secrets.token_urlsafe(32)
    data["CONTACTSYNC_DATABASE_URL"] = "postgresql+asyncpg://contactsync:pw@postgres.db:5432/contactsync"
    data["CONTACTSYNC_REDIS_URL"] = "redis://redis.cache:6379/0"
    return data


def _env_of(container: Doc, secret: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom sources in order, then env entries."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_one("ConfigMap", source["configMapRef"]["name"])["data"])
        elif "secretRef" in source:
            assert source["secretRef"]["name"] == "contactsync-secrets"
            env.update(secret)
        else:
            raise AssertionError(f"unexpected envFrom source {source}")
    for item in container.get("env", []):
        env[item["name"]] = item["value"]
    return env


# --- Schemas --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [OLDEST_VERSION, kubernetes_validate.latest_version()])
@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    docs = _load(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        # strict: an unknown or misspelt field (e.g. `readinesProbe`) fails instead of being ignored.
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_refuses_a_misspelt_field() -> None:
    """The check above is not vacuous: the bundled schemas reject what a cluster would reject."""
    doc = _one("Deployment", "contactsync-api")
    broken = yaml.safe_load(yaml.safe_dump(doc))
    container = _pod_spec(broken)["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_the_manifest_set_is_complete_and_in_one_namespace() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _all_docs()}
    assert kinds == {
        ("Namespace", NAMESPACE),
        ("ConfigMap", "contactsync-config"),
        ("Secret", "contactsync-secrets"),
        ("Job", "contactsync-migrate"),
        ("Deployment", "contactsync-api"),
        ("Service", "contactsync-api"),
        ("PodDisruptionBudget", "contactsync-api"),
        ("HorizontalPodAutoscaler", "contactsync-api"),
        ("Deployment", "contactsync-worker"),
        ("PodDisruptionBudget", "contactsync-worker"),
    }
    for doc in _all_docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def test_kustomization_lists_every_manifest_but_the_secret_template_and_the_job() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    for name in resources:
        assert (K8S / name).is_file(), name
    # The placeholder Secret would overwrite the real one; the Job must finish before the Deployments roll.
    assert set(resources) == {p.name for p in _manifests()} - {"secret.example.yaml", "migrate-job.yaml"}


def test_selectors_match_their_pods() -> None:
    for kind in ("Deployment", "PodDisruptionBudget"):
        for doc in (d for d in _all_docs() if d["kind"] == kind):
            selector = doc["spec"]["selector"]["matchLabels"]
            target = _one("Deployment", doc["metadata"]["name"])["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= target.items(), doc["metadata"]["name"]
    service = _one("Service", "contactsync-api")
    api = _one("Deployment", "contactsync-api")
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"] for p in _pod_spec(api)["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    worker_labels = _one("Deployment", "contactsync-worker")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= worker_labels.items(), (
        "the Service must not reach workers"
    )


# --- Against the code -----------------------------------------------------------------------------------------


def test_every_container_command_is_a_real_cli_command() -> None:
    parser = build_parser()
    commands = {}
    for name, container in _containers():
        command = container["command"]
        assert command[0] == "contactsync", name
        args = parser.parse_args(command[1:])  # SystemExit on an unknown command or flag
        commands[name] = (command[1], args)
    assert {name: sub for name, (sub, _) in commands.items()} == {
        "contactsync-migrate": "migrate",
        "contactsync-api": "serve",
        "contactsync-worker": "worker",
    }
    # The ports the probes and the Service use are the ones the processes listen on.
    assert commands["contactsync-api"][1].port == _container_port("contactsync-api", "http")
    assert commands["contactsync-api"][1].host == "0.0.0.0"
    assert commands["contactsync-worker"][1].metrics_port == _container_port("contactsync-worker", "metrics")


def _container_port(workload: str, name: str) -> int:
    (container,) = _pod_spec(_one("Deployment", workload))["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return int(ports[name])


def test_the_commands_are_the_compose_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = _services(compose)
    by_workload = {name: c["command"] for name, c in _containers()}
    assert by_workload["contactsync-migrate"] == services["migrate"]["command"]
    assert by_workload["contactsync-api"] == services["api"]["command"]
    assert by_workload["contactsync-worker"] == services["worker"]["command"]


def test_environment_names_are_settings() -> None:
    fields = {f"CONTACTSYNC_{name.upper()}" for name in Settings.model_fields}
    config = set(_one("ConfigMap", "contactsync-config")["data"])
    secret = set(_one("Secret", "contactsync-secrets")["stringData"])
    assert not (config - fields), config - fields
    assert not (secret - fields), secret - fields
    assert not (config & secret), "a setting in both would depend on envFrom order"
    # Secrets, and URLs that carry passwords, only in the Secret.
    for name in (
        "CONTACTSYNC_SECRET_KEYS",
        "CONTACTSYNC_ADMIN_TOKEN",
        "CONTACTSYNC_DATABASE_URL",
        "CONTACTSYNC_REDIS_URL",
    ):
        assert name in secret, name


def test_filled_in_secret_and_configmap_build_valid_production_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = _placeholder_free_secret()
    for name, container in _containers():
        settings = _settings_from(_env_of(container, secret), monkeypatch)
        assert settings.env.value == "production", name
        assert settings.database_url == secret["CONTACTSYNC_DATABASE_URL"]
        assert settings.redis_url == secret["CONTACTSYNC_REDIS_URL"]
        assert settings.admin_token.get_secret_value() == secret["CONTACTSYNC_ADMIN_TOKEN"]
        assert settings.effective_log_format == "json"
        assert settings.public_url.startswith("https://")


def test_the_secret_template_holds_placeholders_that_production_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    template: dict[str, str] = _one("Secret", "contactsync-secrets")["stringData"]
    for name, value in template.items():
        # "replace-me" is one of the markers production refuses wherever it appears (app/security/strength.py).
        assert "REPLACE-ME" in value, f"{name} must be a marked placeholder, never a real value"
    (_, api) = next(c for c in _containers() if c[0] == "contactsync-api")
    with pytest.raises(ConfigError) as info:
        _settings_from(_env_of(api, template), monkeypatch)
    message = str(info.value)
    assert "CONTACTSYNC_ADMIN_TOKEN" in message
    assert "CONTACTSYNC_SECRET_KEYS" in message


def test_probe_paths_are_routes_of_the_app() -> None:
    # The OpenAPI document lists every route the app serves (the health routes are in it).
    paths = create_app(Settings(_env_file=None)).openapi()["paths"]  # type: ignore[call-arg]
    (api,) = _pod_spec(_one("Deployment", "contactsync-api"))["containers"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        path = api[probe]["httpGet"]["path"]
        assert "get" in paths.get(path, {}), f"{probe}: GET {path} is not a route"
        assert api[probe]["httpGet"]["port"] == "http"


def test_worker_grace_period_exceeds_the_job_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _one("Deployment", "contactsync-worker")
    (container,) = _pod_spec(worker)["containers"]
    settings = _settings_from(_env_of(container, _placeholder_free_secret()), monkeypatch)
    grace = _pod_spec(worker)["terminationGracePeriodSeconds"]
    assert grace > settings.worker_job_timeout, (grace, settings.worker_job_timeout)


def test_images_agree_with_compose_and_the_package_version() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    images = {_services(compose)[name].get("image") for name in ("migrate", "api", "worker")}
    assert len(images) == 1, images
    assert None not in images, "compose must name the image it builds"
    (image,) = images
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image == f"contactsync:{version}"
    for name, container in _containers():
        assert container["image"] == image, name


def test_pods_run_as_the_images_non_root_user_with_a_read_only_root() -> None:
    uid = int(re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))  # type: ignore[union-attr]
    assert uid != 0
    for workload in _workloads():
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod["automountServiceAccountToken"] is False
        mounts_tmp = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert any(
                m["mountPath"] == "/tmp" and m["name"] in mounts_tmp for m in container["volumeMounts"]
            )


def test_resources_replicas_disruption_budgets_and_autoscaler() -> None:
    for _, container in _containers():
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"])
        assert "memory" in resources["limits"]
    api = _one("Deployment", "contactsync-api")
    assert api["spec"]["replicas"] >= 2
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = _one("HorizontalPodAutoscaler", "contactsync-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "contactsync-api",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"  # Utilization needs the CPU request checked above
    # The API PDB must leave a pod to evict at the minimum replica count, or node drains block forever.
    assert _one("PodDisruptionBudget", "contactsync-api")["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert _one("PodDisruptionBudget", "contactsync-worker")["spec"]["maxUnavailable"] >= 1
    job = _one("Job", "contactsync-migrate")
    assert _pod_spec(job)["restartPolicy"] == "Never"


def test_the_deploy_guide_matches_the_manifests_and_names_real_files() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    worker = _one("Deployment", "contactsync-worker")
    hpa = _one("HorizontalPodAutoscaler", "contactsync-api")
    config = _one("ConfigMap", "contactsync-config")["data"]
    assert f"terminationGracePeriodSeconds: {_pod_spec(worker)['terminationGracePeriodSeconds']}" in guide
    assert f"job timeout ({config['CONTACTSYNC_WORKER_JOB_TIMEOUT']} s)" in guide
    assert f"the HPA's maximum ({hpa['spec']['maxReplicas']})" in guide
    pool = config["CONTACTSYNC_DB_POOL_SIZE"]
    assert f"`CONTACTSYNC_DB_POOL_SIZE`** (default {pool};" in guide
    assert int(pool) == Settings.model_fields["db_pool_size"].default
    image = _pod_spec(worker)["containers"][0]["image"]
    assert f"`{image}`" in guide
    # Every repository path the guide cites exists (app/…, tests/…, deploy/…, docs/…, migrations/…).
    cited = set(re.findall(r"`((?:app|tests|deploy|docs|migrations)/[\w./-]*)`", guide))
    assert len(cited) > 10, cited
    for path in cited:
        assert (ROOT / path).exists() or list(ROOT.glob(path + "*")), path
    # The migration it names as not additive is a real one that drops a table.
    drop = (ROOT / "migrations" / "versions" / "2026-11-30_drop_worker_heartbeat.py").read_text()
    assert "`2026-11-30_drop_worker_heartbeat` drops a table" in guide
    assert "op.drop_table(" in drop.split("def downgrade")[0]
