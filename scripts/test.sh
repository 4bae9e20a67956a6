#!/usr/bin/env bash
# Every check the project runs, in order: the README's test command, and what
# CI runs through .ci/run. It first makes sure PostgreSQL, Redis and RabbitMQ
# answer (starting or installing them), since integration tests use them.
# To add a check, add another header and command below.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

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
