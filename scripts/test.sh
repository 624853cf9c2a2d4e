#!/usr/bin/env bash
# Set up a virtual environment with the test extras and run the default test suite.
# Usage: bash scripts/test.sh [pytest args...]   (the README's test command)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# pytest exits 5 when it collects no test: that is a failure here too.
exec .venv/bin/python -m pytest "$@"
