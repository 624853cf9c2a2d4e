"""Broadcast segmentation: msc before/after (and inaSpeechSegmenter) on deterministic programmes, one run.

Run from the repository root::

    python benchmarks/bench_broadcast.py [--programmes 3] [--minutes 8] [--dir /tmp/msc-broadcast]
                                         [--model DIR] [--ina PYTHON]

**Programmes.** Each is built from :mod:`msc_core.synth` with its own seed
(the project's recorded corpus is not used: it is rebuilt on demand and may
be absent): blocks of music (15-60 s) and speech (15-60 s) at levels from -2
to -14 dB, joined by hard cuts or 1-3 s crossfades (the true boundary is the
middle of the fade), with silences of 1-4 s (digital zero or noise at
-75 dBFS) between some blocks. The WAV files and their ground truth are cached
in ``--dir``. There is no speech over music and no noise class: the current
model is binary.

**Methods**, all on the same window probabilities of the same model:

* ``before``: main's rule before issue 14: each window covers its start to the
  next start, argmax, equal neighbours merged (5-s windows back to back, and ``--hop 1``);
* ``after``: :func:`msc_core.labelling.label_file` (window centres, silence by
  energy, Viterbi with minimum durations, boundary refinement), with 5-s windows
  back to back (the default) and with ``hop_s=1`` (43 STFT frames, 0.9985 s);
* ``ina``: inaSpeechSegmenter 0.6.8 (``sm`` engine) in its own venv
  (``--ina .peers/ina/bin/python``; ../shared/peers/README.md), when given.

**Scores** (frames of 10 ms; silence runs under 0.5 s in an estimate are
given to the label before them, as msc does, so that pauses inside speech
are not counted as boundaries):

* music/speech accuracy: over frames whose truth is speech or music;
* 3-class accuracy: speech, music, silence over all frames;
* silence recall and precision (frames);
* boundary precision/recall/F at +-0.5 s and +-2 s: every change of label,
  one-to-one matching (``mir_eval.segment.detection``, first and last edges trimmed);
* audio-seconds per CPU-second: CPU of the whole process tree (this process
  for msc, after one warm-up file; the child process for inaSpeechSegmenter).

It also featurizes the first programme's 0.9985-s windows twice, one STFT per
window (:func:`msc_core.depth.featurize`) and one STFT shared by each batch
(:func:`msc_core.depth.featurize_hopped`), checks the codes are equal and
prints the CPU ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import mir_eval
import numpy as np
import soundfile as sf

from msc_core import depth, synth
from msc_core.audio import read_windows
from msc_core.config import LABELS
from msc_core.labelling import label_features, featurize_file, load_model, window_config
from msc_core.segmentation import FRAME_S

RATE = 22050
VERSION = 1
LABEL_CODES = {"speech": 0, "music": 1, "silence": 2}
INA_SCRIPT = """
import json, sys
from inaSpeechSegmenter import Segmenter
seg = Segmenter(vad_engine="sm", detect_gender=False)
names = {"speech": "speech", "music": "music", "noEnergy": "silence", "noise": "noise"}
print(json.dumps({path: [(names.get(label, label), start, end) for label, start, end in seg(path)]
                  for path in sys.argv[1:]}))
"""


# ---------------------------------------------------------------------------------------- programmes
def build_programme(seed: int, minutes: float) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """A deterministic programme and its true segments ``(start_s, end_s, label)``."""
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * RATE)
    out = np.zeros(total + 120 * RATE, np.float32)
    truth: list[list] = []
    position, previous = 0, None
    while position < total:
        if previous in ("speech", "music") and rng.random() < 0.25:
            length = int(rng.uniform(1, 4) * RATE)
            if rng.random() < 0.5:
                out[position:position + length] = (10 ** (-75 / 20) * rng.standard_normal(length)).astype(np.float32)
            truth.append([position, position + length, "silence"])
            position += length
            previous = "silence"
            continue
        kind = "speech" if previous == "music" else "music" if previous == "speech" else rng.choice(["speech", "music"])
        length = int(rng.uniform(15, 60) * RATE)
        make = synth.speech_like if kind == "speech" else synth.music_like
        block = make(length / RATE, sample_rate=RATE, seed=int(rng.integers(1 << 31))) * 10 ** (rng.uniform(-14, -2) / 20)
        fade = int(rng.uniform(1, 3) * RATE) if previous in ("speech", "music") and rng.random() < 0.4 else 0
        start = position - fade
        if fade:
            ramp = np.linspace(0, 1, fade, dtype=np.float32)
            out[start:position] *= 1 - ramp
            block[:fade] *= ramp
            truth[-1][1] = start + fade // 2
        out[start:start + length] += block
        truth.append([start + fade // 2, start + length, kind])
        position, previous = start + length, kind
    truth[-1][1] = position
    return out[:position], [(a / RATE, b / RATE, label) for a, b, label in truth]


def programmes(directory: Path, count: int, minutes: float) -> list[tuple[Path, list]]:
    """The programmes' WAV paths and truths, built once and cached in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    result = []
    for index in range(count):
        stem = directory / f"programme-v{VERSION}-{index}-{minutes:g}min"
        wav, truth_path = stem.with_suffix(".wav"), stem.with_suffix(".json")
        if not truth_path.exists():
            samples, truth = build_programme(1000 + index, minutes)
            sf.write(wav, samples, RATE, subtype="FLOAT")
            truth_path.write_text(json.dumps(truth))
        result.append((wav, [tuple(segment) for segment in json.loads(truth_path.read_text())]))
    return result


