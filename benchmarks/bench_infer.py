"""Throughput of ``msc infer`` against an authors'-style loop and against the model's own rate.

Run: ``python benchmarks/bench_infer.py [--files 96] [--all-files 24] [--seconds 60] [--paper-model DIR]``

One run prints three ratios:

1. files/s of ``msc infer --window first`` end to end (Ray already up; model
   actors load inside the timing) over a loop calling an authors'-style predict
   per file: ``librosa.load``, the first 5 s, mel dB min-max, viridis, a dense
   tensor built with a Python loop over layers, ``model.predict`` on one file
   (target >= 5x);
2. windows/s of ``msc infer --window all`` over the model's own rate on ready
   code batches on this CPU (target >= 70%);
3. audio-hours labelled per core-hour in the ``--window all`` run.

The model has the paper's widths: the imported published model when
``--paper-model`` names its directory, else an untrained one (same compute).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.cli import build_parser  # noqa: E402
from jobs.raylib import cluster_cpus, init_ray  # noqa: E402
from msc_core import synth  # noqa: E402
from msc_core.config import PAPER  # noqa: E402
from msc_core.labelling import load_model  # noqa: E402
from msc_core.model import build_model, import_paper_model, save_model_dir  # noqa: E402

DEFAULT_PAPER_MODEL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper_model"


def authors_style_predict(path: str, cnn) -> np.ndarray:
    """One file as the authors' code does it: whole-file load, first window, dense tensor, ``predict``."""
    import librosa
    import matplotlib

    samples, rate = librosa.load(path, sr=PAPER.sample_rate)
    samples = librosa.util.fix_length(samples[:PAPER.window_samples], size=PAPER.window_samples)
    mel = librosa.feature.melspectrogram(y=samples, sr=rate, n_fft=PAPER.n_fft, hop_length=PAPER.hop_length,
                                         n_mels=PAPER.n_mels)
    db = librosa.power_to_db(mel, ref=np.max)
    span = db.max() - db.min()
    normalized = np.clip((db - db.min()) / (span if span else 1), 0, 1)[:, :PAPER.frames]
    rgb = matplotlib.colormaps["viridis"].resampled(256)(np.minimum((normalized * 256).astype(int), 255))[..., :3]
    intensity = rgb @ np.array([0.299, 0.587, 0.114])
    edges = np.linspace(0, 1, PAPER.layers + 1)
    dense = np.zeros(PAPER.tensor_shape, np.float32)
    for layer in range(PAPER.layers):
        inside = (intensity >= edges[layer]) & (intensity < edges[layer + 1])
        dense[layer, :, :, 0] = np.where(inside, intensity, 0)
    return cnn.predict(dense[None], verbose=0)[0]


def make_archive(root: Path, *, files: int, seconds: float, sample_rate: int = 44100) -> None:
    """``files`` stereo 16-bit WAV files (CD rate), alternating music-like and speech-like, ``seconds`` long each."""
    import soundfile as sf

    clips = [synth.music_like(10.0, sample_rate=sample_rate, seed=1),
             synth.speech_like(10.0, sample_rate=sample_rate, seed=2)]
    for index in range(files):
        mono = np.tile(np.roll(clips[index % 2], 997 * index), int(np.ceil(seconds / 10)))
        sf.write(root / f"{index:04d}.wav", np.repeat(mono[: int(seconds * sample_rate), None], 2, axis=1),
                 sample_rate, subtype="PCM_16")


def time_infer(argv: list[str]) -> float:
    """Wall seconds of one ``msc infer`` run (Ray already started)."""
    args = build_parser().parse_args(["infer", *argv])
    started = time.perf_counter()
    args.func(args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=96, help="files labelled with --window first")
    parser.add_argument("--all-files", type=int, default=24, help="of those, files labelled with --window all")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each file (s)")
    parser.add_argument("--baseline-files", type=int, default=8, help="files timed through the authors' loop")
    parser.add_argument("--paper-model", type=Path, default=DEFAULT_PAPER_MODEL)
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-infer-"))
    archive = scratch / "archive"
    archive.mkdir()
    make_archive(archive, files=options.files, seconds=options.seconds)
    model_dir = scratch / "model"
    if (options.paper_model / "model.weights.h5").is_file():
        import_paper_model(options.paper_model, model_dir)
    else:
        save_model_dir(build_model(PAPER, seed=0), PAPER, model_dir, source="trained")
    model = load_model(model_dir)
    print(f"model {model.model_id}; {options.files} files of {options.seconds:.0f} s (44.1 kHz stereo), "
          f"{options.all_files} of them labelled window by window; {os.cpu_count()} CPUs")

    # the model alone, on ready code batches
    codes = np.random.default_rng(0).integers(0, 256, (64, *PAPER.encoded_shape), dtype=np.uint8)
    model.predict_codes(codes[:32])
    timings = []
    for _ in range(3):  # best of three: the model's own rate on an otherwise idle CPU
        started = time.perf_counter()
        model.predict_codes(codes)
        timings.append(time.perf_counter() - started)
    model_rate = len(codes) / min(timings)

    # the authors' loop
    cnn = model.keras_model.get_layer("cnn")
    paths = sorted(str(path) for path in archive.iterdir())[: options.baseline_files]
    authors_style_predict(paths[0], cnn)
    started = time.perf_counter()
    for path in paths:
        authors_style_predict(path, cnn)
    baseline_rate = len(paths) / (time.perf_counter() - started)

    init_ray()
    cores = cluster_cpus()
    subset = scratch / "all-files.txt"
    subset.write_text("\n".join(sorted(str(path) for path in archive.iterdir())[: options.all_files]))
    common = ["--model", str(model_dir), "--format", "parquet"]
    first_s = time_infer([str(archive), *common, "--out", str(scratch / "first"), "--window", "first"])
    all_s = time_infer([str(subset), *common, "--out", str(scratch / "all"), "--window", "all"])
    windows = options.all_files * int(options.seconds // PAPER.window_seconds)
    audio_hours = options.all_files * options.seconds / 3600

    print(f"model alone on ready codes:      {model_rate:8.2f} windows/s")
    print(f"authors-style loop:              {baseline_rate:8.3f} files/s")
    print(f"msc infer --window first:        {options.files / first_s:8.3f} files/s "
          f"-> {options.files / first_s / baseline_rate:.1f}x the authors' loop (target >= 5x)")
    print(f"msc infer --window all:          {windows / all_s:8.2f} windows/s "
          f"-> {windows / all_s / model_rate:.0%} of the model's own rate (target >= 70%)")
    print(f"audio-hours per core-hour:       {audio_hours / (all_s * cores / 3600):8.2f} "
          f"({cores} cores, {all_s:.1f} s for {audio_hours * 60:.1f} audio-minutes)")


if __name__ == "__main__":
    main()
