#!/usr/bin/env bash
# Stop the local Ray cluster that cluster/local/start.sh started from STATE_DIR, and nothing else.
#
#   cluster/local/stop.sh [STATE_DIR] [--purge]
#
# It does not use `ray stop`, which kills every Ray process of the user (other clusters, other
# engineers' tests, in-process `ray.init()` runs). Instead it signals exactly:
#   * the processes of each node's session (STATE_DIR/n*.sid, recorded by start.sh: GCS, raylet,
#     dashboard, agents, Ray workers), workers first, then the head;
#   * processes that left those sessions (Ray job drivers run in a session of their own) but carry
#     MSC_RAY_LOCAL_CLUSTER=STATE_DIR in their environment, which start.sh set for the cluster.
# SIGTERM first, SIGKILL after MSC_RAY_STOP_GRACE seconds (default 10).
# --purge also deletes STATE_DIR (token, logs); without it the logs stay for inspection.
set -uo pipefail
# Children of this script must not match the marker themselves.
unset MSC_RAY_LOCAL_CLUSTER

purge=0
args=()
for arg in "$@"; do
    case $arg in
        --purge) purge=1 ;;
        *) args+=("$arg") ;;
    esac
done
state=${args[0]:-${MSC_RAY_STATE:-${TMPDIR:-/tmp}/msc-ray-$(id -un)}}
if [[ ! -d "$state" ]]; then
    echo "stop.sh: $state does not exist; nothing to stop" >&2
    exit 0
fi
state=$(cd "$state" && pwd)
grace=${MSC_RAY_STOP_GRACE:-10}
me=$$

session_pids() {  # sid -> pids in that session, never this script or its parent
    ps -eo pid=,sid= | awk -v s="$1" -v me="$me" -v parent="$PPID" \
        '$2 == s && $1 != me && $1 != parent {print $1}'
}

marker_pids() {  # processes whose environment names this state dir
    local env_file pid
    for env_file in /proc/[0-9]*/environ; do
        pid=${env_file#/proc/}; pid=${pid%/environ}
        [[ "$pid" == "$me" || "$pid" == "$PPID" ]] && continue
        if { tr '\0' '\n' <"$env_file"; } 2>/dev/null | grep -qxF "MSC_RAY_LOCAL_CLUSTER=$state"; then
            echo "$pid"
        fi
    done
}

alive() { local pid; for pid in "$@"; do kill -0 "$pid" 2>/dev/null && echo "$pid"; done; }

terminate() {  # label, pids...
    local label=$1; shift
    local pids=("$@") left
    [[ ${#pids[@]} -eq 0 ]] && return 0
    echo "stop.sh: stopping $label (${#pids[@]} processes)" >&2
    kill -TERM "${pids[@]}" 2>/dev/null
    for ((t = 0; t < grace * 5; t++)); do
        left=$(alive "${pids[@]}")
        [[ -z "$left" ]] && return 0
        sleep 0.2
    done
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null
    for ((t = 0; t < 25; t++)); do
        [[ -z "$(alive $left)" ]] && return 0
        sleep 0.2
    done
    echo "stop.sh: still alive after SIGKILL: $(alive $left)" >&2
}

# Workers first (n1, n2, ...), the head (n0) last.
mapfile -t sidfiles < <(ls "$state"/n*.sid 2>/dev/null | sort -V -r)
for sidfile in "${sidfiles[@]}"; do
    sid=$(cat "$sidfile")
    if [[ "$sid" =~ ^[0-9]+$ ]]; then
        mapfile -t pids < <(session_pids "$sid")
        terminate "node $(basename "$sidfile" .sid)" "${pids[@]}"
    fi
    rm -f "$sidfile"
done

mapfile -t pids < <(marker_pids)
terminate "stragglers of $state" "${pids[@]}"

rm -f "$state/cluster.env"
if [[ $purge -eq 1 ]]; then
    rm -rf "$state"
fi
echo "stop.sh: cluster of $state stopped" >&2
