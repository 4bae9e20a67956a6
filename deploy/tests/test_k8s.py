"""k8s/: the kustomize bases and overlays for a local cluster build, every
object is valid for the supported Kubernetes versions, and the chart's
development values fit them."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import chart as chartlib

K8S = chartlib.REPO / "k8s"
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
DEV_VALUES = chartlib.REPO / "deploy" / "dev-values.yaml"


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.fail("kubectl is not installed: `kubectl kustomize` builds k8s/")
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.load_all(result.stdout, Loader=chartlib.YAML_LOADER) if d]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {str(p.relative_to(K8S)): kustomize(p) for p in KUSTOMIZATIONS}


def test_there_is_a_base_and_an_overlay() -> None:
    assert [str(p.relative_to(K8S)) for p in KUSTOMIZATIONS] == ["base", "overlays/persistent"]


@pytest.mark.parametrize("path", [str(p.relative_to(K8S)) for p in KUSTOMIZATIONS])
def test_every_object_is_valid(path: str, built: dict[str, list[dict[str, Any]]]) -> None:
    docs = built[path]
    assert docs
    chartlib.validate_all(docs)


def test_a_planted_unknown_field_is_rejected(tmp_path: Path) -> None:
    planted = tmp_path / "k8s"
    shutil.copytree(K8S, planted)
    redis = planted / "base" / "redis.yaml"
    redis.write_text(redis.read_text().replace("readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"))
    with pytest.raises(chartlib.InvalidManifest, match="readOnlyRootFileSystem"):
        chartlib.validate_all(kustomize(planted / "base"))


def test_datastores_and_management_ui_are_there(built: dict[str, list[dict[str, Any]]]) -> None:
    docs = built["base"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Namespace", "telenet-dev") in kinds
    for name in ("postgres", "rabbitmq", "redis"):
        assert ("Service", name) in kinds
    rabbitmq = chartlib.by_kind(docs, "Service")["rabbitmq"]
    assert {p["port"] for p in rabbitmq["spec"]["ports"]} == {5672, 15672}
    image = chartlib.container(chartlib.by_kind(docs, "StatefulSet")["rabbitmq"])["image"]
    assert image.endswith("-management")
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "telenet-dev", chartlib.describe(d)
    for workload in [d for d in docs if d["kind"] in chartlib.WORKLOAD_KINDS]:
        pod = chartlib.pod_specs(workload)[0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False


def test_overlay_keeps_data_in_claims(built: dict[str, list[dict[str, Any]]]) -> None:
    sets = chartlib.by_kind(built["overlays/persistent"], "StatefulSet")
    for name in ("postgres", "rabbitmq"):
        claims = [c["metadata"]["name"] for c in sets[name]["spec"]["volumeClaimTemplates"]]
        assert claims == ["data"]
        volumes = [v["name"] for v in sets[name]["spec"]["template"]["spec"].get("volumes", [])]
        assert "data" not in volumes


def test_dev_values_point_at_the_secret_the_base_creates(built: dict[str, list[dict[str, Any]]]) -> None:
    values = chartlib.deep_merge(
        yaml.safe_load((chartlib.CHART / "values.yaml").read_text()), yaml.safe_load(DEV_VALUES.read_text())
    )
    secrets = chartlib.by_kind(built["base"], "Secret")
    for store, scheme in (("database", "postgres://"), ("rabbitmq", "amqp://"), ("redis", "redis://")):
        secret = secrets[values[store]["existingSecret"]]
        url = base64.b64decode(secret["data"][values[store]["existingSecretKey"]]).decode()
        assert url.startswith(scheme), (store, url)
    # The URLs name the base's Services.
    services = set(chartlib.by_kind(built["base"], "Service"))
    for key in ("database-url", "bus-url", "presence-url"):
        url = base64.b64decode(secrets["telenet-datastores"]["data"][key]).decode()
        host = url.split("@")[-1].split("//")[-1].split(":")[0].split("/")[0]
        assert host in services, (key, host)


def test_dev_values_render_a_valid_release() -> None:
    docs = chartlib.render(chartlib.load_values(DEV_VALUES), namespace="telenet-dev")
    chartlib.validate_all(docs)
    for deployment in chartlib.by_kind(docs, "Deployment").values():
        assert chartlib.container(deployment)["image"] == "telenet-dev:dev"
