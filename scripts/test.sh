#!/usr/bin/env bash
# The README's test command: set up .venv with the test extras, run the default test suite.
# Usage: bash scripts/test.sh [pytest args...]     (pytest's "no tests collected", exit 5, fails too)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The report's browser test needs headless Chromium; install it where this is a Debian-like root shell (CI).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing chromium (apt-get) for the report's browser test" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/tmp/msc-chromium-install.log 2>&1 \
        || echo "could not install chromium (see /tmp/msc-chromium-install.log); the browser test will skip" >&2
fi
exec .venv/bin/python -m pytest "$@"
