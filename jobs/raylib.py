"""Connecting to Ray the same way from every job.

``--address`` (or ``RAY_ADDRESS``, which ``ray job submit`` sets) joins an
existing cluster; otherwise a private local Ray starts in-process. msc passes
``address="local"`` for that, so a stale ``ray_current_cluster`` file or a head
left by ``ray start`` never captures a run meant to be local.
"""

from __future__ import annotations

import argparse
import os


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--address`` and ``--num-cpus``, shared by every Ray job."""
    group = parser.add_argument_group("Ray")
    group.add_argument("--address", default=None,
                       help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray started in-process)")
    group.add_argument("--num-cpus", type=int, default=None,
                       help="CPUs of the in-process local Ray (default: all); ignored with --address")


#: Tries at starting a local Ray: Ray gives its raylet a fixed 30 s to register, which a heavily
#: loaded machine can miss; a second try usually succeeds.
LOCAL_START_TRIES = 2


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Start or join Ray once per process; a no-op when Ray is already initialized.

    Raises
    ------
    MscError
        A local Ray did not start in ``LOCAL_START_TRIES`` tries.
    """
    import ray

    from jobs.console import quiet_ray_loggers, ray_init_options
    from msc_core.errors import MscError

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **ray_init_options())
    else:
        for attempt in range(1, LOCAL_START_TRIES + 1):
            try:
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **ray_init_options())
                break
            except Exception as error:  # Ray raises a bare Exception when its node misses the start deadline
                ray.shutdown()
                if attempt == LOCAL_START_TRIES:
                    raise MscError(f"a local Ray did not start ({error}); is the machine overloaded? "
                                   "Rerun the same command") from error
    ray.data.DataContext.get_current().enable_progress_bars = False
    quiet_ray_loggers()


def cluster_cpus() -> int:
    """Total CPUs the connected Ray cluster offers (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def node_cpus() -> list[float]:
    """CPUs of each alive node of the connected cluster (``[1]`` when none says)."""
    import ray

    return [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]] or [1]


def largest_node_cpus() -> float:
    """CPUs of the largest alive node of the connected cluster (at least 1)."""
    return max(node_cpus()) or 1
