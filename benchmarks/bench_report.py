"""The archive report stays small and quick as the archive grows, measured in one run.

    python benchmarks/bench_report.py [--files 1000 100000] [--segments-per-file 10]

For each archive size, writes made-up outputs as ``msc infer`` leaves them
(``predictions.parquet``: one row per file, 2 % failed; ``segments.parquet``:
``--segments-per-file`` alternating music/speech segments per file), then times
:func:`msc_core.report.write_report` and prints its seconds and the page's
bytes, and the ratios largest / smallest: the page's size should stay flat,
its time grow at most with the rows it streams.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from msc_core.labelling import PREDICTIONS_SCHEMA, SEGMENTS_SCHEMA
from msc_core.report import write_report


def fake_outputs(out: Path, *, files: int, segments_per_file: int, seed: int = 0) -> None:
    """Write ``predictions.parquet`` and ``segments.parquet`` for ``files`` made-up files."""
    rng = np.random.default_rng(seed)
    paths = np.array([f"/archive/{index % 97:02d}/file_{index:07d}.wav" for index in range(files)], object)
    failed = rng.random(files) < 0.02
    p_music = np.where(failed, np.nan, rng.beta(0.5, 0.5, files))
    label = np.where(failed, None, np.where(p_music > 0.5, "music", "speech"))
    duration = np.where(failed, np.nan, rng.uniform(30, 3 * 3600, files))
    predictions = pa.table({
        "path": paths, "label": label, "confidence": np.maximum(p_music, 1 - p_music), "p_music": p_music,
        "p_speech": 1 - p_music, "duration_s": duration, "windows": np.where(failed, 0, duration // 5).astype(np.int32),
        "music_fraction": p_music, "speech_fraction": 1 - p_music, "model_id": np.full(files, "trained-bench", object),
        "feature_hash": np.full(files, "0" * 16, object), "status": np.where(failed, "error", "ok"),
        "error": np.where(failed, "not a decodable audio file (bench)", None), "truncated": np.zeros(files, bool),
        "truncated_at_s": np.full(files, np.nan)}, schema=PREDICTIONS_SCHEMA)
    ok = np.flatnonzero(~failed)
    fractions = np.linspace(0, 1, segments_per_file + 1)
    starts = (duration[ok, None] * fractions[None, :-1]).ravel()
    ends = (duration[ok, None] * fractions[None, 1:]).ravel()
    segments = pa.table({"path": np.repeat(paths[ok], segments_per_file), "start_s": starts, "end_s": ends,
                         "label": np.tile(np.array(["music", "speech"], object), len(starts) // 2 + 1)[:len(starts)],
                         "confidence": np.full(len(starts), 0.9)}, schema=SEGMENTS_SCHEMA)
    pq.write_table(predictions, out / "predictions.parquet", compression="zstd")
    pq.write_table(segments, out / "segments.parquet", compression="zstd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--segments-per-file", type=int, default=10)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="msc-bench-report-") as scratch:
        for files in args.files:
            out = Path(scratch) / str(files)
            out.mkdir()
            fake_outputs(out, files=files, segments_per_file=args.segments_per_file)
            started = time.perf_counter()
            page = write_report(str(out), files="*/file_00000[0-4].wav")
            seconds = time.perf_counter() - started
            results.append((files, seconds, os.path.getsize(page)))
            print(f"{files:>9,} files ({files * args.segments_per_file:,} segments): report in {seconds:6.2f} s, "
                  f"{os.path.getsize(page):,} bytes", flush=True)
    (small, small_s, small_bytes), (large, large_s, large_bytes) = results[0], results[-1]
    print(f"ratio {large:,} / {small:,} files: time x{large_s / small_s:.2f}, "
          f"page size x{large_bytes / small_bytes:.2f}"
          f" (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
