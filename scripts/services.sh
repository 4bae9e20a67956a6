#!/usr/bin/env bash
# Local services for the tests: PostgreSQL (127.0.0.1:5432), Redis (6379) and
# RabbitMQ (5672), started the way this kind of machine starts them.
#
#   scripts/services.sh ensure   install missing build tools (BUILD_TOOLS), then
#                                start whatever does not answer (installing it
#                                from Debian's packages if it is missing), wait
#                                for it, fail naming any service still down
#   scripts/services.sh status   only report; non-zero if any service is down
#   scripts/services.sh prune    drop the test databases (telenet_test_*) that
#                                earlier runs left, once they are older than
#                                PRUNE_AFTER_MINUTES (default 120) and nobody is
#                                connected to them; `ensure` does it too
#
# Environment: SERVICES_WAIT_SECONDS (default 60) bounds each wait.
set -euo pipefail

WAIT_SECONDS="${SERVICES_WAIT_SECONDS:-60}"
SERVICES=(postgres redis rabbitmq)
APT_UPDATED=no

log() { echo "services: $*"; }
fail() {
    echo "services: ERROR: $*" >&2
    exit 1
}

# --- how each service is checked ------------------------------------------

postgres_answers() {
    command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432
}

redis_answers() {
    command -v redis-cli >/dev/null &&
        [ "$(timeout 5 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
}

rabbitmq_answers() {
    # A TCP connect to the AMQP port; bash's /dev/tcp needs no extra tool.
    timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null
}

# --- what each service needs installed ------------------------------------

postgres_installed() { command -v pg_ctlcluster >/dev/null && command -v pg_isready >/dev/null; }
redis_installed() { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; }
rabbitmq_installed() { command -v rabbitmq-server >/dev/null; }

postgres_package() { echo postgresql; }
redis_package() { echo redis-server; }
rabbitmq_package() { echo rabbitmq-server; }

# --- how each service is started (as in the machine's documentation) ------

# The newest version under a directory of versions (/etc/postgresql/15 …).
newest_version_in() {
    # shellcheck disable=SC2012  # entries are version numbers
    ls "$1" 2>/dev/null | sort -V | tail -n 1 || true
}

postgres_start() {
    local version
    version="$(newest_version_in /etc/postgresql)"
    [ -n "$version" ] || fail "postgres: no cluster under /etc/postgresql"
    log "postgres: pg_ctlcluster --skip-systemctl-redirect $version main start"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
}

redis_start() {
    mkdir -p /var/lib/redis /var/log/redis
    log "redis: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 ..."
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

rabbitmq_start() {
    log "rabbitmq: rabbitmq-server -detached"
    rabbitmq-server -detached
}

# --- after a fresh install: match the machine's standard setup -------------

postgres_after_install() {
    local version
    version="$(newest_version_in /etc/postgresql)"
    if [ -z "$version" ]; then
        version="$(newest_version_in /usr/lib/postgresql)"
        log "postgres: creating cluster $version/main"
        pg_createcluster "$version" main
    fi
    # Trust auth on the socket and loopback, as on the machine the tests
    # expect (user postgres, no password).
    log "postgres: trust auth for local and loopback connections"
    printf '%s\n' \
        'local all all trust' \
        'host all all 127.0.0.1/32 trust' \
        'host all all ::1/128 trust' >"/etc/postgresql/$version/main/pg_hba.conf"
}

postgres_after_start() {
    local db
    for db in test root; do
        if ! psql -h 127.0.0.1 -U postgres -Atc "select 1 from pg_database where datname = '$db'" | grep -q 1; then
            log "postgres: creating database $db"
            psql -h 127.0.0.1 -U postgres -qc "create database \"$db\""
        fi
    done
}

redis_after_install() { :; }
redis_after_start() { :; }

rabbitmq_after_install() {
    # A fixed node name does not depend on the host name resolving.
    if ! grep -qs '^NODENAME=' /etc/rabbitmq/rabbitmq-env.conf; then
        log "rabbitmq: node name rabbit@localhost"
        printf '%s\n' 'NODENAME=rabbit@localhost' 'ERL_EPMD_ADDRESS=127.0.0.1' \
            >>/etc/rabbitmq/rabbitmq-env.conf
    fi
}
rabbitmq_after_start() { :; }

# --- programs the tests need (not services, but installed the same way) ---

# command:package pairs. ffmpeg (with ffprobe) and sox are the media
# service's external encoders (AAC, still-image MP4, AMR-NB through
# libopencore-amrnb) and what its tests check outputs with. The build itself
# needs none: CMake for the bundled libopus comes through scripts/cmake.
BUILD_TOOLS=(ffmpeg:ffmpeg ffprobe:ffmpeg sox:sox)

ensure_build_tools() {
    local entry missing=()
    for entry in "${BUILD_TOOLS[@]}"; do
        command -v "${entry%%:*}" >/dev/null || missing+=("${entry#*:}")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    if [ "$APT_UPDATED" = no ]; then
        log "apt-get update"
        apt-get update -q || fail "build tools: apt-get update failed"
        APT_UPDATED=yes
    fi
    log "build tools: DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" ||
        fail "build tools: apt-get install ${missing[*]} failed"
}

# --- shared steps ----------------------------------------------------------

install_package() {
    local service="$1" package
    package="$("${service}_package")"
    if [ "$APT_UPDATED" = no ]; then
        log "apt-get update"
        apt-get update -q || fail "$service: apt-get update failed"
        APT_UPDATED=yes
    fi
    # Only the missing package: reinstalling all would upgrade (and restart)
    # services that are running fine.
    log "$service: DEBIAN_FRONTEND=noninteractive apt-get install -y $package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" ||
        fail "$service: apt-get install $package failed"
    "${service}_installed" || fail "$service: still not installed after apt-get install $package"
}

show_log_tail() {
    local service="$1" file
    # shellcheck disable=SC2012  # newest log file by time
    case "$service" in
        postgres) file="$(ls -t /var/log/postgresql/*.log 2>/dev/null | head -n 1 || true)" ;;
        redis) file=/var/log/redis/ci.log ;;
        rabbitmq) file="$(ls -t /var/log/rabbitmq/*.log 2>/dev/null | head -n 1 || true)" ;;
    esac
    if [ -n "${file:-}" ] && [ -f "$file" ]; then
        echo "services: last lines of $file:" >&2
        tail -n 20 "$file" >&2 || true
    fi
}

