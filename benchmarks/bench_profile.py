"""Where ``msc infer`` spends its CPU, and how much audio it labels per CPU-second, in one run.

    python benchmarks/bench_profile.py [--short 40] [--short-s 30] [--long 2] [--long-s 600] [--hop H]
                                       [--coarse C] [--precision P] [--archive DIR] [--tree NAME=DIR ...]

One archive (generated: ``--short`` files of ``--short-s`` s and ``--long`` of
``--long-s`` s, music-like and speech-like, as 44.1 kHz stereo FLAC and 22.05 kHz
Ogg Vorbis; or ``--archive DIR`` of your own audio), then:

1. **Stage profile**, in this process on one thread, file by file with the
   library's own functions: decoding (``AudioStream`` to mono windows at
   22.05 kHz), features (the frame cues for segmentation, and the depth-layer
   codes of the windows the model reads: :meth:`msc_core.labelling.FileFeatures.window_codes`),
   the model (``predict_codes``, batches of 32, on the windows
   :func:`msc_core.labelling.coarse_to_fine` picks, as infer runs it), aggregation
   (``labelling.aggregate``: probabilities to labels and segments) and writing
   (``label_tables`` and Parquet). CPU seconds of each, separately for short and
   long files.
   Without ``--hop``/``--coarse`` the windows are labelling's defaults (a 1-s
   hop, the model every 5 s first: :func:`msc_core.labelling.labelling_windows`), and the
   model's arithmetic is ``--precision``'s (default ``fp32``, as infer's).
2. **End to end**: ``msc infer ARCHIVE [--hop H] [--coarse C]`` and ``msc featurize ARCHIVE
   --window all [--hop H]`` as fresh commands (Ray starts in-process, TensorFlow
   loads in infer's actors), with the CPU of each one's whole process tree
   (:mod:`benchmarks.process_tree`): audio seconds and windows per CPU-second,
   and Ray's own share, the tree's CPU less the stages' (all five for infer;
   decoding and features for featurize). With
   ``--tree NAME=DIR`` the same command runs from other checkouts of msc too
   (``DIR/.venv`` when it has one, else this Python with ``DIR`` first on the
   path), so a change is measured before and after in one run.
3. **The model alone** on ready codes in a fresh process, as many threads as it
   finds (what a model actor gets on this machine): windows per wall second,
   against the end-to-end labelling phase's windows per wall second (from
   ``summary.json``'s ``timings_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ONEDNN = os.environ.get("TF_ENABLE_ONEDNN_OPTS")  # as the user set it, before msc_core sets its default
import msc_core  # noqa: E402,F401 (first: it sets TensorFlow's oneDNN default before TensorFlow loads)
from benchmarks.process_tree import run_measured  # noqa: E402
from msc_core.model import PRECISIONS, resolve_precision  # noqa: E402

STAGES = ("decode", "features", "model", "aggregate", "write")

MODEL_ALONE = """
import json, time
import numpy as np
from msc_core.labelling import load_model
model = load_model(None, precision={precision!r})
codes = np.random.default_rng(0).integers(0, 9, (128, *model.config.encoded_shape)).astype(np.uint8)
model.predict_codes(codes[:32])
timings = []
for _ in range(2):
    started = time.perf_counter()
    model.predict_codes(codes)
    timings.append(time.perf_counter() - started)
