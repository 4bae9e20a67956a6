#!/usr/bin/env bash
# Checks of the v1 API, a published contract (see proto/README.md): buf lint
# with the exceptions of our Google-API style (buf.yaml), and buf breaking
# against main and against the published image proto/published/telenet-v1.binpb.
# Fields, messages and RPCs may be added; nothing may be renamed, renumbered,
# retyped or removed. The Buf CLI comes from PyPI (buf-bin) into .venv-proto/.
#
#   scripts/check-proto.sh            lint and breaking checks
#   scripts/check-proto.sh publish    rewrite the published image from proto/
#                                     (only when a new contract is published)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv-proto
version=1.75.0
python=${PYTHON:-python3}
image=proto/published/telenet-v1.binpb

fail() {
    echo "check-proto: $*" >&2
    exit 1
}

command -v "$python" >/dev/null || fail "$python not found (Python 3 is needed to install the Buf CLI)"
if [[ "$("$venv/bin/buf" --version 2>/dev/null || true)" != "$version" ]]; then
    echo "check-proto: installing the Buf CLI $version into $venv (PyPI package buf-bin)"
    rm -rf "$venv"
    "$python" -m venv "$venv" || fail "cannot create $venv (is the venv module installed?)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        "buf-bin==$version" || fail "installing buf-bin==$version from PyPI failed"
fi
buf="$venv/bin/buf"

if [[ "${1:-}" == publish ]]; then
    "$buf" build -o "$image"
    echo "check-proto: wrote $image"
    exit 0
fi

"$buf" lint || fail "buf lint found problems (buf.yaml lists the accepted exceptions)"
"$buf" breaking --against "$image" ||
    fail "breaking change against the published contract $image"
if git rev-parse --verify --quiet main >/dev/null; then
    "$buf" breaking --against '.git#branch=main,subdir=proto' ||
        fail "breaking change against main"
else
    echo "check-proto: no main branch here; checked against $image only"
fi
# The check must be able to fail: a renumbered field in a copy is refused.
planted=$(mktemp -d)
trap 'rm -rf "$planted"' EXIT
cp -r buf.yaml proto "$planted/"
sed -i '0,/ = 1;/s// = 99;/' "$planted/proto/telenet/common/v1/common.proto"
if (cd "$planted" && "$OLDPWD/$buf" breaking --against "$OLDPWD/$image" >/dev/null 2>&1); then
    fail "a renumbered field passed the breaking check: the check is not working"
fi
echo "check-proto: lint and breaking checks passed"
