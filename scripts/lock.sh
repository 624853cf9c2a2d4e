#!/usr/bin/env bash
# Refresh the lock: resolve pyproject.toml's ranges again for Linux / CPython 3.11 and write
#   requirements/test.txt     everything: msc, its s3/gcs extras and the test tools (CI, developers)
#   requirements/runtime.txt  msc with its s3/gcs extras (the demo, cluster nodes, the KubeRay image),
#                             the same versions as test.txt
# Every line is pinned with its hashes. Run it on purpose, then the whole suite, and commit both files.
# Usage: bash scripts/lock.sh [uv pip compile args...]   e.g. --upgrade-package ray
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-project >/dev/null
python_version=$(cat .python-version)
compile=(.venv/bin/uv pip compile pyproject.toml --universal --python-version "$python_version"
         --generate-hashes --no-header --extra s3 --extra gcs)
"${compile[@]}" --extra test "$@" -o requirements/test.txt
"${compile[@]}" -c requirements/test.txt -o requirements/runtime.txt