wait_until_answers() {
    local service="$1" waited=0
    until "${service}_answers"; do
        if [ "$waited" -ge "$WAIT_SECONDS" ]; then
            show_log_tail "$service"
            fail "$service does not answer after ${WAIT_SECONDS}s"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "$service: up after ${waited}s"
}

ensure() {
    local service="$1"
    if "${service}_answers"; then
        log "$service: up (already running)"
        return
    fi
    log "$service: not answering"
    local installed_now=no
    if ! "${service}_installed"; then
        install_package "$service"
        "${service}_after_install"
        installed_now=yes
    fi
    # Starting may fail harmlessly when the service is already on its way
    # up; the wait below decides.
    "${service}_start" || log "$service: start command exited with $? (waiting anyway)"
    wait_until_answers "$service"
    if [ "$installed_now" = yes ]; then
        "${service}_after_start"
    fi
}

# Every test database is a fresh one (`telenet_store::testing::fresh_postgres`)
# and none is dropped by its test: on a machine that runs the suite again and
# again they would fill the disk (about 1 GB a run). A run's own databases
# are younger than the cut-off or in use, so concurrent runs keep theirs.
prune_test_databases() {
    postgres_answers || return 0
    local minutes="${PRUNE_AFTER_MINUTES:-120}" db dropped=0
    while IFS= read -r db; do
        [ -n "$db" ] || continue
        # Fails (and is skipped) if someone connected meanwhile.
        if psql -h 127.0.0.1 -U postgres -qc "drop database if exists \"$db\"" >/dev/null 2>&1; then
            dropped=$((dropped + 1))
        fi
    done < <(psql -h 127.0.0.1 -U postgres -Atc "
        select datname from pg_database d
        where datname like 'telenet\_test\_%'
          and not exists (select 1 from pg_stat_activity a where a.datname = d.datname)
          and (pg_stat_file('base/' || d.oid || '/PG_VERSION')).modification
              < now() - interval '$minutes minutes'")
    log "postgres: dropped $dropped test database(s) older than $minutes minutes"
}

main() {
    case "${1:-}" in
        ensure)
            local service
            ensure_build_tools
            for service in "${SERVICES[@]}"; do
                ensure "$service"
            done
            log "all up: ${SERVICES[*]}"
            prune_test_databases
            ;;
        prune)
            prune_test_databases
            ;;
        status)
            local service down=0
            for service in "${SERVICES[@]}"; do
                if "${service}_answers"; then
                    log "$service: up"
                else
                    log "$service: DOWN"
                    down=1
                fi
            done
            return "$down"
            ;;
        *)
            echo "usage: $0 ensure|status|prune" >&2
            exit 2
            ;;
    esac
}

main "$@"
