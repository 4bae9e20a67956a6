"""The Tiltfile, evaluated with stub Tilt built-ins (deploy/tools/tiltcheck.py):
the chart and k8s/ really rendered, every k8s_resource matching a rendered
workload, and planted mistakes caught."""

from __future__ import annotations

from pathlib import Path

import pytest

import chart as chartlib
import tiltcheck

TILTFILE = chartlib.REPO / "Tiltfile"


@pytest.fixture(scope="module")
def cluster() -> tiltcheck.Report:
    return tiltcheck.evaluate(TILTFILE)


@pytest.fixture(scope="module")
def local() -> tiltcheck.Report:
    return tiltcheck.evaluate(TILTFILE, ["--local"])


def planted(tmp_path: Path, old: str, new: str) -> tiltcheck.Report:
    text = TILTFILE.read_text()
    assert old in text, old
    path = tmp_path / "Tiltfile"
    path.write_text(text.replace(old, new, 1))
    return tiltcheck.evaluate(path, root=chartlib.REPO)


def test_the_tiltfile_passes(cluster: tiltcheck.Report) -> None:
    assert cluster.problems == []


def test_every_workload_of_the_chart_and_k8s_is_a_configured_resource(cluster: tiltcheck.Report) -> None:
    configured = {r["workload"] for r in cluster.k8s_resources}
    workloads = set(cluster.workloads())
    assert workloads == configured
    assert {f"telenet-{s}" for s in chartlib.SERVICES} | {"telenet-migrate", "postgres", "redis", "rabbitmq"} == workloads


def test_services_wait_for_migrations_and_datastores(cluster: tiltcheck.Report) -> None:
    deps = {r["workload"]: set(r["resource_deps"]) for r in cluster.k8s_resources}
    for service in chartlib.SERVICES:
        assert "telenet-binary" in deps[f"telenet-{service}"]
        if service != "gateway":
            assert {"telenet-migrate", "rabbitmq"} <= deps[f"telenet-{service}"]
    assert {"redis"} <= deps["telenet-gateway"]
    assert {"postgres", "telenet-binary"} <= deps["telenet-migrate"]


def test_port_forwards_for_the_gateway_webhooks_and_rabbitmq_ui(cluster: tiltcheck.Report) -> None:
    forwards = {r["workload"]: r["port_forwards"] for r in cluster.k8s_resources if r["port_forwards"]}
    assert forwards == {"telenet-gateway": ["8080:8080"], "telenet-ingress": ["8081:8081"], "rabbitmq": ["15672:15672"]}


def test_binary_built_on_the_host_and_synced_into_containers(cluster: tiltcheck.Report) -> None:
    build = next(r for r in cluster.local_resources if r["name"] == "telenet-binary")
    assert "cargo build" in build["cmd"]
    [image] = cluster.docker_builds
    assert image["ref"] == "telenet-dev"
    assert image["dockerfile"] == "docker/Dockerfile.dev"
    assert image["entrypoint"] == ["/app/telenet"]
    assert ("sync", "target/tilt/telenet", "/app/telenet") in image["live_update"]
    for workload in cluster.workloads().values():
        if workload["metadata"]["name"].startswith("telenet-"):
            assert chartlib.container(workload)["image"] == "telenet-dev:dev"
            assert "command" not in chartlib.container(workload), "a command would bypass the restart wrapper"


def test_local_mode_runs_the_dev_server_without_a_cluster(local: tiltcheck.Report) -> None:
    assert local.problems == []
    assert local.k8s_objects == [] and local.docker_builds == [] and local.k8s_resources == []
    [server] = local.local_resources
    assert server["serve_cmd"].endswith("telenet -- dev")


def test_unknown_flag_is_refused() -> None:
    report = tiltcheck.evaluate(TILTFILE, ["--locl"])
    assert any("unknown flag --locl" in p for p in report.problems), report.problems


PLANTED = {
    "resource matching no workload": ('RELEASE + "-migrate",', '"telenet-migrations",', "matches no workload"),
    "dependency on no resource": ('deps = ["telenet-binary", "redis"]', 'deps = ["telenet-binary", "cache"]', "names no resource: 'cache'"),
    "misspelt built-in in an untaken branch": ("    local_resource(\n        \"telenet-dev\",", "    local_resourc(\n        \"telenet-dev\",", "local_resourc"),
    "unknown keyword": ("only = [\"telenet\"],", "onyl = [\"telenet\"],", "onyl"),
    "f-string": ('"%d:8080" % GATEWAY_PORT', 'f"{GATEWAY_PORT}:8080"', "f-strings"),
    "values breaking the chart's schema": ('values = ["deploy/dev-values.yaml"],', 'values = ["deploy/dev-values.yaml"], set = ["defaults.replicaCount=-1"],', "does not render"),
    "image no container uses": ('"telenet-dev",\n        context', '"telenet-devel",\n        context', "no container uses this image"),
    "missing dockerfile": ('"docker/Dockerfile.dev"', '"docker/Dockerfile.devel"', "does not exist"),
    "port forward to a closed port": ('"%d:8080" % GATEWAY_PORT', '"%d:8090" % GATEWAY_PORT', "reaches no container port"),
    "sync outside the build context": ('sync("target/tilt/telenet"', 'sync("target/debug/telenet"', "outside the context"),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_planted_mistakes_are_caught(case: str, tmp_path: Path) -> None:
    old, new, expected = PLANTED[case]
    report = planted(tmp_path, old, new)
    assert any(expected in p for p in report.problems), report.problems
