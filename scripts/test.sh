#!/usr/bin/env bash
# Every check the project runs, in order: the README's test command, and what
# CI runs through .ci/run. It first makes sure PostgreSQL, Redis and RabbitMQ
# answer (starting or installing them), since integration tests use them.
# To add a check, add another header and command below.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Incremental compilation caches serve repeated local builds, not a one-off
# run: off by default here, they would add gigabytes to target/.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "==> disk space"
# A whole run (tests, clippy, the fault suite's build with crash points)
# leaves about 7 GB in target/ on a fresh clone; a full disk shows up later
# as a linker crash, so say it plainly here.
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
echo "free: $((free_kb / 1024 / 1024)) GB in $(pwd)"
if [ "$free_kb" -lt $((4 * 1024 * 1024)) ]; then
    echo "error: less than 4 GB free; a build of the workspace needs about 7 GB" >&2
    exit 1
elif [ "$free_kb" -lt $((10 * 1024 * 1024)) ]; then
    echo "warning: less than 10 GB free; a build of the workspace needs about 7 GB" >&2
fi

echo "==> services (PostgreSQL, Redis, RabbitMQ)"
scripts/services.sh ensure

echo "==> cargo fmt --all --check"
cargo fmt --all --check

echo "==> proto checks (buf lint, buf breaking against main and the published v1)"
scripts/check-proto.sh

echo "==> deploy checks (chart, images, k8s/, Tiltfile)"
scripts/check-deploy.sh

echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "==> cargo test --workspace"
cargo test --workspace

echo "==> REST API against its OpenAPI document (schemathesis)"
scripts/check-api.sh

echo "==> fault suite (scripts/fault-suite.sh: every service as its own process, private PostgreSQL, RabbitMQ and Redis, faults under load)"
scripts/fault-suite.sh

echo "==> all checks passed"
