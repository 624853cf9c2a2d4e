"""Featurize throughput, Ray overhead, memory and storage, measured in one run.

    python benchmarks/bench_featurize.py [--files 64] [--seconds 20] [--rss-files 1000 10000]

Prints, for one generated archive (half 44.1 kHz stereo WAV, half 22.05 kHz mono FLAC):

- windows/s of the msc featurizer single-process (the job's own task function,
  called in this process), on a local Ray with 1 worker and with 2 workers;
- windows/s of an authors'-style loop: ``librosa.load`` per file, librosa mel
  spectrogram per window, a loop over 8 layers building the dense float32
  tensor, ``np.save`` per window;
- the ratios: 2 vs 1 worker (target >= 1.7), 1 worker vs single process
  (target >= 0.8), msc per core vs the authors' loop (target >= 5);
- peak RSS of a worker on archives of 1k and 10k tiny files (target: flat);
- bytes stored per window, before and after compression (target <= 28 KB before).

Every run uses one thread per process, so that "per core" means one core.
Rates are the best of ``--repeats`` runs, which tames noise from other
processes on a shared machine; the load average is printed with the results.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.featurize import featurize_archive, featurize_chunk  # noqa: E402
from msc_core import synth  # noqa: E402
from msc_core.config import PAPER  # noqa: E402
from msc_core.engine import FileRecords, list_entries, plan  # noqa: E402
from msc_core.isolation import shared_child  # noqa: E402
from msc_core.labelling import warm_up  # noqa: E402
from msc_core.sources import iter_items  # noqa: E402

FILES_PER_TASK = 4


def write_archive(root: Path, *, files: int, seconds: float) -> None:
    """``files`` synthetic files under music/ and speech/ folders."""
    for i in range(files):
        kind = "music" if i % 2 else "speech"
        mono = (synth.music_like if i % 2 else synth.speech_like)(seconds, sample_rate=44100 if i % 4 < 2 else 22050,
                                                                    seed=i)
        path = root / kind / (f"f{i:05d}.wav" if i % 4 < 2 else f"f{i:05d}.flac")
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 4 < 2:
            sf.write(path, np.stack([mono, 0.8 * mono], axis=1), 44100)
        else:
            sf.write(path, mono, 22050)


def write_tiny_archive(root: Path, *, files: int) -> None:
    """``files`` copies of one 0.5 s file (decoding and featurizing still run per file)."""
    sample = root / "music" / "f0000000.wav"
    sample.parent.mkdir(parents=True)
    sf.write(sample, synth.music_like(0.5, seed=0), 22050)
    for i in range(1, files):
        os.link(sample, sample.with_name(f"f{i:07d}.wav"))


def single_process(source: Path, out: Path, *, isolate: bool = True) -> tuple[int, float]:
    """Windows and seconds of the job's task function over the archive, in this process.

    With ``isolate`` (the job's default), each file is decoded and featurized in the
    task's supervised child process, started and warmed up before the clock starts.
    """
    config_json = PAPER.to_json()
    (out / "shards").mkdir(parents=True)
    if isolate:
        shared_child(warm_up=warm_up).start()
    started, windows = time.perf_counter(), 0
    listing = list_entries(iter_items([str(source)]))
    for chunk in plan(listing, FileRecords(str(out)).read(), settings="", files_per_chunk=FILES_PER_TASK).chunks:
        result = featurize_chunk(chunk, out=str(out), config_json=config_json, shard_bytes=64 << 20, isolate=isolate)
        windows += sum(result["files"]["windows"])
    return windows, time.perf_counter() - started


def on_ray(source: Path, out: Path, *, workers: int, warmup: Path, repeats: int = 1,
           files_per_task: int = FILES_PER_TASK) -> list[dict]:
    """The job's manifests of ``repeats`` runs over ``source`` on a fresh local Ray with ``workers`` CPUs.

    The workers are warmed up first (started, libraries imported).
    """
    import ray

    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        featurize_archive([str(warmup)], out=f"{out}-warmup", config=PAPER, files_per_task=1, progress=False)
        return [featurize_archive([str(source)], out=f"{out}-{k}", config=PAPER, files_per_task=files_per_task,
                                  progress=False) for k in range(repeats)]
    finally:
        ray.shutdown()


def best_rate(runs: list[tuple[int, float]]) -> float:
    """Highest windows/s of (windows, seconds) runs."""
    return max(windows / seconds for windows, seconds in runs)


def job_runs(manifests: list[dict]) -> list[tuple[int, float]]:
    return [(m["windows"], m["timings"]["seconds"]) for m in manifests]


def authors_loop(source: Path, out: Path) -> tuple[int, float]:
    """Windows and seconds of a per-file, per-window librosa loop storing dense float32 tensors."""
    import librosa
    import matplotlib

    out.mkdir(parents=True)
    colormap = matplotlib.colormaps["viridis"]
    edges = np.linspace(0, 1, 9)
    size = PAPER.window_samples
    started, windows = time.perf_counter(), 0
    for path in sorted(source.rglob("*.*")):
        audio, rate = librosa.load(path, sr=22050)
        for start in range(0, max(len(audio), 1), size):
            segment = audio[start:start + size]
            if start and len(segment) < 2.5 * rate:
                break
            segment = np.pad(segment, (0, size - len(segment)))
            mel = librosa.feature.melspectrogram(y=segment, sr=rate, n_fft=2048, hop_length=512, n_mels=128)
            db = librosa.power_to_db(mel, ref=np.max)
            span = db.max() - db.min()
            normalized = (db - db.min()) / (span if span else 1.0)
            normalized = normalized[:, :PAPER.frames]
            rgb = colormap(normalized)[..., :3]
            intensity = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
            tensor = np.zeros(PAPER.tensor_shape, np.float32)
            for layer in range(8):
                inside = (intensity >= edges[layer]) & (intensity < edges[layer + 1])
                tensor[layer, :, :, 0] = np.where(inside, intensity, 0)
            np.save(out / f"{path.stem}-{start // size}.npy", tensor)
            windows += 1
    return windows, time.perf_counter() - started


def stored_bytes(out: Path, windows: int) -> tuple[float, float]:
    """Bytes per window of codes before compression, and of the shard files on disk."""
    import pyarrow.parquet as pq

    files = sorted((out / "shards").glob("*.parquet"))
    uncompressed = sum(pq.ParquetFile(f).metadata.row_group(g).total_byte_size
                       for f in files for g in range(pq.ParquetFile(f).metadata.num_row_groups))
    return uncompressed / windows, sum(f.stat().st_size for f in files) / windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rss-files", type=int, nargs=2, default=(1000, 10000))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="msc-bench-"))
    try:
        source, warmup = work / "archive", work / "warmup"
        write_archive(source, files=args.files, seconds=args.seconds)
        write_archive(warmup, files=2, seconds=1.0)

        single_process(warmup, work / "single-warmup")
        single_runs = [single_process(source, work / f"single-{k}") for k in range(args.repeats)]
        single_rate, windows = best_rate(single_runs), single_runs[0][0]
        rate_one = best_rate(job_runs(on_ray(source, work / "ray1", workers=1, warmup=warmup, repeats=args.repeats)))
        two = on_ray(source, work / "ray2", workers=2, warmup=warmup, repeats=args.repeats)
        rate_two = best_rate(job_runs(two))
        authors_runs = [authors_loop(source, work / f"authors-{k}") for k in range(args.repeats)]
        authors_rate, authors_windows = best_rate(authors_runs), authors_runs[0][0]
        before, after = stored_bytes(work / "ray2-0", two[0]["windows"])

        peaks = {}
        for count in args.rss_files:
            tiny = work / f"tiny-{count}"
            write_tiny_archive(tiny, files=count)
            [manifest] = on_ray(tiny, work / f"rss-{count}", workers=2, warmup=warmup, files_per_task=64)
            peaks[count] = manifest["memory"]["worker_peak_rss_mb"]
            shutil.rmtree(tiny)

        print(f"archive: {args.files} files x {args.seconds:g} s, {windows} windows; best of {args.repeats} runs; "
              f"load average now {os.getloadavg()[0]:.2f}")
        print(f"single process (msc task function): {single_rate:8.1f} windows/s")
        print(f"Ray, 1 worker:                      {rate_one:8.1f} windows/s")
        print(f"Ray, 2 workers:                     {rate_two:8.1f} windows/s")
        print(f"authors'-style loop (1 core):       {authors_rate:8.1f} windows/s ({authors_windows} windows)")
        print(f"ratio 2 workers / 1 worker:         {rate_two / rate_one:8.2f}  (target >= 1.7)")
        print(f"ratio 1 worker / single process:    {rate_one / single_rate:8.2f}  (target >= 0.8)")
        print(f"ratio msc per core / authors:       {rate_two / 2 / authors_rate:8.2f}  (target >= 5; "
              f"single process: {single_rate / authors_rate:.2f})")
        for count, peak in peaks.items():
            print(f"peak RSS of a worker, {count:6d} tiny files: {peak:7.1f} MiB")
        low, high = (peaks[c] for c in args.rss_files)
        print(f"ratio worker peak RSS {args.rss_files[1]} / {args.rss_files[0]} files: {high / low:8.2f}  "
              "(target about 1)")
        print(f"bytes per window: {before:,.0f} before compression (target <= 28,000), {after:,.0f} stored")
        print(json.dumps({"single": single_rate, "ray1": rate_one, "ray2": rate_two, "authors": authors_rate,
                          "bytes_before": before, "bytes_stored": after, "rss": peaks}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
