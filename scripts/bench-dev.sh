#!/usr/bin/env bash
# The dev server's start and idle figures: time from launching
# `telenet dev --ephemeral` until it is ready (every service's readiness
# SERVING, the seeded token printed and the gateway answering /healthz), and
# the whole process's resident memory once idle. Builds the binary first
# (debug, the README's `cargo run -- dev`; `--release` for a release build),
# then measures RUNS starts (default 5) and prints each and the median.
#
#   scripts/bench-dev.sh [--release]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=debug
if [[ "${1:-}" == --release ]]; then
    profile=release
    cargo build --release -q -p telenet --bin telenet
else
    cargo build -q -p telenet --bin telenet
fi
bin="target/$profile/telenet"
runs=${RUNS:-5}
idle=${IDLE_SECONDS:-10}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }


ready_ms=()
rss_mb=()
for run in $(seq "$runs"); do
    out=$(mktemp)
    start=$(date +%s%N)
    # Fixed ports of the dev defaults must be free; the bench uses them as a
    # newcomer would.
    "$bin" dev --ephemeral >"$out" 2>&1 &
    pid=$!
    gateway=""
    for _ in $(seq 600); do
        if grep -q '^token: ' "$out"; then
            gateway=$(sed -n 's/^gateway: //p' "$out")
            curl -fsS "$gateway/healthz" >/dev/null 2>&1 && break
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$out" >&2; echo "bench-dev: the server exited" >&2; exit 1; }
        sleep 0.005
    done
    end=$(date +%s%N)
    ms=$(( (end - start) / 1000000 ))
    sleep "$idle"
    rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    mb=$(awk -v k="$rss_kb" 'BEGIN {printf "%.1f", k/1024}')
    kill -INT "$pid"
    wait "$pid" || true
    rm -f "$out"
    echo "run $run: ready in $ms ms; idle RSS $mb MB (after ${idle}s)"
    ready_ms+=("$ms")
    rss_mb+=("$mb")
done
echo "median: ready in $(printf '%s\n' "${ready_ms[@]}" | median) ms; idle RSS $(printf '%s\n' "${rss_mb[@]}" | median) MB ($profile build, $runs runs)"
