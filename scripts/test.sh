#!/usr/bin/env bash
# The README's test command: set up .venv with the test extras, run the default test suite.
# Usage: bash scripts/test.sh [pytest args...]     (pytest's "no tests collected", exit 5, fails too)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