# ---------------------------------------------------------------------------------------- scoring
def frames_of(segments, duration_s: float) -> np.ndarray:
    """Label code of every 10-ms frame (-1 where no segment, 3 for any other label)."""
    frames = int(round(duration_s / FRAME_S))
    out = np.full(frames, -1, np.int8)
    for start, end, label in segments:
        out[int(round(start / FRAME_S)):int(round(end / FRAME_S))] = LABEL_CODES.get(label, 3)
    return out


def absorb_pauses(frames: np.ndarray, shortest_s: float = 0.5) -> np.ndarray:
    """Silence runs shorter than ``shortest_s`` take the label before them."""
    out = frames.copy()
    change = np.flatnonzero(np.diff(out)) + 1
    starts, stops = np.concatenate([[0], change]), np.concatenate([change, [len(out)]])
    for start, stop in zip(starts, stops):
        if out[start] == LABEL_CODES["silence"] and stop - start < shortest_s / FRAME_S and start > 0:
            out[start:stop] = out[start - 1]
    return out


def intervals(frames: np.ndarray) -> np.ndarray:
    """(n, 2) intervals (s) of the runs of equal labels."""
    change = np.flatnonzero(np.diff(frames)) + 1
    edges = np.concatenate([[0], change, [len(frames)]]) * FRAME_S
    return np.stack([edges[:-1], edges[1:]], axis=1)


def score(truth, estimate, duration_s: float) -> dict:
    """The scores of one estimate against the truth (module docstring)."""
    reference = frames_of(truth, duration_s)
    guess = absorb_pauses(frames_of(estimate, duration_s))
    content = reference <= LABEL_CODES["music"]
    silence = LABEL_CODES["silence"]
    result = {"frames": len(reference), "ms_correct": int(np.sum(guess[content] == reference[content])),
              "ms_frames": int(content.sum()), "all_correct": int(np.sum(guess == reference)),
              "silence_true": int(np.sum(reference == silence)),
              "silence_hit": int(np.sum((reference == silence) & (guess == silence))),
              "silence_said": int(np.sum(guess == silence))}
    ref_intervals, est_intervals = intervals(reference), intervals(guess)
    for window in (0.5, 2.0):
        _, recall, _ = mir_eval.segment.detection(ref_intervals, est_intervals, window=window, trim=True)
        result[f"hits_{window}"] = int(round(recall * (len(ref_intervals) - 1)))  # one-to-one matches
    result["boundaries_true"], result["boundaries_said"] = len(ref_intervals) - 1, len(est_intervals) - 1
    return result


def summary(scores: list[dict]) -> dict:
    """Scores pooled over programmes (frame counts and boundary matches summed)."""
    total = {key: sum(s[key] for s in scores) for key in ("frames", "ms_correct", "ms_frames", "all_correct",
                                                          "silence_true", "silence_hit", "silence_said",
                                                          "boundaries_true", "boundaries_said")}
    out = {"music/speech acc": total["ms_correct"] / total["ms_frames"],
           "3-class acc": total["all_correct"] / total["frames"],
           "silence recall": total["silence_hit"] / max(total["silence_true"], 1),
           "silence precision": total["silence_hit"] / max(total["silence_said"], 1)}
    for window in (0.5, 2.0):
        hits = sum(s[f"hits_{window}"] for s in scores)
        precision = hits / max(total["boundaries_said"], 1)
        recall = hits / max(total["boundaries_true"], 1)
        out[f"P@{window:g}"], out[f"R@{window:g}"] = precision, recall
        out[f"F@{window:g}"] = 2 * precision * recall / max(precision + recall, 1e-12)
    return out


