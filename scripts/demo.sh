#!/usr/bin/env bash
# The README's main command: set up .venv and run `msc demo` on a local in-process Ray.
# Usage: bash scripts/demo.sh [msc demo args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/msc demo "$@"