print(json.dumps(len(codes) / min(timings)))
"""
LONG_S = 300.0  # files at least this long count as long in the profile


def make_archive(root: Path, *, short: int, short_s: float, long: int, long_s: float) -> None:
    """Generated music-like and speech-like files, alternating, as FLAC (44.1 kHz stereo) and Ogg Vorbis (22.05 kHz)."""
    import soundfile as sf

    from msc_core import synth

    root.mkdir(parents=True, exist_ok=True)
    for index, seconds in enumerate([short_s] * short + [long_s] * long):
        kind = (synth.music_like, synth.speech_like)[index % 2]
        rate, fmt = ((44100, "FLAC"), (22050, "OGG"))[index // 2 % 2]
        part = kind(min(seconds, 60.0), sample_rate=rate, seed=index)
        mono = np.tile(part, int(np.ceil(seconds / 60.0)))[: int(seconds * rate)]
        audio = np.repeat(mono[:, None], 2, axis=1) if fmt == "FLAC" else mono
        folder = root / ("music", "speech")[index % 2]  # labelled by folder, for featurize
        folder.mkdir(exist_ok=True)
        name = folder / f"{index:04d}-{int(seconds)}s.{fmt.lower()}"
        with sf.SoundFile(name, "w", rate, audio.ndim, format=fmt) as out:
            for start in range(0, len(audio), 10 * rate):  # libsndfile's Vorbis encoder crashes on long writes
                out.write(audio[start:start + 10 * rate])


def stage_profile(paths: list[Path], *, hop_s: float | None, coarse_s: float | None, precision: str,
                  out: Path) -> dict[str, dict[str, float]]:
    """CPU seconds of each stage per group of files (``short``/``long``), plus ``audio_s``, ``windows``
    and ``run`` (the windows featurized and run by the model)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from msc_core.audio import AudioStream
    from msc_core.labelling import (FileFeatures, aggregate, class_probs, coarse_to_fine, label_tables,
                                    labelling_windows, load_model, warm_up)
    from msc_core.segmentation import CueTracker
    from msc_core.shards import write_atomic

    config, coarse_s = labelling_windows("all", hop_s, coarse_s)
    model = load_model(None, precision=precision)
    model.predict_codes(np.zeros((1, *config.encoded_shape), np.uint8))  # build the graph outside the timing
    warm_up()  # and import the decoders and librosa's lazy modules
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for number, path in enumerate(paths):
        tracker, blocks, feature_s = CueTracker(sample_rate=config.sample_rate), [], [0.0]

        def push(block: np.ndarray) -> None:  # the cues count as features, not as decoding
            started = time.process_time()
            tracker.push(block)
            blocks.append(block)
            feature_s[0] += time.process_time() - started

        clock = time.process_time()
        with AudioStream.open(str(path)) as stream:
            batches = list(stream.windows(config, on_audio=push))
            duration = stream.decoded_s
        decode = time.process_time() - clock - feature_s[0]
        clock = time.process_time()
        cues = tracker.finish()
        start_s = np.concatenate([batch.start_s for batch in batches])
        end_s = start_s + np.concatenate([batch.audio_s for batch in batches])
        lazy = FileFeatures(str(path), start_s, end_s, None, duration, 0, 0, signal=np.concatenate(blocks))
        feature_s[0] += time.process_time() - clock

        def predict(rows: np.ndarray) -> np.ndarray:  # featurized where read, as infer's model stage does
            started = time.process_time()
            codes = lazy.window_codes(rows, config=config)
            feature_s[0] += time.process_time() - started
            return class_probs(model.predict_codes(codes, batch_size=32), model.labels)

        clock, before = time.process_time(), feature_s[0]
        probs = coarse_to_fine(np.zeros(len(start_s)), start_s, predict, coarse_s=coarse_s)
        features = feature_s[0]
        model_s = time.process_time() - clock - (features - before)
        clock = time.process_time()
        run = ~np.isnan(probs[:, 0])
        label = aggregate(str(path), start_s=start_s[run], end_s=end_s[run], duration_s=duration, probs=probs[run],
                          model_id=model.model_id, feature_hash=config.hash, cues=cues)
        aggregate_s = time.process_time() - clock
        clock = time.process_time()
        for kind, table in zip(("predictions", "windows", "segments"), label_tables([label])):
            write_atomic(table, str(out / f"{kind}-{number}.parquet"))
        group = totals["long" if duration >= LONG_S else "short"]
        for name, value in zip(STAGES, (decode, features, model_s, aggregate_s, time.process_time() - clock)):
            group[name] += value
        group["files"] += 1
        group["audio_s"] += duration
        group["windows"] += len(start_s)
        group["run"] += run.sum()
    return totals


def python_of(tree: Path) -> tuple[str, dict[str, str]]:
    """The Python that runs checkout ``tree`` and its environment (``tree`` first on the path)."""
    own = tree / ".venv" / "bin" / "python"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("TF_ENABLE_ONEDNN_OPTS")  # each checkout's own default, unless the user set one
    if ONEDNN is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = ONEDNN
    return (str(own) if own.is_file() else sys.executable), env


