#!/usr/bin/env bash
# Start a local multi-node Ray cluster for msc: one head and N worker nodes, each a
# separate raylet on this machine, dashboard bound to 127.0.0.1, token auth ON.
#
#   cluster/local/start.sh [STATE_DIR]
#   source STATE_DIR/cluster.env          # RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH, RAY_API_SERVER_ADDRESS
#   ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.featurize ...
#   cluster/local/stop.sh [STATE_DIR]     # stops only what this script started
#
# STATE_DIR (default: $MSC_RAY_STATE, else ${TMPDIR:-/tmp}/msc-ray-$USER) holds everything
# this cluster owns: the token (auth_token, mode 0600), one Ray temp dir per node (n0 = head,
# n1.. = workers, each with its own session logs and ray_current_cluster file, so nothing is
# written to /tmp/ray and no other `ray.init()` on the machine is captured), the session id
# of every node (n*.sid, used by stop.sh) and cluster.env for clients. Keep the path short:
# Ray puts unix sockets under it (limit ~107 characters).
#
# Settings (environment):
#   MSC_RAY_WORKERS=1            worker nodes besides the head
#   MSC_RAY_HEAD_CPUS, MSC_RAY_WORKER_CPUS   logical CPUs per node (default: half the cores, >= 1)
#   MSC_RAY_OBJECT_STORE_BYTES   object store per node (default 1 GiB)
#   MSC_RAY_PORT, MSC_RAY_DASHBOARD_PORT, MSC_RAY_CLIENT_PORT  (default: free ports)
#   MSC_RAY_BIN                  the `ray` executable (default: ./.venv/bin/ray, else PATH)
#   RAY_AUTH_TOKEN               reuse this token instead of generating one (only used when
#                                STATE_DIR/auth_token does not exist yet)
#
# Token auth: every node is started with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=STATE_DIR/auth_token;
# Ray's GCS, raylets and dashboard then refuse requests without that bearer token. Clients get it
# from the same two variables (cluster.env), or with RAY_AUTH_TOKEN="$(cat STATE_DIR/auth_token)".
#
# Network note (measured with Ray 2.59): Ray rewrites --node-ip-address=127.0.0.1 to the host's
# routable IP (ray._private.services.resolve_ip_for_localhost) and the GCS/raylet gRPC ports listen
# on all interfaces; only the dashboard/job API is bound to 127.0.0.1. Token auth is what protects
# the gRPC ports, which is one more reason never to turn it off.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${1:-${MSC_RAY_STATE:-${TMPDIR:-/tmp}/msc-ray-$(id -un)}}
mkdir -p "$state"
state=$(cd "$state" && pwd)

if [[ -n "${MSC_RAY_BIN:-}" ]]; then
    ray_bin=$MSC_RAY_BIN
elif [[ -x "$repo/.venv/bin/ray" ]]; then
    ray_bin=$repo/.venv/bin/ray
else
    ray_bin=$(command -v ray) || { echo "start.sh: no 'ray' executable (set MSC_RAY_BIN)" >&2; exit 1; }
fi
python_bin=$(dirname "$ray_bin")/python
[[ -x "$python_bin" ]] || python_bin=$(command -v python3)

# Refuse to start twice on one state dir: stop.sh first.
for sidfile in "$state"/n*.sid; do
    [[ -e "$sidfile" ]] || continue
    if ps -eo sid= | awk -v s="$(cat "$sidfile")" '$1 == s {found = 1} END {exit !found}'; then
        echo "start.sh: a cluster from $state is still running; run cluster/local/stop.sh $state first" >&2
        exit 1
    fi
    rm -f "$sidfile"
done
rm -f "$state/cluster.env"

cores=$(nproc 2>/dev/null || echo 2)
half=$(( cores / 2 > 0 ? cores / 2 : 1 ))
workers=${MSC_RAY_WORKERS:-1}
head_cpus=${MSC_RAY_HEAD_CPUS:-$half}
worker_cpus=${MSC_RAY_WORKER_CPUS:-$half}
object_store=${MSC_RAY_OBJECT_STORE_BYTES:-$((1024 * 1024 * 1024))}

