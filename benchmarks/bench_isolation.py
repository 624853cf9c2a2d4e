"""Cost of decoding in a supervised child process (the default) against decoding in-process, in one run.

    python benchmarks/bench_isolation.py [--files 48] [--repeats 3] [--long-minutes 60]

Prints:

- files/s of featurize's task function over the same archive, in-process and
  with each file decoded and featurized in the supervised child
  (``msc_core.isolation``), for 1-s files (the worst case: per-file overhead)
  and 20-s files, by wall time and by CPU time (this process plus the child,
  which is robust to other load on a shared machine); the ratios isolated /
  in-process (best of ``--repeats``, alternating the two);
- peak RSS on one long file: in-process, and the parent plus the child when
  isolated (the child streams its codes back one batch of 16 windows at a time);
- how long starting a child takes (once per worker, and again after a kill).

One thread per process, as in bench_featurize.py.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_featurize import single_process, write_archive  # noqa: E402
from msc_core.isolation import ChildProcess, shared_child  # noqa: E402
from msc_core.labelling import warm_up  # noqa: E402

# Peaks are VmHWM (kB), not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a process
# started by a larger one (this benchmark) would report its parent's size instead of its own.
PEAK_RSS = textwrap.dedent("""
    import re, sys
    from msc_core.isolation import ChildProcess
    from msc_core.labelling import featurize_file, warm_up

    def peak_kb(pid="self"):
        return int(re.search(r"VmHWM:\\s*(\\d+) kB", open(f"/proc/{pid}/status").read()).group(1))

    child = ChildProcess(warm_up=warm_up) if sys.argv[2] == "isolated" else None
    features = featurize_file(sys.argv[1], child=child)
    child_kb = peak_kb(child.pid) if child else 0
    if child:
        child.close()
    print(len(features.codes), features.codes.nbytes, peak_kb(), child_kb)
""")


def rates(source: Path, work: Path, *, files: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Best files per wall second and per CPU second (with the child's), in-process and isolated."""
    best = {}
    single_process(source, work / "warm", isolate=True)  # imports and caches in this process too
    child = shared_child(warm_up=warm_up).pid
    for k in range(repeats):
        for isolate in (False, True):
            cpu = time.process_time() + cpu_seconds(child)
            _, seconds = single_process(source, work / f"{isolate}-{k}", isolate=isolate)
            cpu = time.process_time() + cpu_seconds(child) - cpu
            kind = "isolated" if isolate else "in-process"
            wall, per_cpu = best.get(kind, (0.0, 0.0))
            best[kind] = (max(wall, files / seconds), max(per_cpu, files / cpu))
    return best


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_long(path: Path, minutes: float) -> Path:
    """A long 22,050 Hz mono file of noise, written in one-minute blocks."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=22050, channels=1, subtype="PCM_16") as sink:
        for _ in range(int(minutes)):
            sink.write(rng.uniform(-0.3, 0.3, 22050 * 60))
    return path


def peak_rss(path: Path, mode: str) -> tuple[int, int, float, float]:
    """Windows, bytes of codes, and peak RSS (MiB) of the process and of its child, featurizing ``path``."""
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(path), mode], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1]).stdout.split()
    windows, nbytes, own, child = map(int, out)
    return windows, nbytes, own / 1024, child / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-minutes", type=float, default=60.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="msc-bench-isolation-"))
    try:
        results = {}
        for seconds in (1.0, 20.0):
            source = work / f"archive-{seconds:g}"
            write_archive(source, files=args.files, seconds=seconds)
            results[seconds] = rates(source, work / f"runs-{seconds:g}", files=args.files, repeats=args.repeats)
        starts = []
        for _ in range(3):
            with ChildProcess(warm_up=warm_up) as child:
                started = time.perf_counter()
                child.start()
                starts.append(time.perf_counter() - started)
        long = write_long(work / "long.wav", args.long_minutes)
        memory = {mode: peak_rss(long, mode) for mode in ("in-process", "isolated")}

        print(f"{args.files} files per archive, best of {args.repeats} runs; load average now "
              f"{os.getloadavg()[0]:.2f}")
        for seconds, best in results.items():
            (wall_in, cpu_in), (wall_iso, cpu_iso) = best["in-process"], best["isolated"]
            print(f"{seconds:4g}-s files: in-process {wall_in:6.2f} files/s ({cpu_in:6.2f} per CPU s), "
                  f"isolated {wall_iso:6.2f} files/s ({cpu_iso:6.2f} per CPU s): ratio isolated / in-process "
                  f"{wall_iso / wall_in:.3f} by wall time, {cpu_iso / cpu_in:.3f} by CPU time")
        print(f"starting and warming up a child: {min(starts):.2f} s (best of 3; paid once per worker, "
              "and after each kill)")
        windows, nbytes, own, _ = memory["in-process"]
        print(f"{args.long_minutes:g}-min file ({windows} windows, {nbytes / 2**20:.1f} MiB of codes): "
              f"peak RSS in-process {own:.0f} MiB")
        _, _, parent, child = memory["isolated"]
        print(f"    isolated: parent {parent:.0f} MiB + child {child:.0f} MiB "
              f"(parent / in-process {parent / own:.2f})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
