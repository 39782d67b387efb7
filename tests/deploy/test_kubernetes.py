"""deploy/k8s/base: the rendered manifests against the Kubernetes schemas, and what they must say."""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from accounts.config import Settings
from tests.deploy.support import DOCKERFILE, KUSTOMIZE_BASE, ROOT, parse_dockerfile, pod_spec

# The oldest Kubernetes these files promise to work on, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
SETTINGS = {name.upper() for name in Settings.__struct_fields__}
EXPECTED = {
    ("ServiceAccount", "accounts"),
    ("ConfigMap", "accounts-config"),
    ("PersistentVolumeClaim", "accounts-data"),
    ("Job", "accounts-migrate"),
    ("Deployment", "accounts-api"),
    ("Service", "accounts"),
    ("HorizontalPodAutoscaler", "accounts-api"),
    ("PodDisruptionBudget", "accounts-api"),
    ("Deployment", "accounts-worker"),
}

Doc = dict[str, Any]


def workloads(manifests: list[Doc]) -> list[Doc]:
    return [doc for doc in manifests if pod_spec(doc) is not None]


def containers(manifests: list[Doc]) -> list[tuple[Doc, Doc, Doc]]:
    """(workload, pod spec, container) for every container of every workload."""
    found = []
    for doc in workloads(manifests):
        pod = pod_spec(doc)
        assert pod is not None
        found += [(doc, pod, container) for container in [*pod.get("initContainers", []), *pod["containers"]]]
    return found


def secret_example() -> Doc:
    document: Doc = yaml.safe_load((KUSTOMIZE_BASE / "secret.example.yaml").read_text())
    return document


def env_of(container: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container.get("env", [])}