def before_segments(start_s: np.ndarray, p_music: np.ndarray, duration_s: float) -> list:
    """main's rule before issue 14: window i covers [start_i, start_{i+1}), argmax, equal neighbours merged."""
    edges = np.append(start_s, duration_s)
    labels = [LABELS[int(p > 0.5)] for p in p_music]
    return [(edges[i], edges[i + 1], labels[i]) for i in range(len(labels))]


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------- runs
def run_msc(model, items, hop_s: float | None) -> tuple[dict, dict, float]:
    """After and before estimates of every programme with one window hop, and the CPU seconds of labelling."""
    after, before, cpu = {}, {}, 0.0
    for path, _ in items:
        started = cpu_seconds()
        label = label_features(featurize_file(path, window_config("all", hop_s)), model)
        cpu += cpu_seconds() - started
        after[path] = [(s.start_s, s.end_s, s.label) for s in label.segments]
        before[path] = before_segments(label.window_start_s, label.window_probs[:, LABELS.index("music")],
                                       label.duration_s)
    return after, before, cpu


def run_ina(python: str, items) -> tuple[dict, float]:
    """inaSpeechSegmenter's segments of every programme, and the CPU seconds of its process."""
    started = cpu_seconds(resource.RUSAGE_CHILDREN)
    reply = subprocess.run([python, "-c", INA_SCRIPT, *[str(path) for path, _ in items]], check=True,
                           capture_output=True, text=True)
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - started
    segments = json.loads(reply.stdout.strip().splitlines()[-1])
    return {path: [(s[1], s[2], s[0]) for s in segments[str(path)]] for path, _ in items}, cpu


def featurize_ratio(path: Path) -> str:
    """CPU of one STFT per window against one shared STFT per batch, on 0.9985-s windows of ``path``."""
    config = window_config("all", 1.0)
    batches = list(read_windows(path, config, batch_windows=64))
    timings = {}
    for name, function in (("per window", lambda rows: depth.featurize(rows, config)),
                           ("shared", lambda rows: depth.featurize_hopped(rows, hop_samples=config.hop_samples,
                                                                          config=config))):
        started = cpu_seconds()
        codes = [function(batch.samples) for batch in batches]
        timings[name] = (cpu_seconds() - started, codes)
    same = all(np.array_equal(a, b) for a, b in zip(timings["per window"][1], timings["shared"][1]))
    windows = sum(len(batch.samples) for batch in batches)
    per, shared = timings["per window"][0], timings["shared"][0]
    return (f"featurize {windows} windows at hop {config.hop_samples} samples: one STFT per window "
            f"{windows / per:.0f} windows/CPU-s, shared STFT {windows / shared:.0f} windows/CPU-s, "
            f"ratio {per / shared:.2f}x; codes bit-equal: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--programmes", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/msc-broadcast"))
    parser.add_argument("--model", default=None, help="msc model directory (default: the bundled model)")
    parser.add_argument("--ina", default=None, metavar="PYTHON", help="python of an inaSpeechSegmenter venv")
    parser.add_argument("--hops", default="5,1", help="msc window hops to run, s (5: back to back; 1: 0.9985 s)")
    args = parser.parse_args()

    started = time.time()
    items = programmes(args.dir, args.programmes, args.minutes)
    audio_s = sum(sf.info(path).duration for path, _ in items)
    print(f"{len(items)} programmes, {audio_s / 60:.1f} min, "
          f"{sum(len(truth) - 1 for _, truth in items)} true boundaries (built in {time.time() - started:.0f} s)")
    print(featurize_ratio(items[0][0]))

    model = load_model(args.model)
    label_features(featurize_file(items[0][0], window_config("all", 1.0)), model)  # warm-up: TF, numba, caches
    estimates, cpu = {}, {}
    for hop in args.hops.split(","):
        name = "5-s windows" if float(hop) == 5 else f"hop {hop} s"
        after, before, cpu[f"after, {name}"] = run_msc(model, items, float(hop))
        estimates[f"before, {name}"], estimates[f"after, {name}"] = before, after
    if args.ina:
        estimates["inaSpeechSegmenter sm"], cpu["inaSpeechSegmenter sm"] = run_ina(args.ina, items)

    columns = ("music/speech acc", "3-class acc", "silence recall", "silence precision", "P@0.5", "R@0.5", "F@0.5",
               "P@2", "R@2", "F@2")
    print(f"\n{'method':<24}" + "".join(f"{name:>18}" for name in columns) + f"{'audio-s/CPU-s':>16}")
    for method, by_path in estimates.items():
        durations = {path: sf.info(path).duration for path, _ in items}
        pooled = summary([score(truth, by_path[path], durations[path]) for path, truth in items])
        speed = f"{audio_s / cpu[method]:16.1f}" if method in cpu else f"{'-':>16}"
        print(f"{method:<24}" + "".join(f"{pooled[name]:18.3f}" for name in columns) + speed)
    print(f"\n('before' rows reuse the windows of the 'after' row with the same hop; total {time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
