#!/usr/bin/env bash
# The REST API tested against its own OpenAPI document: builds the server,
# starts `telenet dev --ephemeral` on free loopback ports, reads the seeded
# owner's token from what it prints, creates a second workspace, gives each
# a channel and a few conversations (services/gateway/api-check/seed.py),
# and runs schemathesis against the gateway's GET /openapi.json as the
# first owner, with the second as its peer (settings and checks in
# services/gateway/api-check/schemathesis.toml; a fixed seed, so every run
# sends the same requests). Fails on any 5xx, any answer the document does
# not describe (status, content type, schema, headers), any error that is
# not a problem document, invalid data accepted, auth not enforced, or an
# object of one workspace served to the other's owner.
# Stops the server when done, whatever happened.
#
# schemathesis comes from PyPI into .venv-api/ (pinned in
# services/gateway/api-check/requirements.txt), installed once and again
# when that file changes. Extra arguments go to `schemathesis run`
# (e.g. --max-examples 200, --include-path /v1/channels).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv-api
check_dir=services/gateway/api-check
requirements=$check_dir/requirements.txt
python=${PYTHON:-python3}
target_dir=${CARGO_TARGET_DIR:-target}

fail() {
    echo "check-api: $*" >&2
    exit 1
}

command -v "$python" >/dev/null || fail "$python not found (Python 3.10 or later is needed)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || fail "$("$python" --version 2>&1) is too old: schemathesis needs Python 3.10 or later"

# The venv is reused while the requirements and the interpreter are the same.
stamp="$venv/.installed"
want="$(sha256sum "$requirements" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version)' | head -1)"
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "check-api: installing schemathesis into $venv (pinned in $requirements)"
    rm -rf "$venv"
    "$python" -m venv "$venv" || fail "cannot create $venv (is the venv module installed?)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --requirement "$requirements" \
        || fail "installing $requirements from PyPI failed (see pip's message above)"
    [[ -x "$venv/bin/schemathesis" ]] || fail "schemathesis is missing from $venv after the install"
    echo "$want" >"$stamp"
fi

cargo build --quiet -p telenet --bin telenet
bin="$target_dir/debug/telenet"
[[ -x "$bin" ]] || fail "$bin was not built"

work=$(mktemp -d)
server=""
stop_server() {
    if [[ -n "$server" ]] && kill -0 "$server" 2>/dev/null; then
        kill -INT "$server" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$server" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap stop_server EXIT

# Every listener on a free port, so the check runs next to a dev server or
# another check; the dev server prints the ports it got. Rate limits off:
# schemathesis sends thousands of requests with one token, and a 429 would
# stand in for the answer under test.
TELENET_GATEWAY__RATE_LIMITS__ENABLED=false \
TELENET_INGRESS__RATE_LIMITS__ENABLED=false \
"$bin" dev --ephemeral \
    --grpc-listen 127.0.0.1:0 \
    --gateway-listen 127.0.0.1:0 \
    --webhook-listen 127.0.0.1:0 \
    --metrics-listen '' \
    >"$work/out" 2>"$work/log" &
server=$!

gateway=""
token=""
for _ in $(seq 1200); do
    if grep -q '^token: ' "$work/out"; then
        gateway=$(sed -n 's/^gateway: //p' "$work/out")
        token=$(sed -n 's/^token: //p' "$work/out")
        break
    fi
    if ! kill -0 "$server" 2>/dev/null; then
        cat "$work/out" "$work/log" >&2
        fail "the dev server exited before it was ready"
    fi
    sleep 0.1
done
[[ -n "$gateway" && -n "$token" ]] || {
    tail -n 50 "$work/log" >&2
    fail "the dev server printed no gateway address and token within 120 s"
}
webhooks=$(sed -n 's/^webhooks: //p' "$work/out")
grpc=$(sed -n 's/^grpc: //p' "$work/out")
echo "check-api: testing $gateway (telenet dev --ephemeral, pid $server)"

# A second workspace, whose owner must never see the first one's objects.
TELENET_ENDPOINTS__CONVERSATIONS="http://$grpc" "$bin" create-workspace \
    --name "Other shop" --owner-name "Oscar" --owner-email oscar@example.com \
    >"$work/other" || fail "could not create a second workspace"
other_token=$(sed -n 's/^token: //p' "$work/other")
[[ -n "$other_token" ]] || fail "create-workspace printed no token"

for seed_token in "$token" "$other_token"; do
    "$venv/bin/python" "$check_dir/seed.py" "$gateway" "$webhooks" "$seed_token" \
        || fail "could not seed the dev server with a channel and conversations"
done

# The two owners, as schemathesis reads identities (Web Fuzzing Commons):
# requests go as the first; the second is its peer for the object-level
# authorization check.
"$venv/bin/python" - "$token" "$other_token" >"$work/auth.json" <<'PY'
import json, sys
print(json.dumps({"auth": [
    {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {token}"}]}
    for name, token in zip(["first-workspace", "second-workspace"], sys.argv[1:3])
]}))
PY
export TELENET_API_AUTH="$work/auth.json"

export PYTHONPATH="$PWD/$check_dir${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
# Hypothesis keeps what it learns in a directory; not in the work tree.
export HYPOTHESIS_STORAGE_DIRECTORY="$work/hypothesis"
status=0
"$venv/bin/schemathesis" --config-file "$check_dir/schemathesis.toml" --no-color \
    run "$gateway/openapi.json" --wait-for-schema 30 "$@" || status=$?
if [[ $status -ne 0 ]]; then
    echo "check-api: the server's last log lines:" >&2
    tail -n 30 "$work/log" >&2
    fail "schemathesis found answers that do not match the document (exit $status)"
fi
echo "check-api: the API matches its document"
