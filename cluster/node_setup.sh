#!/usr/bin/env bash
# Prepare one cloud VM of an msc Ray cluster (run by the cluster launcher's setup_commands,
# see cluster/aws.yaml and cluster/gcp.yaml; idempotent, so `ray up` can re-run it).
#
#   MSC_RAY_VERSION=2.60.0 MSC_PYTHON_VERSION=3.11 MSC_CLOUD=aws bash ~/msc-cluster/node_setup.sh cpu|gpu
#
# * a Python $MSC_PYTHON_VERSION virtualenv in ~/msc-venv (made with uv, whatever the image's Python);
# * every dependency from the lock, ~/msc-requirements/runtime.txt (file_mounts from ./requirements,
#   pinned with hashes), then the msc wheel from ~/msc-dist (file_mounts from ./dist) without
#   dependencies; the Ray it installed must be $MSC_RAY_VERSION; on `gpu` nodes tensorflow-cpu is
#   swapped for the CUDA build of the same TensorFlow version;
# * the cloud SDK the autoscaler needs on the head (boto3 or the Google API client);
# * ~/.msc-ray/env: PATH, RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=~/.msc-ray/auth_token (the token
#   itself arrives by file_mounts from the laptop), sourced from ~/.bashrc so every launcher command
#   (`ray start`, `ray exec ... 'ray status'`) talks to the cluster with the token.
set -euo pipefail

role=${1:-cpu}
: "${MSC_RAY_VERSION:?set MSC_RAY_VERSION (the Ray version the lock pins)}"
lock=$HOME/msc-requirements/runtime.txt
python_version=${MSC_PYTHON_VERSION:-3.11}
cloud=${MSC_CLOUD:-}
venv=$HOME/msc-venv

if ! command -v uv >/dev/null 2>&1 && [[ ! -x "$HOME/.local/bin/uv" ]]; then
    curl -LsSf https://astral.sh/uv/install.sh | sh
fi
uv=$(command -v uv || echo "$HOME/.local/bin/uv")

"$uv" python install "$python_version"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import sys; assert sys.version.startswith('$python_version.')"; then
    rm -rf "$venv"
    "$uv" venv --seed --python "$python_version" "$venv"
fi

shopt -s nullglob
wheels=("$HOME"/msc-dist/msc-*.whl)
if [[ ${#wheels[@]} -ne 1 ]]; then
    echo "node_setup.sh: expected exactly one msc wheel in ~/msc-dist (build it with" \
         "'python -m pip wheel --no-deps -w dist .' in the repository), found ${#wheels[@]}" >&2
    exit 1
fi

extra=()
case $cloud in
    aws) extra+=("boto3") ;;
    gcp) extra+=("google-api-python-client" "google-auth" "cryptography") ;;
esac

"$uv" pip install --python "$venv/bin/python" --compile-bytecode --require-hashes -r "$lock"
"$uv" pip install --python "$venv/bin/python" --no-deps "${wheels[0]}"
[[ ${#extra[@]} -eq 0 ]] || "$uv" pip install --python "$venv/bin/python" "${extra[@]}"
"$venv/bin/python" -c "import ray, sys; sys.exit(0 if ray.__version__ == '$MSC_RAY_VERSION' else
    f'node_setup.sh: the lock installed Ray {ray.__version__}, the config says $MSC_RAY_VERSION')"

if [[ $role == gpu ]]; then
    # The lock installs tensorflow-cpu on x86_64; GPU nodes need the CUDA build of the same version.
    tf_version=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('tensorflow-cpu'))")
    "$uv" pip uninstall --python "$venv/bin/python" tensorflow-cpu || true
    "$uv" pip install --python "$venv/bin/python" "tensorflow[and-cuda]==$tf_version"
fi

mkdir -p "$HOME/.msc-ray"
chmod 700 "$HOME/.msc-ray"
if [[ ! -s "$HOME/.msc-ray/auth_token" ]]; then
    echo "node_setup.sh: ~/.msc-ray/auth_token is missing: file_mounts must bring the cluster token" >&2
    exit 1
fi
chmod 600 "$HOME/.msc-ray/auth_token"
cat >"$HOME/.msc-ray/env" <<EOF
export PATH=$venv/bin:\$PATH
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$HOME/.msc-ray/auth_token
export RAY_USAGE_STATS_ENABLED=0
EOF
grep -qxF 'source ~/.msc-ray/env' "$HOME/.bashrc" 2>/dev/null || {
    # First line, so non-interactive shells that stop early in .bashrc still see it.
    { echo 'source ~/.msc-ray/env'; cat "$HOME/.bashrc" 2>/dev/null || true; } >"$HOME/.bashrc.msc"
    mv "$HOME/.bashrc.msc" "$HOME/.bashrc"
}
"$venv/bin/python" -c "import ray, jobs, msc_core; print('msc node ready: ray', ray.__version__)"
