#!/usr/bin/env bash
# Create .venv with CPython 3.11 (.python-version) and install msc into it from the lock
# (requirements/*.txt, made by scripts/lock.sh), with uv, pinned here.
# Usage: bash scripts/setup.sh [test]       test: the test tools too (requirements/test.txt)
#        bash scripts/setup.sh --no-project  only .venv and uv (what scripts/lock.sh needs)
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
python_version=$(cat .python-version)
PYTHON=${PYTHON:-python$python_version}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -c "import sys; v = '.'.join(map(str, sys.version_info[:2])); \
assert v == '$python_version', f'.venv has Python {v}; msc is locked for $python_version (rm -rf .venv)'"
[ "$(.venv/bin/uv --version 2>/dev/null)" = "uv $UV_VERSION" ] ||
    .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
[ "${1:-}" = --no-project ] && exit 0
lock=requirements/${1:-runtime}.txt
[ -f "$lock" ] || { echo "setup.sh: no lock $lock (use: setup.sh [test])" >&2; exit 2; }
uv=(.venv/bin/uv pip install --quiet --python .venv/bin/python)
# --compile-bytecode: every process (the driver and each Ray worker) would otherwise compile
# about a thousand modules from source where .pyc files are not written (PYTHONDONTWRITEBYTECODE).
"${uv[@]}" --compile-bytecode --require-hashes -r "$lock"
"${uv[@]}" --no-deps -e .
