"""Where the fixed cost of ``msc infer`` (and ``msc predict``) goes, in one run.

    python benchmarks/bench_startup.py [--repeats 2]

Each phase runs in a fresh Python process (best wall time of ``--repeats``):

- ``python -c pass``: the interpreter alone;
- ``import jobs.cli`` (what ``msc --help`` pays);
- ``import tensorflow``, ``import ray, ray.data``: the two heavy libraries;
- a local ``ray.init(num_cpus=2)`` and ``ray.shutdown()``, imports excluded;
- loading the bundled default model, imports excluded;
- ``msc infer`` and ``msc predict`` on one 6-s file, end to end, and the labelling itself
  (their wall time less the sum of the phases above that they pay).

Printed as a table of seconds, and the fixed overhead of ``msc infer`` on one file: its wall time
minus the time ``msc predict`` takes to label the same file in-process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHASES = {
    "interpreter": "pass",
    "import jobs.cli": "import jobs.cli",
    "import tensorflow": "import tensorflow",
    "import ray, ray.data": "import ray, ray.data",
    "ray.init + shutdown (local, 2 CPUs)": (
        "import ray, ray.data, time; t = time.perf_counter(); "
        "ray.init(address='local', num_cpus=2, include_dashboard=False, log_to_driver=False); "
        "ray.shutdown(); print(time.perf_counter() - t)"),
    "load the default model": (
        "import tensorflow, time; from msc_core.labelling import load_model; t = time.perf_counter(); "
        "load_model(); print(time.perf_counter() - t)"),
}


def timed(argv: list[str]) -> tuple[float, str]:
    """Wall seconds of one process, and its stdout."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


def best(argv: list[str], repeats: int, *, inner: bool = False) -> float:
    """Best of ``repeats``: the whole process, or the seconds it prints itself (``inner``)."""
    runs = []
    for _ in range(repeats):
        wall, out = timed(argv)
        runs.append(float(out.strip().splitlines()[-1]) if inner else wall)
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from tests.conftest import write_audio

    python = sys.executable
    seconds = {}
    for name, code in PHASES.items():
        seconds[name] = best([python, "-c", code], args.repeats, inner="print(" in code)
    with tempfile.TemporaryDirectory() as tmp:
        audio = write_audio(Path(tmp) / "in" / "talk.wav", "speech", 6.0)
        seconds["msc predict, one 6-s file"] = best([python, "-m", "jobs.cli", "predict", str(audio)], args.repeats)
        infer = []
        for i in range(args.repeats):
            infer.append(timed([python, "-m", "jobs.cli", "-q", "infer", str(audio.parent), "--out",
                                f"{tmp}/out{i}", "--num-cpus", "2"])[0])
        seconds["msc infer, one 6-s file"] = min(infer)
    width = max(map(len, seconds))
    print(f"{'phase':<{width}}  seconds (best of {args.repeats})")
    for name, value in seconds.items():
        print(f"{name:<{width}}  {value:7.2f}")
    overhead = seconds["msc infer, one 6-s file"] - seconds["msc predict, one 6-s file"]
    print(f"\nfixed overhead of msc infer over msc predict on one file: {overhead:.2f} s")
    print("(msc predict pays the interpreter, TensorFlow and the model; msc infer pays those in its driver "
          "and again in its model actor, plus Ray's start)")


if __name__ == "__main__":
    main()
