#!/usr/bin/env bash
# An S3-compatible server for the tests of the S3 blob store: the server of
# moto (PyPI package `moto`), installed into .venv-s3/ at the repository root
# on first use and reused afterwards.
#
#   scripts/s3-server.sh ensure   install it unless installed; print the path
#                                 of the server program
#   scripts/s3-server.sh serve    start it on a free loopback port, print its
#                                 URL once it accepts connections, and stop it
#                                 when the calling process (a test binary)
#                                 exits or this script is terminated
#
# Everything but the URL goes to stderr, so a caller can read one line.
# Environment: S3_SERVER_WAIT_SECONDS (default 30) bounds the wait for the
# server; PYTHON (default python3) is the interpreter the venv is made from.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-s3"
PYTHON="${PYTHON:-python3}"
WAIT_SECONDS="${S3_SERVER_WAIT_SECONDS:-30}"
# moto's S3 backend and the web server its `moto_server` runs on; pinned so a
# new moto cannot change what the tests run against unnoticed.
PACKAGES=("moto[s3]==5.2.5" "flask>=3,<4" "flask-cors>=5,<7")

log() { echo "s3-server: $*" >&2; }
fail() {
    echo "s3-server: ERROR: $*" >&2
    exit 1
}

server_program() { echo "$VENV/bin/moto_server"; }

# Install when the venv is missing or was made for other packages. Test
# binaries may call this at the same time: a lock serialises them.
ensure() {
    mkdir -p "$VENV"
    exec 9>"$VENV/.lock"
    flock 9
    local wanted marker="$VENV/.installed"
    wanted="${PACKAGES[*]}"
    if [ -x "$(server_program)" ] && [ "$(cat "$marker" 2>/dev/null)" = "$wanted" ]; then
        flock -u 9
        return
    fi
    command -v "$PYTHON" >/dev/null || fail "$PYTHON not found (needed to install moto)"
    log "installing ${wanted} into $VENV (once)"
    rm -f "$marker"
    "$PYTHON" -m venv "$VENV" >&2 || fail "$PYTHON -m venv $VENV failed"
    if ! "$VENV/bin/pip" install --disable-pip-version-check --timeout 60 -q "${PACKAGES[@]}" \
        >"$VENV/install.log" 2>&1; then
        tail -n 20 "$VENV/install.log" >&2 || true
        fail "pip install ${wanted} failed (log: $VENV/install.log)"
    fi
    [ -x "$(server_program)" ] || fail "$(server_program) missing after the install"
    echo "$wanted" >"$marker"
    flock -u 9
}

free_port() {
    "$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

accepts() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

serve() {
    ensure
    local parent=$PPID attempt port log waited
    # Global: the EXIT trap runs after this function has returned.
    SERVER_PID=
    mkdir -p "$VENV/logs"
    # A port picked free can be taken before the server binds it; try again.
    for attempt in 1 2 3; do
        port="$(free_port)"
        log="$VENV/logs/moto-$port.log"
        "$(server_program)" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
        SERVER_PID=$!
        trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
        trap 'exit 0' TERM INT HUP
        waited=0
        while kill -0 "$SERVER_PID" 2>/dev/null && ! accepts "$port"; do
            if [ "$waited" -ge $((WAIT_SECONDS * 10)) ]; then
                tail -n 20 "$log" >&2 || true
                fail "moto_server does not accept connections on 127.0.0.1:$port after ${WAIT_SECONDS}s"
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            log "moto_server (pid $SERVER_PID) on 127.0.0.1:$port, log $log"
            echo "http://127.0.0.1:$port"
            # Serve until the caller is gone or the server stopped.
            while kill -0 "$parent" 2>/dev/null && kill -0 "$SERVER_PID" 2>/dev/null; do
                sleep 1
            done
            return
        fi
        log "moto_server exited at start (attempt $attempt):"
        tail -n 5 "$log" >&2 || true
    done
    fail "moto_server did not start"
}

case "${1:-}" in
    ensure)
        ensure
        server_program
        ;;
    serve) serve ;;
    *)
        echo "usage: $0 ensure|serve" >&2
        exit 2
        ;;
esac
