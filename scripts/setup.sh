#!/usr/bin/env bash
# Create .venv (Python 3.11 preferred) and install msc into it, with optional extras.
# Usage: bash scripts/setup.sh [EXTRAS]    e.g. bash scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${1:+[$1]}"