def end_to_end(job: str, tree: Path, archive: Path, out: Path, *, hop_s: float | None, coarse_s: float | None,
               precision: str | None, log: Path) -> dict[str, float]:
    """One fresh ``msc featurize`` or ``msc infer`` (``job``) from checkout ``tree``.

    Returns wall and process-tree CPU seconds, windows, and the seconds of the
    labelling phase (infer's ``summary.json``; the whole run where it has none). ``precision``
    goes to infer where given (None: the checkout's default).
    """
    import pyarrow.parquet as pq

    python, env = python_of(tree)
    argv = [python, "-m", "jobs.cli", job, str(archive), "--out", str(out)]
    argv += ["--format", "parquet"] if job == "infer" else ["--window", "all"]
    argv += [] if hop_s is None else ["--hop", f"{hop_s:g}"]
    argv += ["--coarse", f"{coarse_s:g}"] if coarse_s is not None and job == "infer" else []
    argv += ["--precision", precision] if precision is not None and job == "infer" else []
    with open(log, "w") as handle:
        measured = run_measured(argv, cwd=tree, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if measured.returncode not in (0, 1):
        raise SystemExit(f"{tree}: msc {job} exited {measured.returncode}; see {log}")
    if job == "featurize":
        windows, timings = json.loads((out / "manifest.json").read_text())["windows"], {}
    else:
        windows = pq.read_metadata(out / "windows.parquet").num_rows
        summary = out / "summary.json"
        timings = json.loads(summary.read_text()).get("timings_s", {}) if summary.is_file() else {}
    return {"wall_s": measured.wall_s, "cpu_s": measured.cpu_s, "windows": windows,
            "labelling_s": timings.get("labelling", measured.wall_s)}


def model_alone(precision: str) -> float:
    """Windows per wall second of the bundled model on ready codes, in a fresh process with every core."""
    result = subprocess.run([sys.executable, "-c", MODEL_ALONE.format(precision=precision)], cwd=REPO,
                            capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=40, help="generated short files")
    parser.add_argument("--short-s", type=float, default=30.0, help="length of a short file (s)")
    parser.add_argument("--long", type=int, default=2, help="generated long files")
    parser.add_argument("--long-s", type=float, default=600.0, help="length of a long file (s)")
    parser.add_argument("--archive", type=Path, help="label this folder instead of generated files")
    parser.add_argument("--hop", type=float, default=None,
                        help="seconds between window starts (default: each command's, infer 1 and featurize 5)")
    parser.add_argument("--coarse", type=float, default=None,
                        help="infer's first pass (default: labelling's, 5 s with overlapping windows; 0: none)")
    parser.add_argument("--precision", default="fp32", choices=("auto", *PRECISIONS),
                        help="the model's arithmetic in this checkout's runs (default fp32, as msc infer's)")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                        help="also run msc infer from this checkout (repeatable)")
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    archive = options.archive or scratch / "archive"
    if options.archive is None:
        make_archive(archive, short=options.short, short_s=options.short_s, long=options.long, long_s=options.long_s)
    paths = sorted(path for path in archive.rglob("*") if path.is_file())
    load = os.getloadavg()[0]

    trees = [("this", REPO)] + [(name, Path(folder).resolve()) for name, folder in
                                (spec.split("=", 1) for spec in options.tree)]
    runs = {(job, name): end_to_end(job, tree, archive, scratch / f"{job}-{name}", hop_s=options.hop,
                                    coarse_s=options.coarse, log=scratch / f"{job}-{name}.log",
                                    precision=options.precision if name == "this" else None)
            for job in ("infer", "featurize") for name, tree in trees}
    alone = model_alone(options.precision)
    (scratch / "profile").mkdir()
    profile = stage_profile(paths, hop_s=options.hop, coarse_s=options.coarse, precision=options.precision,
                            out=scratch / "profile")

    audio_s = sum(group["audio_s"] for group in profile.values())
    stage_cpu = {name: sum(group[name] for group in profile.values()) for name in STAGES}
    featurized, model_windows = (sum(group[name] for group in profile.values()) for name in ("windows", "run"))
    print(f"{len(paths)} files, {audio_s / 60:.1f} min of audio, --hop {options.hop} --coarse {options.coarse}: "
          f"{featurized:.0f} windows, {model_windows:.0f} of them featurized and run by the model "
          f"(--precision {options.precision}: "
          f"{resolve_precision(options.precision)} here); {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at the start\n")
    print("| stage (one thread, in process) | " + " | ".join(f"{group} files: CPU s (share)" for group in profile)
          + " | all: CPU s per audio hour |")
    print("|---|" + "---:|" * (len(profile) + 1))
    for name in STAGES:
        cells = [f"{group[name]:.1f} ({group[name] / sum(group[stage] for stage in STAGES):.0%})"
                 for group in profile.values()]
        print(f"| {name} | " + " | ".join(cells) + f" | {stage_cpu[name] / audio_s * 3600:.0f} |")
    total = sum(stage_cpu.values())
    print(f"| stages together | " + " | ".join(f"{sum(group[stage] for stage in STAGES):.1f}"
                                               for group in profile.values()) + f" | {total / audio_s * 3600:.0f} |")
    print("\n| fresh command | wall s | CPU s, process tree | audio-s per CPU-s | windows per CPU-s | "
          "Ray and start-up CPU s (tree - stages) | labelling windows/s (vs model alone) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (job, name), run in runs.items():
        stages = total if job == "infer" else stage_cpu["decode"] + stage_cpu["features"]
        speed = f"{run['windows'] / run['labelling_s']:.1f} ({run['windows'] / run['labelling_s'] / alone:.0%})"
        print(f"| msc {job}, {name} | {run['wall_s']:.1f} | {run['cpu_s']:.1f} | {audio_s / run['cpu_s']:.1f} | "
              f"{run['windows'] / run['cpu_s']:.1f} | {run['cpu_s'] - stages:.1f} | "
              f"{speed if job == 'infer' else '-'} |")
    print(f"\nmodel alone on ready codes, fresh process, every core: {alone:.1f} windows/s")
    for job, name in runs:
        if name != "this":
            this, other = runs[job, "this"], runs[job, name]
            print(f"msc {job}, this checkout over {name}: audio-s per CPU-s x{other['cpu_s'] / this['cpu_s']:.2f}, "
                  f"wall-clock speed x{other['wall_s'] / this['wall_s']:.2f}")
    print(f"\n(scratch: {scratch})")


if __name__ == "__main__":
    main()