def test_renders_the_expected_objects(by_kind_name: dict[tuple[str, str], Doc], manifests: list[Doc]) -> None:
    assert set(by_kind_name) == EXPECTED
    assert len(manifests) == len(EXPECTED)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(manifests: list[Doc], version: str) -> None:
    for doc in [*manifests, secret_example()]:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_is_live(by_kind_name: dict[tuple[str, str], Doc]) -> None:
    broken = json.loads(json.dumps(by_kind_name["Deployment", "accounts-api"]))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/health/live"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_secret_is_an_example_only() -> None:
    kustomization = yaml.safe_load((KUSTOMIZE_BASE / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization["resources"]
    secret = secret_example()
    assert secret["kind"] == "Secret"
    assert "CHANGE-ME" in secret["stringData"]["database-url"]
    assert "kubectl create secret generic" in (KUSTOMIZE_BASE / "secret.example.yaml").read_text()


def test_every_container_runs_the_tagged_image(manifests: list[Doc]) -> None:
    images = {container["image"] for _, _, container in containers(manifests)}
    assert len(images) == 1
    (image,) = images
    assert re.fullmatch(r"[\w.\-/]+:[\w.\-]+", image), image
    assert not image.endswith(":latest"), image


def test_every_container_has_requests_and_limits(manifests: list[Doc]) -> None:
    for doc, _, container in containers(manifests):
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, (doc["metadata"]["name"], kind)


def test_every_pod_is_locked_down(manifests: list[Doc]) -> None:
    (user,) = parse_dockerfile(DOCKERFILE.read_text())[-1].all("USER")
    uid = int(user.split(":")[0])
    for doc, pod, container in containers(manifests):
        where = f"{doc['metadata']['name']}/{container['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == uid, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert context["runAsUser"] == uid, where
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["capabilities"] == {"drop": ["ALL"]}, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be writable"  # noqa: S108


def test_settings_are_real_settings(by_kind_name: dict[tuple[str, str], Doc], manifests: list[Doc]) -> None:
    """A misspelt variable is silently ignored by the service: every name must be a field of Settings."""
    config = by_kind_name["ConfigMap", "accounts-config"]["data"]
    assert set(config) <= SETTINGS, set(config) - SETTINGS
    assert all(isinstance(value, str) for value in config.values())
    assert config["HOST"] == "0.0.0.0"  # noqa: S104 - in a pod, as it must
    assert config["MIGRATE_ON_START"] == "false", "the Job migrates; replicas never race to"
    for _, _, container in containers(manifests):
        assert set(env_of(container)) <= SETTINGS, set(env_of(container)) - SETTINGS
        assert [ref["configMapRef"]["name"] for ref in container["envFrom"]] == ["accounts-config"]


def test_secrets_come_from_the_secret_by_reference(
    manifests: list[Doc], by_kind_name: dict[tuple[str, str], Doc]
) -> None:
    example = secret_example()
    keys = set(example["stringData"])
    for doc, pod, container in containers(manifests):
        env = env_of(container)
        database = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert (database["name"], database["key"]) == (example["metadata"]["name"], "database-url")
        for item in env.values():
            if "valueFrom" in item and "secretKeyRef" in item["valueFrom"]:
                assert item["valueFrom"]["secretKeyRef"]["key"] in keys, item
        assert not any("value" in item for item in env.values() if item["name"] in {"DATABASE_URL", "REDIS_URL"})
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["secretName"] == example["metadata"]["name"], doc["metadata"]["name"]
                assert {item["key"] for item in volume["secret"]["items"]} <= keys


@pytest.mark.parametrize("name", ["accounts-api", "accounts-worker"])
def test_api_and_worker_read_the_signing_key_and_share_the_data_folder(
    by_kind_name: dict[tuple[str, str], Doc], name: str
) -> None:
    config = by_kind_name["ConfigMap", "accounts-config"]["data"]
    pod = by_kind_name["Deployment", name]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    data = volumes[mounts[config["DATA_DIR"]]]
    claim = by_kind_name["PersistentVolumeClaim", data["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "API and worker pods read each other's files"
    key_dir, _, key_file = config["JWT_SIGNING_KEY_FILE"].rpartition("/")
    secret = volumes[mounts[key_dir]]["secret"]
    assert [item["path"] for item in secret["items"]] == [key_file]
    assert secret["defaultMode"] == 0o440, "readable by the pod's fsGroup, not by the world"
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > int(config["SHUTDOWN_DRAIN_SECONDS"]) + int(config["SHUTDOWN_TIMEOUT"])
    assert "lifecycle" not in container, "the drain is SHUTDOWN_DRAIN_SECONDS: a preStop pause would add to it"


def test_api_probes_ask_the_real_health_routes(by_kind_name: dict[tuple[str, str], Doc]) -> None:
    openapi = json.loads((ROOT / "tests" / "contract" / "openapi.json").read_text())
    config = by_kind_name["ConfigMap", "accounts-config"]["data"]
    (container,) = by_kind_name["Deployment", "accounts-api"]["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": int(config["PORT"])}
    expected = {"startupProbe": "/health/live", "livenessProbe": "/health/live", "readinessProbe": "/health/ready"}
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
        assert "get" in openapi["paths"][path], path
    ready_timeout = float(config["READY_TIMEOUT"])
    assert container["readinessProbe"]["timeoutSeconds"] > ready_timeout
    assert container["command"] == ["accounts", "serve"]


def test_web_concurrency_follows_the_cpu_limit(by_kind_name: dict[tuple[str, str], Doc]) -> None:
    (container,) = by_kind_name["Deployment", "accounts-api"]["spec"]["template"]["spec"]["containers"]
    source = env_of(container)["WEB_CONCURRENCY"]["valueFrom"]["resourceFieldRef"]
    assert source == {"containerName": container["name"], "resource": "limits.cpu", "divisor": "1"}
    assert float(container["resources"]["limits"]["cpu"]) >= 1


def test_service_hpa_and_pdb_select_the_api_pods(by_kind_name: dict[tuple[str, str], Doc]) -> None:
    api = by_kind_name["Deployment", "accounts-api"]
    worker = by_kind_name["Deployment", "accounts-worker"]
    api_labels = api["spec"]["template"]["metadata"]["labels"]
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"].items() <= api_labels.items()
    service = by_kind_name["Service", "accounts"]
    assert service["spec"]["selector"].items() <= api_labels.items()
    assert not service["spec"]["selector"].items() <= worker_labels.items(), "the worker serves nothing"
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = by_kind_name["PodDisruptionBudget", "accounts-api"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= api_labels.items()
    hpa = by_kind_name["HorizontalPodAutoscaler", "accounts-api"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "accounts-api"}
    assert hpa["spec"]["minReplicas"] >= 2, "so the PDB lets a node drain without an outage"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "replicas" not in api["spec"], "the HPA owns the replica count; a fixed one would fight it on apply"
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_worker_runs_jobs_and_serves_only_its_metrics(by_kind_name: dict[tuple[str, str], Doc]) -> None:
    (container,) = by_kind_name["Deployment", "accounts-worker"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["accounts", "worker"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": Settings().worker_metrics_port}
    assert "REDIS_URL" in env_of(container)


def test_the_migration_job_upgrades_the_database_once(by_kind_name: dict[tuple[str, str], Doc]) -> None:
    job = by_kind_name["Job", "accounts-migrate"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["accounts", "database", "upgrade", "--no-prompt"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["backoffLimit"] <= 3
    assert "activeDeadlineSeconds" in job["spec"]
