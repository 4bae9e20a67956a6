#!/usr/bin/env bash
# Every check the project runs, in order; CI runs it through .ci/run, and so
# can you (the services must be up: scripts/services.sh ensure).
# To add a check, add another header and command below.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> cargo fmt --all --check"
cargo fmt --all --check

echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "==> cargo test --workspace"
cargo test --workspace

echo "==> all checks passed"
