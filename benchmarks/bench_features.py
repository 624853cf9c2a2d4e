"""Featurizing speed per core and bytes per window: msc against the authors' per-file path.

Run from the repository root::

    python benchmarks/bench_features.py [--files 40] [--seconds 30] [--dir /tmp/msc-bench]

Both sides run in this one process on one thread (BLAS/OpenMP pinned to 1),
over the same generated files (mixed rates, channels and formats), and are
timed in CPU seconds, so ``windows / CPU s`` is windows per second per core.

Two policies are measured:

* ``first``: the paper's rule, one window (the first 5 s) per file;
* ``all``: every 5 s window of every file. The authors' code has no such
  mode; here it loads each file once and runs its per-clip code on each window.

The authors' path is a plain re-implementation of their published code:
``librosa.load``, ``librosa.feature.melspectrogram``, ``power_to_db``,
min-max, matplotlib's viridis, a Python loop over the 8 layers building a
dense float32 (8, 128, 215, 1) tensor. msc's path is
``audio.read_windows`` plus ``depth.featurize`` on batches of windows. The
script checks that both give the same tensors before it reports any figure,
and splits each path's time into decoding + resampling and the rest.

Both paths necessarily share the expensive part: soxr "HQ" resampling and a
float64 STFT with the mel product, which exactness with the published model
requires (a float32 FFT is about 25 % faster but moves pixels to other
colormap cells on two of the five golden files). msc's gain comes from
decoding only what the windows need, batching, and not building the dense
tensor.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import librosa  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from msc_core import audio, depth, synth  # noqa: E402
from msc_core.config import PAPER  # noqa: E402

RATES = (8000, 16000, 22050, 44100, 48000)
BATCH = 16


def make_files(directory: Path, count: int, seconds: float) -> list[Path]:
    """``count`` files of music- or speech-like audio at mixed rates, mono or stereo, WAV or FLAC (cached)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        rate, channels = RATES[index % len(RATES)], 1 + index % 2
        path = directory / f"clip{index:03d}_{rate}_{channels}ch_{seconds:g}s.{'flac' if index % 3 == 0 else 'wav'}"
        if not path.exists():
            generate = synth.music_like if index % 2 else synth.speech_like
            mono = generate(seconds, sample_rate=rate, seed=index)
            sf.write(path, np.repeat(mono[:, None], channels, axis=1), rate)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- the authors' path
def authors_clip(clip: np.ndarray) -> np.ndarray:
    """The authors' per-clip code: 5 s of samples at 22,050 Hz -> dense (8, 128, 215, 1) float32."""
    mel = librosa.feature.melspectrogram(y=clip, sr=22050, n_fft=2048, hop_length=512, n_mels=128)
    db = librosa.power_to_db(mel, ref=np.max)
    span = db.max() - db.min()
    normalized = (db - db.min()) / (span if span != 0 else 1)
    normalized = np.clip(normalized, 0, 1)[:, :215]
    rgb = matplotlib.colormaps["viridis"](normalized)[..., :3]
    intensity = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    edges = np.linspace(0, 1, 9)
    tensor = np.zeros((8, 128, 215, 1), np.float32)
    for layer in range(8):
        inside = (intensity >= edges[layer]) & (intensity < edges[layer + 1])
        tensor[layer, :, :, 0] = np.where(inside, intensity, 0)
    return tensor


def authors_file(path: Path, *, every_window: bool) -> list[np.ndarray]:
    """The authors' per-file path: load the whole file, then the first (or every) 5 s clip."""
    samples, _ = librosa.load(path, sr=22050)
    size = PAPER.window_samples
    starts = range(0, len(samples), size) if every_window else [0]
    clips = [librosa.util.fix_length(samples[start:start + size], size=size) for start in starts]
    if every_window:  # the same windows as msc's default policy: a tail under 2.5 s is dropped
        clips = clips[:1] + [c for c, s in zip(clips[1:], starts[1:]) if len(samples) - s >= size // 2]
    return [authors_clip(clip) for clip in clips]


# ---------------------------------------------------------------- msc's path
def msc_files(paths: list[Path], config) -> list[np.ndarray]:
    """msc's path: windows read in blocks, featurized in batches of ``BATCH`` across files."""
    out, pending = [], []
    for path in paths:
        for batch in audio.read_windows(path, config, batch_windows=BATCH):
            pending.append(batch.samples)
            if sum(len(p) for p in pending) >= BATCH:
                out.append(depth.featurize(np.concatenate(pending), config))
                pending = []
    if pending:
        out.append(depth.featurize(np.concatenate(pending), config))
    return list(np.concatenate(out))


def timed(function, *args, **kwargs):
    """(result, CPU seconds of this process)."""
    started = time.process_time()
    result = function(*args, **kwargs)
    return result, time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/msc-bench"))
    args = parser.parse_args()
    paths = make_files(args.dir, args.files, args.seconds)
    print(f"{len(paths)} files of {args.seconds:g} s, rates {RATES}, mono/stereo, WAV/FLAC; 1 thread, CPU time")

    # warm both paths (imports, numba, FFT plans, colormap) outside the timings
    authors_file(paths[0], every_window=False)
    msc_files(paths[:1], PAPER)

    _, load_s = timed(lambda: [librosa.load(path, sr=22050) for path in paths])
    for mode in ("first", "all"):
        config = PAPER.with_window(mode=mode)
        codes, msc_s = timed(msc_files, paths, config)
        dense, authors_s = timed(lambda: [t for p in paths for t in authors_file(p, every_window=mode == "all")])
        _, decode_s = timed(lambda: [batch for path in paths for batch in audio.read_windows(path, config)])
        assert len(codes) == len(dense), (len(codes), len(dense))
        differing = sum(int((depth.decode(c, config) != d).any(axis=(0, 3)).sum()) for c, d in zip(codes, dense))
        count = len(codes)
        print(f"\npolicy {mode!r}: {count} windows; pixels differing between the two paths: {differing}")
        for name, total_s, decoding_s in (("msc", msc_s, decode_s), ("authors", authors_s, load_s)):
            print(f"  {name:8} {count / total_s:7.1f} windows/s per core ({1000 * total_s / count:5.2f} ms/window, "
                  f"of which decoding + resampling {1000 * decoding_s / count:5.2f})")
        print(f"  speed-up {authors_s / msc_s:7.1f}x  (target >= 5x)")

    msc_bytes, dense_bytes = codes[0].nbytes, dense[0].nbytes
    print(f"\nbytes stored per window: msc {msc_bytes:,} (uint8 codes) vs dense {dense_bytes:,} (float32 tensor): "
          f"{dense_bytes / msc_bytes:.0f}x smaller (target 32x)")


if __name__ == "__main__":
    main()
