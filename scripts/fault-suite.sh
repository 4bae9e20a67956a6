#!/usr/bin/env bash
# The fault suite (docs/reliability.md): every service as its own
# `telenet serve` process on a PostgreSQL, RabbitMQ and Redis of its own
# (started in a temporary directory on free ports; the machine's shared
# instances are never touched), under a steady load of webhooks and replies,
# while RabbitMQ and PostgreSQL restart, Redis stops, each service is
# SIGKILLed and ingress and dispatch die at their crash points. Fails when an
# accepted webhook is lost, duplicated or out of order, or a reply is sent
# more than once per attempt or never settles.
#
#   scripts/fault-suite.sh                  every fault (about 6 minutes once built)
#   scripts/fault-suite.sh --list           the faults' names
#   scripts/fault-suite.sh --only kill-dispatch --only redis-stop
#   scripts/fault-suite.sh --seed 42        repeat a run's random moments
#   scripts/fault-suite.sh --table out.md   also write the table to a file
#
# Needs PostgreSQL's server binaries (initdb, pg_ctl), rabbitmq-server and
# redis-server installed (scripts/services.sh ensure installs them).
# FAULT_SUITE_TIMEOUT (default 20m) bounds the whole run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v rabbitmq-server >/dev/null || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "fault-suite: missing ${missing[*]} (scripts/services.sh ensure installs them)" >&2
    exit 2
fi

# The suite first (it links the ordinary libraries), then `telenet` with the
# crash points compiled in (the `failpoints` feature: ingress and dispatch
# die where FAILPOINTS says; inert otherwise). The binary is copied so that a
# build running meanwhile cannot replace it under the suite.
cargo build --quiet -p telenet-tests --bin fault-suite
cargo build --quiet -p telenet --features failpoints --bin telenet
mkdir -p target/fault-suite
cp target/debug/telenet target/fault-suite/telenet

# A process dying at a crash point aborts: no core files.
ulimit -c 0
exec timeout --signal=TERM --kill-after=30s "${FAULT_SUITE_TIMEOUT:-20m}" \
    target/debug/fault-suite --telenet target/fault-suite/telenet "$@"