# Free TCP ports, chosen together so they differ from each other (small race with other programs).
free_ports() {
    "$python_bin" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r -a ports <<<"$(free_ports $((4 + workers)))"
gcs_port=${MSC_RAY_PORT:-${ports[0]}}
dashboard_port=${MSC_RAY_DASHBOARD_PORT:-${ports[1]}}
client_port=${MSC_RAY_CLIENT_PORT:-${ports[2]}}
# Every node runs a dashboard agent on a fixed HTTP port (default 52365): give each its own.
agent_ports=("${ports[@]:3}")

# The token: generated once per state dir, readable only by this user.
token_file=$state/auth_token
if [[ ! -s "$token_file" ]]; then
    (
        umask 077
        if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then
            printf '%s' "$RAY_AUTH_TOKEN" >"$token_file"
        else
            "$python_bin" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$token_file"
        fi
    )
fi
chmod 600 "$token_file"

export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$token_file
unset RAY_AUTH_TOKEN RAY_ADDRESS RAY_API_SERVER_ADDRESS
export RAY_USAGE_STATS_ENABLED=0
# Job entrypoints (`python -m jobs.<job>`) run with the raylet's PATH: put this Ray's Python first.
export PATH=$(dirname "$ray_bin"):$PATH
# Marker inherited by every process of this cluster (job drivers included): stop.sh finds
# stragglers that left the node's session by it.
export MSC_RAY_LOCAL_CLUSTER=$state

# Run `ray start` in a new session whose id is recorded: every daemon it leaves behind
# (GCS, raylet, dashboard, agents, Ray workers) stays in that session.
start_node() {  # name, ray start args...
    local name=$1; shift
    echo "start.sh: starting $name: ray start $*" >&2
    if ! setsid --wait bash -c 'echo $$ >"$0"; exec "$@"' "$state/$name.sid" "$ray_bin" start "$@" \
            >"$state/$name.log" 2>&1; then
        cat "$state/$name.log" >&2
        echo "start.sh: ray start failed for $name; stopping what was started" >&2
        env -u MSC_RAY_LOCAL_CLUSTER "$here/stop.sh" "$state" >&2 || true
        exit 1
    fi
}

start_node n0 --head --node-ip-address=127.0.0.1 --port="$gcs_port" \
    --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port" --include-dashboard=true \
    --ray-client-server-port="$client_port" --dashboard-agent-listen-port="${agent_ports[0]}" \
    --num-cpus="$head_cpus" --object-store-memory="$object_store" \
    --temp-dir="$state/n0" --disable-usage-stats

for ((i = 1; i <= workers; i++)); do
    start_node "n$i" --address="127.0.0.1:$gcs_port" --node-ip-address=127.0.0.1 \
        --dashboard-agent-listen-port="${agent_ports[$i]}" \
        --num-cpus="$worker_cpus" --object-store-memory="$object_store" \
        --temp-dir="$state/n$i" --disable-usage-stats
done

# Wait until every node is alive, and check the job API answers with the token.
want=$((workers + 1))
alive=0
for _ in $(seq 1 60); do
    alive=$("$ray_bin" status --address="127.0.0.1:$gcs_port" 2>/dev/null | grep -cE '^ +1 node_' || true)
    [[ "$alive" -ge "$want" ]] && break
    sleep 1
done
if [[ "$alive" -lt "$want" ]]; then
    echo "start.sh: only $alive of $want nodes came up; see $state/n*.log" >&2
    env -u MSC_RAY_LOCAL_CLUSTER "$here/stop.sh" "$state" >&2 || true
    exit 1
fi
"$ray_bin" job list --address="http://127.0.0.1:$dashboard_port" >/dev/null

cat >"$state/cluster.env" <<EOF
# Written by cluster/local/start.sh; source it to talk to this cluster.
export MSC_RAY_STATE=$(printf '%q' "$state")
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$(printf '%q' "$token_file")
export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$dashboard_port
export MSC_RAY_GCS_ADDRESS=127.0.0.1:$gcs_port
export MSC_RAY_NODES=$want
EOF

cat <<EOF
Ray cluster up: $want nodes (head $head_cpus CPU, $workers worker(s) x $worker_cpus CPU), token auth on.
  dashboard / job API : http://127.0.0.1:$dashboard_port
  GCS address         : 127.0.0.1:$gcs_port   (msc <job> --address 127.0.0.1:$gcs_port)
  token file          : $token_file
  client environment  : source $state/cluster.env
  stop                : $here/stop.sh $state
EOF
