"""The Helm chart: lint, render with every ci/ values file, schema-validate
every manifest, and check what the chart promises, including that planted
mistakes are caught."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

import chart as chartlib
from chart import SERVICES, by_kind, container, env_of

CI_NAMES = [p.name for p in chartlib.CI_VALUES]


def with_values(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """`base` with dotted-path overrides: with_values(v, **{"a.b": 1})."""
    out = copy.deepcopy(base)
    for path, value in overrides.items():
        node = out
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def lint(values: dict[str, Any] | None, kube_version: str = "v1.25.0") -> dict[str, Any]:
    return helm.lint(str(chartlib.CHART), values, strict=True, kube_version=kube_version)


# --- Every ci/ values file ---------------------------------------------------


def test_there_are_ci_values_files() -> None:
    assert len(CI_NAMES) >= 5, CI_NAMES


def test_a_newer_api_field_fails_on_the_oldest_supported_kubernetes(
    ci_renders: dict[str, list[dict[str, Any]]],
) -> None:
    # production-values.yaml uses preStop `sleep` (Kubernetes 1.30): the
    # validation of 1.25 manifests must see it.
    with pytest.raises(chartlib.InvalidManifest, match="sleep"):
        chartlib.validate_all(ci_renders["production-values.yaml"], ("1.25.0",))


@pytest.mark.parametrize("name", CI_NAMES)
@pytest.mark.parametrize("kube_version", ["v1.25.0", "v1.33.0"])
def test_lint_is_clean_in_strict_mode(name: str, kube_version: str) -> None:
    report = lint(chartlib.load_values(chartlib.CHART / "ci" / name), kube_version)
    assert report["errors"] == [], report["messages"]
    warnings = [m for m in report["messages"] if m["severity"] >= 2]
    assert warnings == []


@pytest.mark.parametrize("name", CI_NAMES)
def test_every_manifest_is_valid_for_every_supported_kubernetes(
    name: str, ci_renders: dict[str, list[dict[str, Any]]]
) -> None:
    docs = ci_renders[name]
    assert docs, "nothing rendered"
    oldest = chartlib.min_kube_version(chartlib.CHART / "ci" / name)
    chartlib.validate_all(docs, (oldest, chartlib.KUBE_VERSIONS[-1]) if oldest else chartlib.KUBE_VERSIONS)


@pytest.mark.parametrize("name", CI_NAMES)
def test_every_pod_is_locked_down(name: str, ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    assert chartlib.policy_violations(ci_renders[name]) == []


@pytest.mark.parametrize("name", CI_NAMES)
def test_every_object_names_its_namespace(name: str, ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    # `helm template` does not add namespaces; scanners and `kubectl apply`
    # of the rendered output need them.
    assert [chartlib.describe(d) for d in ci_renders[name] if not d["metadata"].get("namespace")] == []


# --- Planted mistakes --------------------------------------------------------

WRONG_VALUES = {
    "replica count as text": {"defaults.replicaCount": "three"},
    "negative replicas": {"services.gateway.replicaCount": -1},
    "setting of the wrong type": {"settings": {"dispatch": {"concurrency": "many"}}},
    "misspelt setting": {"settings": {"dispatch": {"concurency": 8}}},
    "duration without unit": {"settings": {"dispatch": {"http_timeout": 15}}},
    "unknown log format": {"logs.format": "xml"},
    "database that is not PostgreSQL": {"database.url": "mysql://db/telenet"},
    "broker URL that is not AMQP": {"rabbitmq.url": "http://mq/%2f"},
    "Redis URL that is not Redis": {"redis.url": "memcached://cache:11211"},
    "unknown datastore TLS value": {"database.tls": {"caFile": "/ca.crt"}},
    "unknown service": {"services.billing": {"enabled": True}},
    "unknown top-level value": {"replicaCount": 2},
    "probe field misspelt": {"defaults.livenessProbe.periodSecond": 5},
    "port given as text": {"networkPolicy.datastorePorts.postgresql": ["5432"]},
    "bad image digest": {"image.digest": "latest"},
    "enabled given as text": {"services.media.enabled": "no"},
}


@pytest.mark.parametrize("case", sorted(WRONG_VALUES))
def test_schema_rejects_wrong_values(case: str, minimal_values: dict[str, Any]) -> None:
    values = with_values(minimal_values, **WRONG_VALUES[case])
    report = lint(values)
    assert report["errors"], f"{case} passed lint"
    with pytest.raises(helm.HelmValuesError):
        chartlib.render(values)


def test_default_values_refuse_to_install_without_datastores() -> None:
    report = lint(None)
    text = "\n".join(report["errors"])
    for value in ("/database", "/rabbitmq", "/redis"):
        assert value in text


def test_unknown_field_passed_through_values_is_rejected(minimal_values: dict[str, Any]) -> None:
    values = with_values(
        minimal_values,
        **{"defaults.containerSecurityContext": {"runAsNonRoot": True, "readOnlyRootFilesystm": True}},
    )
    docs = chartlib.render(values)
    with pytest.raises(chartlib.InvalidManifest, match="readOnlyRootFilesystm"):
        chartlib.validate_all(docs)


def test_unknown_field_in_a_template_is_rejected(tmp_path: Path, minimal_values: dict[str, Any]) -> None:
    planted = tmp_path / "telenet"
    shutil.copytree(chartlib.CHART, planted)
    template = planted / "templates" / "deployment.yaml"
    text = template.read_text()
    assert "enableServiceLinks: false" in text
    template.write_text(text.replace("enableServiceLinks: false", "enableServiceLink: false"))
    docs = chartlib.render(minimal_values, chart=planted)
    with pytest.raises(chartlib.InvalidManifest, match="enableServiceLink"):
        chartlib.validate_all(docs)


def test_removed_api_version_is_rejected() -> None:
    doc = {"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(chartlib.InvalidManifest, match="no schema"):
        chartlib.validate_manifest(doc, "1.25.0")


def test_misplaced_field_in_a_crd_is_rejected(minimal_values: dict[str, Any]) -> None:
    values = with_values(minimal_values, **{"metrics.serviceMonitor.enabled": True})
    monitor = by_kind(chartlib.render(values), "ServiceMonitor")["telenet"]
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(chartlib.InvalidManifest, match="intervall"):
        chartlib.validate_manifest(monitor, "1.25.0")


def test_root_container_is_rejected_by_the_policy(minimal_values: dict[str, Any]) -> None:
    values = with_values(
        minimal_values,
        **{
            "services.dispatch.containerSecurityContext": {"runAsNonRoot": False, "runAsUser": 0},
            "services.dispatch.podSecurityContext": {"runAsNonRoot": False, "runAsUser": 0},
        },
    )
    problems = chartlib.policy_violations(chartlib.render(values))
    assert any("telenet-dispatch" in p and "root" in p for p in problems), problems


@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("readOnlyRootFilesystem", False, "root filesystem is writable"),
        ("allowPrivilegeEscalation", True, "allowPrivilegeEscalation"),
        ("capabilities", {"drop": [], "add": ["NET_ADMIN"]}, "capabilities"),
        ("privileged", True, "privileged"),
        ("seccompProfile", {"type": "Unconfined"}, "seccomp"),
    ],
)
def test_weakened_security_is_rejected_by_the_policy(
    field: str, value: Any, problem: str, minimal_values: dict[str, Any]
) -> None:
    docs = chartlib.render(minimal_values)
    container(by_kind(docs, "Deployment")["telenet-media"])["securityContext"][field] = value
    problems = chartlib.policy_violations(docs)
    assert [p for p in problems if problem in p and "telenet-media" in p], problems


def test_missing_limits_and_probes_are_rejected_by_the_policy(minimal_values: dict[str, Any]) -> None:
    docs = chartlib.render(minimal_values)
    c = container(by_kind(docs, "Deployment")["telenet-contacts"])
    c["resources"] = {"requests": {"cpu": "100m"}}
    del c["readinessProbe"]
    problems = chartlib.policy_violations(docs)
    assert any("no memory limits" in p for p in problems), problems
    assert any("no readinessProbe" in p for p in problems), problems


# --- What the chart renders --------------------------------------------------


def test_one_deployment_service_pdb_and_policy_per_service(minimal_values: dict[str, Any]) -> None:
    docs = chartlib.render(minimal_values)
    names = {f"telenet-{s}" for s in SERVICES}
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
        assert names <= set(by_kind(docs, kind)), kind
    for name, deployment in by_kind(docs, "Deployment").items():
        service = name.removeprefix("telenet-")
        assert container(deployment)["args"] == ["serve", "--service", service]
        assert "command" not in container(deployment)


def test_release_name_prefixes_everything() -> None:
    values = chartlib.load_values(chartlib.CHART / "ci" / "minimal-values.yaml")
    docs = chartlib.render(values, name="prod")
    assert "prod-telenet-gateway" in by_kind(docs, "Deployment")
    config = by_kind(docs, "ConfigMap")["prod-telenet"]["data"]
    assert config["TELENET_ENDPOINTS__CONTACTS"] == "https://prod-telenet-contacts:50051"


def test_probes_are_grpc_native_and_readiness_follows_dependencies(minimal_values: dict[str, Any]) -> None:
    docs = chartlib.render(minimal_values)
    deployments = by_kind(docs, "Deployment")
    # The kubelet presents no client certificate: probes use the health-only
    # plaintext listener, never the mutual-TLS port.
    assert by_kind(docs, "ConfigMap")["telenet"]["data"]["TELENET_GRPC_HEALTH_LISTEN"] == "0.0.0.0:50052"
    for service in SERVICES:
        c = container(deployments[f"telenet-{service}"])
        assert {"name": "grpc-health", "containerPort": 50052, "protocol": "TCP"} in c["ports"]
        assert c["livenessProbe"]["grpc"] == {"port": 50052}, "liveness must not depend on anything"
        assert c["startupProbe"]["grpc"] == {"port": 50052}
        if service == "gateway":
            assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert "grpc" not in c["readinessProbe"]
        else:
            assert c["readinessProbe"]["grpc"] == {"port": 50052, "service": f"telenet.{service}"}


def test_probe_can_be_switched_off(minimal_values: dict[str, Any]) -> None:
    values = with_values(minimal_values, **{"services.media.startupProbe": {"enabled": False}})
    deployments = by_kind(chartlib.render(values), "Deployment")
    assert "startupProbe" not in container(deployments["telenet-media"])
    assert "startupProbe" in container(deployments["telenet-contacts"])


def test_configuration_reaches_every_service(minimal_values: dict[str, Any]) -> None:
    docs = chartlib.render(minimal_values)
    config = by_kind(docs, "ConfigMap")["telenet"]["data"]
    assert config["TELENET_GRPC_LISTEN"] == "0.0.0.0:50051"
    assert config["TELENET_METRICS_LISTEN"] == "0.0.0.0:9090"
    assert config["TELENET_INGRESS__LISTEN"] == "0.0.0.0:8081"
    assert config["TELENET_GATEWAY__LISTEN"] == "0.0.0.0:8080"
    assert config["TELENET_INGRESS__PUBLIC_URL"] == "https://hooks.example.com"
    assert config["TELENET_LOG_FORMAT"] == "json"
    assert config["TELENET_SEED"] == "false"
    assert config["TELENET_DATA_DIR"] == "/data"
    for service in SERVICES:
        if service != "gateway":
            assert config[f"TELENET_ENDPOINTS__{service.upper()}"] == f"https://telenet-{service}:50051"
    for deployment in by_kind(docs, "Deployment").values():
        assert container(deployment)["envFrom"] == [{"configMapRef": {"name": "telenet"}}]
        assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_each_service_gets_only_the_credentials_it_needs(minimal_values: dict[str, Any]) -> None:
    deployments = by_kind(chartlib.render(minimal_values), "Deployment")
    for service in SERVICES:
        env = env_of(deployments[f"telenet-{service}"])
        has = {k for k in ("TELENET_DATABASE_URL", "TELENET_BUS_URL", "TELENET_PRESENCE_URL") if k in env}
        if service == "gateway":
            # No database; the broker for token revocations (ADR 16).
            assert has == {"TELENET_BUS_URL", "TELENET_PRESENCE_URL"}
        elif service in ("ingress", "dispatch"):
            # Redis for rate limits every replica shares (webhooks per
            # channel; each provider's sending limits).
            assert has == {"TELENET_DATABASE_URL", "TELENET_BUS_URL", "TELENET_PRESENCE_URL"}
        else:
            assert has == {"TELENET_DATABASE_URL", "TELENET_BUS_URL"}
    ref = env_of(deployments["telenet-contacts"])["TELENET_DATABASE_URL"]
    assert ref == {"secretKeyRef": {"name": "telenet-datastores", "key": "database-url"}}


def test_existing_secrets_are_read_directly(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["existing-secrets-values.yaml"]
    assert "Secret" not in {d["kind"] for d in docs}
    deployments = by_kind(docs, "Deployment")
    volumes = {v["name"]: v for v in deployments["telenet-gateway"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["grpc-tls"]["secret"]["secretName"] == "gateway-grpc-certificate"
    assert volumes["grpc-clients"]["secret"]["secretName"] == "telenet-platform-clients"
    assert volumes["grpc-clients"]["secret"]["items"] == [{"key": "clients", "path": "clients.toml"}]
    volumes = {v["name"]: v for v in deployments["telenet-dispatch"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["grpc-tls"]["secret"]["secretName"] == "telenet-dispatch-grpc-tls"
    assert env_of(deployments["telenet-dispatch"])["TELENET_BUS_URL"] == {
        "secretKeyRef": {"name": "telenet-rabbitmq", "key": "amqp-url"}
    }
    assert env_of(deployments["telenet-gateway"])["TELENET_PRESENCE_URL"] == {
        "secretKeyRef": {"name": "telenet-redis", "key": "redis-url"}
    }
    job = by_kind(docs, "Job")["telenet-migrate"]
    assert env_of(job)["TELENET_DATABASE_URL"] == {"secretKeyRef": {"name": "telenet-postgresql", "key": "url"}}
    assert env_of(job)["TELENET_BUS_URL"] == {"secretKeyRef": {"name": "telenet-rabbitmq", "key": "amqp-url"}}
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "telenet-workloads"


def test_datastore_tls_files_come_from_their_secrets(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["existing-secrets-values.yaml"]
    deployments = by_kind(docs, "Deployment")
    base = "/etc/telenet"
    database_env = {
        "TELENET_DATABASE_TLS__CA_FILE": f"{base}/database-tls/ca.crt",
        "TELENET_DATABASE_TLS__CERT_FILE": f"{base}/database-tls/tls.crt",
        "TELENET_DATABASE_TLS__KEY_FILE": f"{base}/database-tls/tls.key",
    }
    database_volume = {
        "secretName": "telenet-postgresql-tls",
        "items": [
            {"key": "ca.crt", "path": "ca.crt"},
            {"key": "tls.crt", "path": "tls.crt"},
            {"key": "tls.key", "path": "tls.key"},
        ],
        "defaultMode": 0o440,
    }
    for service in SERVICES:
        pod = deployments[f"telenet-{service}"]["spec"]["template"]["spec"]
        env = env_of(deployments[f"telenet-{service}"])
        tls_env = {k: v for k, v in env.items() if "_TLS__" in k and not k.startswith("TELENET_GRPC")}
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m for m in container_of(pod)["volumeMounts"]}
        if service == "gateway":
            # Presence (its Redis CA, under the Secret's own key) and the
            # bus (token revocations); no database.
            assert tls_env == {
                "TELENET_PRESENCE_TLS__CA_FILE": f"{base}/presence-tls/ca.crt",
                "TELENET_BUS_TLS__CA_FILE": f"{base}/bus-tls/ca.crt",
            }
            assert volumes["presence-tls"]["secret"]["items"] == [{"key": "root.pem", "path": "ca.crt"}]
            assert volumes["bus-tls"]["secret"]["secretName"] == "telenet-rabbitmq-ca"
            assert "database-tls" not in volumes
        elif service in ("ingress", "dispatch"):
            # Their rate limits are counted in the presence store's Redis.
            assert tls_env == {
                **database_env,
                "TELENET_BUS_TLS__CA_FILE": f"{base}/bus-tls/ca.crt",
                "TELENET_PRESENCE_TLS__CA_FILE": f"{base}/presence-tls/ca.crt",
            }
            assert volumes["database-tls"]["secret"] == database_volume
            assert volumes["presence-tls"]["secret"]["items"] == [{"key": "root.pem", "path": "ca.crt"}]
        else:
            assert tls_env == {**database_env, "TELENET_BUS_TLS__CA_FILE": f"{base}/bus-tls/ca.crt"}
            assert volumes["database-tls"]["secret"] == database_volume
            assert volumes["bus-tls"]["secret"]["secretName"] == "telenet-rabbitmq-ca"
            assert "presence-tls" not in volumes
        for name in volumes.keys() & {"database-tls", "bus-tls", "presence-tls"}:
            assert mounts[name] == {"name": name, "mountPath": f"{base}/{name}", "readOnly": True}
    # The migrations connect to PostgreSQL, and to RabbitMQ (the bus
    # topology), the same way.
    job = by_kind(docs, "Job")["telenet-migrate"]
    assert {k: v for k, v in env_of(job).items() if "_TLS__" in k} == {
        **database_env,
        "TELENET_BUS_TLS__CA_FILE": f"{base}/bus-tls/ca.crt",
    }
    job_pod = job["spec"]["template"]["spec"]
    job_volumes = {v["name"]: v for v in job_pod["volumes"]}
    assert job_volumes["database-tls"]["secret"] == database_volume
    assert job_volumes["bus-tls"]["secret"]["secretName"] == "telenet-rabbitmq-ca"
    job_mounts = {m["name"]: m for m in container_of(job_pod)["volumeMounts"]}
    assert job_mounts["bus-tls"] == {"name": "bus-tls", "mountPath": f"{base}/bus-tls", "readOnly": True}
    # Without a Secret, nothing is mounted or set.
    minimal = by_kind(ci_renders["minimal-values.yaml"], "Deployment")["telenet-contacts"]
    assert not [k for k in env_of(minimal) if "_TLS__" in k and not k.startswith("TELENET_GRPC")]


def test_datastore_client_certificate_needs_its_key(minimal_values: dict[str, Any]) -> None:
    values = with_values(minimal_values, **{"rabbitmq.tls.existingSecret": "mq-tls", "rabbitmq.tls.certKey": "tls.crt"})
    with pytest.raises(Exception, match="rabbitmq.tls: set certKey and keyKey together"):
        chartlib.render(values)


def test_settings_become_environment_variables(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    config = by_kind(ci_renders["production-values.yaml"], "ConfigMap")["telenet"]["data"]
    # Helm reads numbers as floats: large ones must still come out whole.
    assert config["TELENET_MEDIA__MAX_UPLOAD_BYTES"] == "209715200"
    assert config["TELENET_GRPC_SERVER__CONCURRENCY_LIMIT"] == "2048"
    assert config["TELENET_DISPATCH__HTTP_TIMEOUT"] == "20s"
    assert config["TELENET_DISPATCH__DIRECTORY_CACHE_TTL"] == "0s"
    assert config["TELENET_BUS_PREFIX"] == "prod."
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"


def test_configuration_changes_roll_the_pods(minimal_values: dict[str, Any]) -> None:
    def checksums(values: dict[str, Any]) -> tuple[str, str]:
        pod = by_kind(chartlib.render(values), "Deployment")["telenet-dispatch"]["spec"]["template"]
        return pod["metadata"]["annotations"]["checksum/config"], pod["metadata"]["annotations"]["checksum/secret"]

    config, secret = checksums(minimal_values)
    assert checksums(minimal_values) == (config, secret), "rendering must be stable"
    changed_config, same_secret = checksums(with_values(minimal_values, settings={"dispatch": {"concurrency": 8}}))
    assert changed_config != config and same_secret == secret
    same_config, changed_secret = checksums(with_values(minimal_values, **{"database.url": "postgres://other/db"}))
    assert same_config == config and changed_secret != secret


def test_migrations_run_as_a_hook_before_install_and_upgrade(minimal_values: dict[str, Any]) -> None:
    docs = chartlib.render(minimal_values)
    job = by_kind(docs, "Job")["telenet-migrate"]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-weight"] == "0"
    args = container(job)["args"]
    assert args[0] == "migrate"
    assert sorted(args[2::2]) == sorted(s for s in SERVICES if s != "gateway")
    # Hooks run before the release's own objects exist: the Job's
    # ServiceAccount, Secret and NetworkPolicy are hooks created before it.
    for kind in ("ServiceAccount", "Secret", "NetworkPolicy"):
        hook = by_kind(docs, kind)["telenet-migrate"]["metadata"]["annotations"]
        assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(hook["helm.sh/hook-weight"]) < 0
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "telenet-migrate"
    assert env_of(job)["TELENET_DATABASE_URL"]["secretKeyRef"]["name"] == "telenet-migrate"


def test_migrations_declare_the_bus_topology_with_the_services_settings(
    minimal_values: dict[str, Any], ci_renders: dict[str, list[dict[str, Any]]]
) -> None:
    docs = chartlib.render(minimal_values)
    job = by_kind(docs, "Job")["telenet-migrate"]
    env = env_of(job)
    assert env["TELENET_BUS_URL"] == {"secretKeyRef": {"name": "telenet-migrate", "key": "bus-url"}}
    secret = by_kind(docs, "Secret")["telenet-migrate"]
    assert set(secret["data"]) == {"database-url", "bus-url"}
    policy = by_kind(docs, "NetworkPolicy")["telenet-migrate"]
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert {5432, 5672} <= ports
    production = by_kind(ci_renders["production-values.yaml"], "Job")["telenet-migrate"]
    # The same prefix as the services, or it declares queues nobody uses.
    assert env_of(production)["TELENET_BUS_PREFIX"] == "prod."


def test_dead_letters_alert_is_optional(
    minimal_values: dict[str, Any], ci_renders: dict[str, list[dict[str, Any]]]
) -> None:
    assert not [d for d in chartlib.render(minimal_values) if d["kind"] == "PrometheusRule"]
    rule = by_kind(ci_renders["production-values.yaml"], "PrometheusRule")["telenet"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    dead = alerts["TelenetDeadLetters"]
    assert "telenet_bus_queue_dead_letters" in dead["expr"]
    assert dead["for"] == "5m"
    assert "{{ $labels.group }}" in dead["annotations"]["description"]


def test_migrations_can_be_left_out(minimal_values: dict[str, Any]) -> None:
    docs = chartlib.render(with_values(minimal_values, **{"migrations.enabled": False}))
    assert not [d for d in docs if "migrate" in d["metadata"]["name"]]


def test_autoscaling_replaces_the_replica_count(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["production-values.yaml"]
    deployments = by_kind(docs, "Deployment")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"telenet-ingress", "telenet-conversations", "telenet-gateway"}
    for name in hpas:
        assert "replicas" not in deployments[name]["spec"]
    assert deployments["telenet-contacts"]["spec"]["replicas"] == 2
    conversations = hpas["telenet-conversations"]["spec"]
    assert (conversations["minReplicas"], conversations["maxReplicas"]) == (3, 12)
    assert {m["resource"]["name"] for m in conversations["metrics"]} == {"cpu", "memory"}


def test_media_keeps_blobs_on_a_volume(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    shared = ci_renders["production-values.yaml"]
    claim = by_kind(shared, "PersistentVolumeClaim")["telenet-media"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    media = by_kind(shared, "Deployment")["telenet-media"]
    assert media["spec"]["strategy"]["type"] == "RollingUpdate"
    assert container(media)["image"].startswith("registry.example.com/telenet/telenet-media@sha256:")
    volumes = {v["name"]: v for v in media["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "telenet-media"
    # A ReadWriteOnce volume cannot be attached to two pods during a rollout.
    single = by_kind(ci_renders["subset-values.yaml"], "Deployment")["inbox-media"]
    assert single["spec"]["strategy"] == {"type": "Recreate"}


def test_media_refuses_replicas_it_cannot_share_a_volume_with(minimal_values: dict[str, Any]) -> None:
    values = with_values(minimal_values, **{"persistence.enabled": True, "services.media.replicaCount": 2})
    with pytest.raises(helm.HelmRenderError, match="ReadWriteMany"):
        chartlib.render(values)


def test_only_the_media_image_carries_ffmpeg(minimal_values: dict[str, Any]) -> None:
    deployments = by_kind(chartlib.render(minimal_values), "Deployment")
    for service in SERVICES:
        image = container(deployments[f"telenet-{service}"])["image"]
        expected = "ghcr.io/telenet/telenet-media:0.1.0" if service == "media" else "ghcr.io/telenet/telenet:0.1.0"
        assert image == expected


def test_network_policies_allow_only_the_calls_services_make(minimal_values: dict[str, Any]) -> None:
    policies = by_kind(chartlib.render(minimal_values), "NetworkPolicy")

    def components(peers: list[dict[str, Any]]) -> set[str]:
        return {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in peers if "podSelector" in p}

    def grpc_from(service: str) -> set[str]:
        rules = policies[f"telenet-{service}"]["spec"]["ingress"]
        return components(next(r["from"] for r in rules if r["ports"][0]["port"] == "grpc"))

    def grpc_to(service: str) -> set[str]:
        rules = policies[f"telenet-{service}"]["spec"]["egress"]
        return components(next(r["to"] for r in rules if r.get("ports", [{}])[0].get("port") == 50051))

    # Every call, from the services' declarations: test_callgraph.py.
    assert grpc_from("contacts") == {"contacts", "conversations", "gateway"}
    assert grpc_from("ingress") == {"ingress", "conversations", "dispatch", "gateway", "media"}
    assert grpc_from("media") == {"media", "dispatch", "gateway"}
    assert grpc_from("reporting") == {"reporting", "gateway"}
    assert grpc_to("gateway") == {"gateway", "conversations", "ingress", "contacts", "reporting", "media"}
    assert grpc_to("dispatch") == {"dispatch", "ingress", "media"}
    assert grpc_to("media") == {"media", "ingress"}

    def egress_ports(service: str) -> set[int]:
        return {
            p["port"]
            for r in policies[f"telenet-{service}"]["spec"]["egress"]
            for p in r.get("ports", [])
            if isinstance(p["port"], int)
        }

    assert egress_ports("gateway") == {53, 50051, 5672, 6379}
    assert egress_ports("contacts") == {53, 50051, 5432, 5672}
    internet = [r for r in policies["telenet-dispatch"]["spec"]["egress"] if "ports" not in r]
    assert internet[0]["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert "10.0.0.0/8" in internet[0]["to"][0]["ipBlock"]["except"]
    media_internet = [r for r in policies["telenet-media"]["spec"]["egress"] if "ports" not in r]
    assert media_internet == internet, "media fetches attachments and may use S3"
    assert not [r for r in policies["telenet-contacts"]["spec"]["egress"] if "ports" not in r]
    http = [r for r in policies["telenet-gateway"]["spec"]["ingress"] if r["ports"][0]["port"] == "http"]
    assert http[0]["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]


def test_ingress_routes_api_and_webhooks(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    separate = by_kind(ci_renders["production-values.yaml"], "Ingress")["telenet"]["spec"]
    rules = {r["host"]: r["http"]["paths"] for r in separate["rules"]}
    assert rules["inbox.example.com"][0]["backend"]["service"] == {"name": "telenet-gateway", "port": {"name": "http"}}
    assert rules["hooks.example.com"][0]["path"] == "/webhooks"
    assert rules["hooks.example.com"][0]["backend"]["service"]["name"] == "telenet-ingress"
    assert {t["secretName"] for t in separate["tls"]} == {"inbox-tls", "hooks-tls"}
    config = by_kind(ci_renders["production-values.yaml"], "ConfigMap")["telenet"]["data"]
    assert config["TELENET_INGRESS__PUBLIC_URL"] == "https://hooks.example.com"

    shared = by_kind(ci_renders["subset-values.yaml"], "Ingress")["inbox"]["spec"]
    assert len(shared["rules"]) == 1 and len(shared["tls"]) == 1
    assert [p["path"] for p in shared["rules"][0]["http"]["paths"]] == ["/", "/webhooks"]


def test_http_routes_instead_of_an_ingress(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["httproute-values.yaml"]
    routes = by_kind(docs, "HTTPRoute")
    assert routes["telenet-ingress"]["spec"]["rules"][0]["matches"][0]["path"]["value"] == "/webhooks"
    assert routes["telenet-gateway"]["spec"]["rules"][0]["backendRefs"][0] == {"name": "telenet-gateway", "port": 8080}
    assert not by_kind(docs, "Ingress")
    config = by_kind(docs, "ConfigMap")["telenet"]["data"]
    assert config["TELENET_INGRESS__PUBLIC_URL"] == "https://hooks.example.com"


def test_webhooks_need_a_public_url(minimal_values: dict[str, Any]) -> None:
    values = with_values(minimal_values, **{"webhooks.publicUrl": ""})
    with pytest.raises(helm.HelmRenderError, match="webhooks.publicUrl"):
        chartlib.render(values)


def test_service_monitor_scrapes_every_service(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["production-values.yaml"]
    monitor = by_kind(docs, "ServiceMonitor")["telenet"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    for service in by_kind(docs, "Service").values():
        assert selector.items() <= service["metadata"]["labels"].items()
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def test_metrics_can_be_switched_off(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["existing-secrets-values.yaml"]
    assert by_kind(docs, "ConfigMap")["telenet"]["data"]["TELENET_METRICS_LISTEN"] == ""
    for service in by_kind(docs, "Service").values():
        assert "metrics" not in {p["name"] for p in service["spec"]["ports"]}


def test_part_of_the_suite_can_run_elsewhere(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["subset-values.yaml"]
    assert set(by_kind(docs, "Deployment")) == {"inbox-ingress", "inbox-conversations", "inbox-media", "inbox-gateway"}
    config = by_kind(docs, "ConfigMap")["inbox"]["data"]
    assert config["TELENET_ENDPOINTS__CONTACTS"] == "http://contacts.other-namespace:50051"
    assert config["TELENET_ENDPOINTS__CONVERSATIONS"] == "https://inbox-conversations:50051"
    args = container(by_kind(docs, "Job")["inbox-migrate"])["args"]
    assert sorted(args[2::2]) == ["conversations", "ingress", "media"]


def test_scheduling_settings_reach_the_pods(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    pod = by_kind(ci_renders["production-values.yaml"], "Deployment")["telenet-dispatch"]["spec"]["template"]
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert spec["priorityClassName"] == "business-critical"
    spread = spec["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert all(c["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "dispatch" for c in spread)
    assert container(by_kind(ci_renders["production-values.yaml"], "Deployment")["telenet-dispatch"])["lifecycle"] == {
        "preStop": {"sleep": {"seconds": 5}}
    }
    env = env_of(by_kind(ci_renders["production-values.yaml"], "Deployment")["telenet-dispatch"])
    assert env["TELENET_DISPATCH__MAX_ATTEMPTS"] == "6"
    assert env["HTTPS_PROXY"] == {"secretKeyRef": {"name": "egress-proxy", "key": "url"}}
    assert env["TZ"] == "UTC"
    pdb = by_kind(ci_renders["production-values.yaml"], "PodDisruptionBudget")
    assert pdb["telenet-dispatch"]["spec"] == {
        "minAvailable": "50%",
        "selector": pdb["telenet-dispatch"]["spec"]["selector"],
    }
    assert pdb["telenet-contacts"]["spec"]["minAvailable"] == 1


def test_per_service_false_overrides_a_default_true(minimal_values: dict[str, Any]) -> None:
    values = with_values(minimal_values, **{"services.gateway.pdb": {"enabled": False}})
    pdbs = by_kind(chartlib.render(values), "PodDisruptionBudget")
    assert "telenet-gateway" not in pdbs and "telenet-contacts" in pdbs


def test_notes_tell_how_to_start(minimal_values: dict[str, Any]) -> None:
    notes = chartlib.render_files(minimal_values)["telenet/templates/NOTES.txt"]
    assert "telenet create-workspace" in notes
    assert "https://hooks.example.com/webhooks/{channel_id}" in notes
    assert "port-forward svc/telenet-gateway 8080:8080" in notes


def test_media_blobs_in_s3_with_credentials_from_a_secret(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["s3-media-values.yaml"]
    config = by_kind(docs, "ConfigMap")["telenet"]["data"]
    assert config["TELENET_MEDIA__BLOB_STORE"] == "s3"
    assert config["TELENET_MEDIA__S3__PATH_STYLE"] == "true"
    assert config["TELENET_MEDIA__INBOUND__MAX_BYTES"] == "52428800"
    assert not [k for k in config if "ACCESS_KEY" in k], "credentials never go into the ConfigMap"
    media = by_kind(docs, "Deployment")["telenet-media"]
    assert media["spec"]["replicas"] == 3
    env = env_of(media)
    assert env["TELENET_MEDIA__S3__SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "telenet-media-s3", "key": "secret-access-key"}
    }
    assert "TELENET_MEDIA__S3__ACCESS_KEY_ID" not in env_of(by_kind(docs, "Deployment")["telenet-dispatch"])
    assert not by_kind(docs, "PersistentVolumeClaim")


def test_download_link_key_comes_from_a_secret_to_media_only(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["production-values.yaml"]
    config = by_kind(docs, "ConfigMap")["telenet"]["data"]
    assert config["TELENET_MEDIA__DOWNLOAD_URLS__BASE_URL"] == "https://inbox.example.com"
    assert not [k for k in config if k.startswith("TELENET_MEDIA__DOWNLOAD_URLS__KEY")], "keys never go into the ConfigMap"
    env = env_of(by_kind(docs, "Deployment")["telenet-media"])
    assert env["TELENET_MEDIA__DOWNLOAD_URLS__KEY"] == {
        "secretKeyRef": {"name": "telenet-download-links", "key": "key"}
    }
    assert env["TELENET_MEDIA__DOWNLOAD_URLS__PREVIOUS_KEYS"] == {
        "secretKeyRef": {"name": "telenet-download-links", "key": "previous-keys", "optional": True}
    }
    for other in ("telenet-gateway", "telenet-dispatch"):
        assert "TELENET_MEDIA__DOWNLOAD_URLS__KEY" not in env_of(by_kind(docs, "Deployment")[other])


def test_credentials_cannot_be_put_in_settings(minimal_values: dict[str, Any]) -> None:
    for secret in ({"s3": {"secret_access_key": "hunter2"}}, {"download_urls": {"key": "aHVudGVyMg=="}}):
        values = with_values(minimal_values, settings={"media": secret})
        with pytest.raises(helm.HelmValuesError):
            chartlib.render(values)


# --- gRPC mutual TLS and platform clients --------------------------------------


def secret_data(doc: dict[str, Any]) -> dict[str, str]:
    import base64

    return {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}


def test_grpc_is_mutual_tls_by_default_with_a_certificate_per_service(minimal_values: dict[str, Any]) -> None:
    docs = chartlib.render(minimal_values)
    secrets = by_kind(docs, "Secret")
    config = by_kind(docs, "ConfigMap")["telenet"]["data"]
    assert config["TELENET_GRPC_TLS__CERT_FILE"] == "/etc/telenet/grpc-tls/tls.crt"
    assert config["TELENET_GRPC_TLS__KEY_FILE"] == "/etc/telenet/grpc-tls/tls.key"
    assert config["TELENET_GRPC_TLS__CA_FILE"] == "/etc/telenet/grpc-tls/ca.crt"
    assert config["TELENET_GRPC_TLS__ALLOW_PLAINTEXT"] == "false"
    assert config["TELENET_GRPC_AUTH__CLIENTS_FILE"] == "", "no platform clients"
    ca = secret_data(secrets["telenet-grpc-ca"])
    for service in SERVICES:
        data = secret_data(secrets[f"telenet-{service}-grpc-tls"])
        assert secrets[f"telenet-{service}-grpc-tls"]["type"] == "kubernetes.io/tls"
        assert data["ca.crt"] == ca["tls.crt"], "one CA signs every service"
        assert data["tls.crt"].startswith("-----BEGIN CERTIFICATE-----")
        assert "PRIVATE KEY-----" in data["tls.key"]
        # Its identity first, then the names callers reach it at.
        assert data["names"].split(",")[:2] == [f"{service}.telenet.internal", f"telenet-{service}"]
        pod = by_kind(docs, "Deployment")[f"telenet-{service}"]["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "grpc-tls")
        assert volume["secret"]["secretName"] == f"telenet-{service}-grpc-tls"
        mount = next(m for m in container_of(pod)["volumeMounts"] if m["name"] == "grpc-tls")
        # A directory, never a subPath: renewed files must reach the pod.
        assert mount == {"name": "grpc-tls", "mountPath": "/etc/telenet/grpc-tls", "readOnly": True}
    # The certificates are not part of the pods' checksums: renewing them
    # must not restart anything.
    assert "grpc" not in str(by_kind(docs, "Deployment")["telenet-gateway"]["spec"]["template"]["metadata"]["annotations"])


def container_of(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["containers"][0]


def test_cert_manager_issues_and_renews_the_certificates(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["production-values.yaml"]
    assert not [n for n in by_kind(docs, "Secret") if "grpc-tls" in n or "grpc-ca" in n]
    certificates = by_kind(docs, "Certificate")
    assert set(certificates) == {f"telenet-{s}-grpc" for s in SERVICES}
    spec = certificates["telenet-gateway-grpc"]["spec"]
    assert spec["secretName"] == "telenet-gateway-grpc-tls"
    assert spec["dnsNames"][:2] == ["gateway.telenet.internal", "telenet-gateway"]
    assert "telenet-gateway.telenet.svc.cluster.local" in spec["dnsNames"]
    assert {"server auth", "client auth"} <= set(spec["usages"])
    assert spec["issuerRef"] == {"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert (spec["duration"], spec["renewBefore"]) == ("720h", "240h")
    assert "Issuer" not in {d["kind"] for d in docs}, "the company's issuer is used, none is made"


def test_cert_manager_without_an_issuer_bootstraps_a_ca(minimal_values: dict[str, Any]) -> None:
    docs = chartlib.render(with_values(minimal_values, **{"grpcTls.source": "cert-manager"}))
    chartlib.validate_all(docs)
    issuers = by_kind(docs, "Issuer")
    assert issuers["telenet-grpc-selfsigned"]["spec"] == {"selfSigned": {}}
    assert issuers["telenet-grpc-ca"]["spec"] == {"ca": {"secretName": "telenet-grpc-ca"}}
    ca = by_kind(docs, "Certificate")["telenet-grpc-ca"]["spec"]
    assert ca["isCA"] is True and ca["issuerRef"]["name"] == "telenet-grpc-selfsigned"
    assert by_kind(docs, "Certificate")["telenet-media-grpc"]["spec"]["issuerRef"]["name"] == "telenet-grpc-ca"


def test_platform_clients_file_holds_hashes_only(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["production-values.yaml"]
    clients = by_kind(docs, "Secret")["telenet-grpc-clients"]["stringData"]["clients.toml"]
    assert 'name = "billing"' in clients
    assert 'token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"' in clients
    assert 'workspaces = ["0190a0a0-0000-7000-8000-00000000000a"]' in clients
    assert clients.count("[[clients]]") == 2
    config = by_kind(docs, "ConfigMap")["telenet"]["data"]
    assert config["TELENET_GRPC_AUTH__CLIENTS_FILE"] == "/etc/telenet/grpc-clients/clients.toml"
    for deployment in by_kind(docs, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "grpc-clients")
        assert volume["secret"]["secretName"] == "telenet-grpc-clients"


def test_platform_client_hashes_are_checked(minimal_values: dict[str, Any]) -> None:
    values = with_values(
        minimal_values, **{"platformClients.clients": [{"name": "billing", "tokenSha256": "the-secret", "workspaces": []}]}
    )
    with pytest.raises(helm.HelmValuesError):
        chartlib.render(values)


def test_plaintext_grpc_only_when_asked(minimal_values: dict[str, Any]) -> None:
    docs = chartlib.render(with_values(minimal_values, **{"grpcTls.enabled": False}))
    config = by_kind(docs, "ConfigMap")["telenet"]["data"]
    assert config["TELENET_GRPC_TLS__ALLOW_PLAINTEXT"] == "true"
    assert config["TELENET_GRPC_TLS__CERT_FILE"] == ""
    assert config["TELENET_ENDPOINTS__CONTACTS"] == "http://telenet-contacts:50051"
    assert not [n for n in by_kind(docs, "Secret") if "grpc" in n]
    for encryption in ({"keys": {"k1": "aHVudGVyMg=="}}, {"current_key": "k1"}, {"local_key": True}):
        values = with_values(minimal_values, settings={"ingress": {"encryption": encryption}})
        with pytest.raises(helm.HelmValuesError):
            chartlib.render(values)


def test_channel_secret_keys_come_from_a_secret_to_ingress_only(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = ci_renders["production-values.yaml"]
    config = by_kind(docs, "ConfigMap")["telenet"]["data"]
    # A pod's own directory never holds the key: several replicas must share one keyring.
    assert config["TELENET_INGRESS__ENCRYPTION__LOCAL_KEY"] == "false"
    assert not [k for k in config if k.startswith("TELENET_INGRESS__ENCRYPTION__KEYS")], "keys never go into the ConfigMap"
    env = env_of(by_kind(docs, "Deployment")["telenet-ingress"])
    assert env["TELENET_INGRESS__ENCRYPTION__KEYS"] == {
        "secretKeyRef": {"name": "telenet-channel-secrets", "key": "keys"}
    }
    assert env["TELENET_INGRESS__ENCRYPTION__CURRENT_KEY"] == {
        "secretKeyRef": {"name": "telenet-channel-secrets", "key": "current-key", "optional": True}
    }
    for other in ("telenet-gateway", "telenet-dispatch", "telenet-media"):
        assert "TELENET_INGRESS__ENCRYPTION__KEYS" not in env_of(by_kind(docs, "Deployment")[other])


def test_ingress_needs_the_channel_secret_keys(minimal_values: dict[str, Any]) -> None:
    values = with_values(minimal_values, **{"channelSecrets.existingSecret": ""})
    with pytest.raises(helm.HelmRenderError, match="channelSecrets.existingSecret"):
        chartlib.render(values)
    # A release without ingress needs none.
    values = with_values(values, **{"services.ingress.enabled": False})
    docs = chartlib.render(values)
    assert "telenet-ingress" not in by_kind(docs, "Deployment")
