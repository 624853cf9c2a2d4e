"""CPU seconds of a command and of every process it starts (Ray's raylet, workers and their children).

:func:`run_measured` runs a command in a new session and samples ``/proc``
every ``interval_s``: each process of the command's session, or descended from
it, counts with its own user + system time at its last sample (children's
times are not added, so nothing counts twice). What a process spends after its
last sample (at most ``interval_s``, when it exits) is missed; Ray's processes
live until the job ends, so that is a few tens of ms per run. Linux only.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measured:
    """One command's exit code, wall seconds and CPU seconds of its process tree."""

    returncode: int
    wall_s: float
    cpu_s: float


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, session id, user + system CPU seconds) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[3]), (int(fields[11]) + int(fields[12])) / _TICK


def run_measured(argv: list[str], *, interval_s: float = 0.05, linger_s: float = 15.0, **popen) -> Measured:
    """Run ``argv`` (``subprocess.Popen`` keywords in ``popen``) and measure it; see the module docstring.

    Processes it leaves behind are followed for at most ``linger_s`` after it exits.
    """
    started = ended = time.perf_counter()
    process = subprocess.Popen(argv, start_new_session=True, **popen)
    cpu: dict[int, float] = {}
    while True:
        done = process.poll() is not None
        stats = {pid: stat for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if (stat := _stat(pid)) is not None}
        tree = {process.pid}
        grew = True
        while grew:
            size = len(tree)
            tree |= {pid for pid, (parent, session, _) in stats.items() if parent in tree or session == process.pid}
            grew = len(tree) > size
        alive = [pid for pid in tree if pid in stats]
        for pid in alive:
            cpu[pid] = max(cpu.get(pid, 0.0), stats[pid][2])
        if done and (not alive or time.perf_counter() - ended > linger_s):
            break
        if not done:
            ended = time.perf_counter()
        time.sleep(interval_s)
    return Measured(process.returncode, time.perf_counter() - started, sum(cpu.values()))
