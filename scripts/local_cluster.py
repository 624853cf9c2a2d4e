"""A local multi-node Ray cluster (cluster/local/start.sh) for tests and benchmarks, stopped on exit.

    with local_cluster(head_cpus=2, worker_cpus=2) as cluster:
        subprocess.run([..., "--address", cluster.address], env=cluster.env)
        cluster.kill_node(1)            # SIGKILL every process of worker node 1 (raylet, workers, agents)

Only what start.sh started is stopped (cluster/local/stop.sh, by session id): other Ray
processes on the machine are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
START = REPO / "cluster" / "local" / "start.sh"
STOP = REPO / "cluster" / "local" / "stop.sh"
RAY = Path(sys.executable).parent / "ray"


@dataclass
class LocalCluster:
    """A running cluster: ``env`` is the client environment (token, addresses), ``state`` its state dir."""

    state: Path
    env: dict
    sids: dict[int, int]

    @property
    def address(self) -> str:
        """The GCS address, for ``--address``."""
        return self.env["MSC_RAY_GCS_ADDRESS"]

    def processes(self, node: int | None = None) -> list[tuple[int, str]]:
        """(pid, command line) of the processes of one node's session, or of every node's."""
        wanted = set(self.sids.values()) if node is None else {self.sids[node]}
        out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True, check=True).stdout
        rows = [line.split(None, 2) for line in out.splitlines()]
        return [(int(row[0]), row[2] if len(row) > 2 else "") for row in rows if int(row[1]) in wanted]

    def kill_node(self, node: int) -> int:
        """SIGKILL every process of worker node ``node`` (its raylet, Ray workers, agents); returns how many."""
        if node == 0:
            raise ValueError("node 0 is the head; killing it ends the cluster")
        killed = 0
        for pid, _ in self.processes(node):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        return killed


def client_env(state: Path, base: dict) -> dict:
    """``base`` plus the variables of ``state/cluster.env``."""
    env = dict(base)
    for line in (state / "cluster.env").read_text().splitlines():
        if line.startswith("export "):
            key, value = line.removeprefix("export ").split("=", 1)
            env[key] = shlex.split(value)[0]
    return env


@contextlib.contextmanager
def local_cluster(*, head_cpus: int, worker_cpus: int, workers: int = 1,
                  object_store_bytes: int = 512 * 2 ** 20, log=print) -> Iterator[LocalCluster]:
    """Start head + ``workers`` worker nodes with start.sh in a fresh state dir; stop them with stop.sh.

    Raises
    ------
    RuntimeError
        start.sh failed, or stop.sh left processes of the cluster behind.
    """
    if not RAY.exists():
        raise FileNotFoundError(f"no ray CLI beside {sys.executable}")
    state = Path(tempfile.mkdtemp(prefix="msc-ray-", dir="/tmp"))  # short: Ray puts unix sockets under it
    base = {key: value for key, value in os.environ.items()
            if not key.startswith(("RAY_ADDRESS", "RAY_AUTH", "RAY_API_SERVER", "MSC_RAY"))}
    base.update(PATH=f"{RAY.parent}{os.pathsep}{base.get('PATH', '')}", MSC_RAY_BIN=str(RAY),
                MSC_RAY_WORKERS=str(workers), MSC_RAY_HEAD_CPUS=str(head_cpus),
                MSC_RAY_WORKER_CPUS=str(worker_cpus), MSC_RAY_OBJECT_STORE_BYTES=str(object_store_bytes))
    started = subprocess.run([str(START), str(state)], env=base, capture_output=True, text=True, timeout=300)
    sids = {int(path.stem[1:]): int(path.read_text()) for path in state.glob("n*.sid")}
    cluster = LocalCluster(state, env={}, sids=sids)
    try:
        if started.returncode != 0:
            raise RuntimeError(f"start.sh failed:\n{started.stderr[-3000:]}")
        log(started.stdout.strip())
        cluster.env = client_env(state, base)
        yield cluster
    finally:
        stopped = subprocess.run([str(STOP), str(state), "--purge"], env=base, capture_output=True, text=True,
                                 timeout=180)
        left = cluster.processes()
        shutil.rmtree(state, ignore_errors=True)
        if stopped.returncode != 0 or left:
            raise RuntimeError(f"stop.sh failed or left processes {left}:\n{stopped.stderr[-2000:]}")
