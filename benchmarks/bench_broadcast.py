"""Broadcast segmentation: msc and inaSpeechSegmenter on deterministic programmes of held-out recordings, one run.

Run from the repository root::

    python benchmarks/bench_broadcast.py CORPUS_DIR SPLIT_MANIFEST.csv [--programmes 3] [--minutes 8]
        [--dir /tmp/msc-broadcast] [--model DIR] [--ina .peers/ina/bin/python] [--hops 5,1,1/5]

**Programmes** are built from the corpus of ``scripts/corpus/build.sh`` and only
from its clips of the ``test`` split of ``scripts/corpus_split_manifest.py``:
whole source packages no msc model was trained or tuned on (never from the
sources of ../shared/data/EXCLUDED_SOURCES.md, which the corpus recipe refuses).
Each programme (its own seed) chains blocks of music (15-60 s), speech (15-60 s),
speech over music (15-45 s: a speech clip with a held-out music clip under it,
the bed 3-20 dB below the speech, RMS) and noise (5-20 s), each block made of
clips of its class laid end to end and set to -14 to -26 dBFS RMS; blocks are
joined by hard cuts or 1-3 s crossfades (the true boundary is the middle of the
fade), with silences of 1-4 s (digital zero or noise at -75 dBFS) between some.
The WAV files and their ground truth are cached in ``--dir``.

**Methods**: msc's :func:`msc_core.labelling.label_file` with the default (or
``--model``) model at each window hop of ``--hops`` (5: back to back; 1: 0.9985 s,
every window run; 1/5: a 1-s hop with a first pass every 5 s, labelling's default;
a suffix ``@bf16`` or ``@auto`` sets the model's arithmetic, default ``fp32`` as msc's),
and inaSpeechSegmenter 0.6.8 (``sm`` engine, its own venv, ../shared/peers/README.md)
when ``--ina`` is given (its ``noEnergy`` is silence).

**Scores** (frames of 10 ms; silence runs under 0.5 s in an estimate take the
label before them, so that pauses inside speech are not counted as boundaries):

* music/speech accuracy: frames whose truth is speech or music, speech over music said counting as speech;
* 3-class accuracy: frames whose truth is speech, music or speech over music, each named exactly;
* 5-class accuracy: every frame, each label named exactly;
* silence and noise recall (frames);
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
import time
from pathlib import Path

import mir_eval
import numpy as np
import pandas as pd
import soundfile as sf

from msc_core import depth
from msc_core.audio import load_audio, read_windows
from msc_core.labelling import featurize_file, label_features, label_file, load_model, window_config
from msc_core.segmentation import FRAME_S, SEGMENT_LABELS

RATE = 22050
VERSION = 2
CODES = {label: code for code, label in enumerate(SEGMENT_LABELS)}
BLOCK_S = {"music": (15, 60), "speech": (15, 60), "speech_over_music": (15, 45), "noise": (5, 20)}
INA_SCRIPT = """
import json, sys
from inaSpeechSegmenter import Segmenter
seg = Segmenter(vad_engine="sm", detect_gender=False)
names = {"noEnergy": "silence"}
print(json.dumps({path: [(names.get(label, label), start, end) for label, start, end in seg(path)]
                  for path in sys.argv[1:]}))
"""


# ---------------------------------------------------------------------------------------- programmes
def held_out_clips(corpus: Path, split_manifest: Path, split: str = "test") -> dict[str, list[str]]:
    """The clips of music, speech and noise of one held-out split, by class (sorted paths)."""
    table = pd.read_csv(split_manifest)
    table = table[(table["split"] == split) & table["label"].isin(["music", "speech", "noise"])]
    return {label: sorted(group["path"]) for label, group in table.groupby("label")}


def rms_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(samples, dtype=np.float64)) + 1e-12))


def filled(clips: list[str], seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Clips of one class drawn at random and laid end to end to ``seconds`` (mono, RATE)."""
    parts, total = [], 0
    while total < seconds * RATE:
        samples = load_audio(clips[int(rng.integers(len(clips)))], sample_rate=RATE)
        parts.append(samples)
        total += len(samples)
    return np.concatenate(parts)[:int(seconds * RATE)]


def block(kind: str, clips: dict[str, list[str]], rng: np.random.Generator) -> np.ndarray:
    """One block of ``kind``, set to -14 to -26 dBFS RMS."""
    seconds = rng.uniform(*BLOCK_S[kind])
    if kind == "speech_over_music":
        speech, music = filled(clips["speech"], seconds, rng), filled(clips["music"], seconds, rng)
        bed_db = rms_db(speech) - rng.uniform(3, 20)
        samples = speech + music * 10 ** ((bed_db - rms_db(music)) / 20)
    else:
        samples = filled(clips[kind], seconds, rng)
    return (samples * 10 ** ((rng.uniform(-26, -14) - rms_db(samples)) / 20)).astype(np.float32)


def build_programme(seed: int, minutes: float, clips: dict[str, list[str]]) -> tuple[np.ndarray, list]:
    """A deterministic programme and its true segments ``(start_s, end_s, label)``."""
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * RATE)
    out = np.zeros(total + 120 * RATE, np.float32)
    truth: list[list] = []
    position, previous = 0, None
    while position < total:
        if previous not in (None, "silence") and rng.random() < 0.25:
            length = int(rng.uniform(1, 4) * RATE)
            if rng.random() < 0.5:
                out[position:position + length] = (10 ** (-75 / 20) * rng.standard_normal(length)).astype(np.float32)
            truth.append([position, position + length, "silence"])
            position, previous = position + length, "silence"
            continue
        kind = str(rng.choice([k for k in BLOCK_S if k != previous]))
        samples = block(kind, clips, rng)
        fade = int(rng.uniform(1, 3) * RATE) if previous not in (None, "silence") and rng.random() < 0.4 else 0
        start = position - fade
        if fade:
            ramp = np.linspace(0, 1, fade, dtype=np.float32)
            out[start:position] *= 1 - ramp
            samples[:fade] *= ramp
            truth[-1][1] = start + fade // 2
        out[start:start + len(samples)] += samples
        truth.append([start + fade // 2, start + len(samples), kind])
        position, previous = start + len(samples), kind
    truth[-1][1] = position
    return out[:position], [(a / RATE, b / RATE, label) for a, b, label in truth]


def programmes(directory: Path, count: int, minutes: float, clips: dict[str, list[str]]) -> list[tuple[Path, list]]:
    """The programmes' WAV paths and truths, built once and cached in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    result = []
    for index in range(count):
        stem = directory / f"programme-v{VERSION}-{index}-{minutes:g}min"
        wav, truth_path = stem.with_suffix(".wav"), stem.with_suffix(".json")
        if not truth_path.exists():
            samples, truth = build_programme(1000 + index, minutes, clips)
            sf.write(wav, samples, RATE, subtype="FLOAT")
            truth_path.write_text(json.dumps(truth))
        result.append((wav, [tuple(segment) for segment in json.loads(truth_path.read_text())]))
    return result


# ---------------------------------------------------------------------------------------- scoring
def frames_of(segments, duration_s: float) -> np.ndarray:
    """Label code (:data:`CODES`) of every 10-ms frame (-1 where no segment)."""
    out = np.full(int(round(duration_s / FRAME_S)), -1, np.int8)
    for start, end, label in segments:
        out[int(round(start / FRAME_S)):int(round(end / FRAME_S))] = CODES[label]
    return out


def absorb_pauses(frames: np.ndarray, shortest_s: float = 0.5) -> np.ndarray:
    """Silence runs shorter than ``shortest_s`` take the label before them."""
    out = frames.copy()
    change = np.flatnonzero(np.diff(out)) + 1
    for start, stop in zip(np.concatenate([[0], change]), np.concatenate([change, [len(out)]])):
        if out[start] == CODES["silence"] and stop - start < shortest_s / FRAME_S and start > 0:
            out[start:stop] = out[start - 1]
    return out


def intervals(frames: np.ndarray) -> np.ndarray:
    """(n, 2) intervals (s) of the runs of equal labels."""
    change = np.flatnonzero(np.diff(frames)) + 1
    edges = np.concatenate([[0], change, [len(frames)]]) * FRAME_S
    return np.stack([edges[:-1], edges[1:]], axis=1)


def score(truth, estimate, duration_s: float) -> dict:
    """Frame and boundary counts of one estimate against the truth (module docstring)."""
    reference = frames_of(truth, duration_s)
    guess = absorb_pauses(frames_of(estimate, duration_s))
    folded = np.where(guess == CODES["speech_over_music"], CODES["speech"], guess)
    two = np.isin(reference, [CODES["speech"], CODES["music"]])
    three = two | (reference == CODES["speech_over_music"])
    result = {"frames": len(reference), "two": int(two.sum()), "two_right": int(np.sum(folded[two] == reference[two])),
              "three": int(three.sum()), "three_right": int(np.sum(guess[three] == reference[three])),
              "five_right": int(np.sum(guess == reference))}
    for label in ("silence", "noise"):
        result[f"{label}_true"] = int(np.sum(reference == CODES[label]))
        result[f"{label}_hit"] = int(np.sum((reference == CODES[label]) & (guess == CODES[label])))
    ref_intervals, est_intervals = intervals(reference), intervals(guess)
    for window in (0.5, 2.0):
        _, recall, _ = mir_eval.segment.detection(ref_intervals, est_intervals, window=window, trim=True)
        result[f"hits_{window}"] = int(round(recall * (len(ref_intervals) - 1)))  # one-to-one matches
    result["boundaries_true"], result["boundaries_said"] = len(ref_intervals) - 1, len(est_intervals) - 1
    return result


def summary(scores: list[dict]) -> dict:
    """Scores pooled over programmes (frame counts and boundary matches summed)."""
    total = {key: sum(s[key] for s in scores) for key in scores[0]}
    out = {"music/speech acc": total["two_right"] / total["two"], "3-class acc": total["three_right"] / total["three"],
           "5-class acc": total["five_right"] / total["frames"],
           "silence recall": total["silence_hit"] / max(total["silence_true"], 1),
           "noise recall": total["noise_hit"] / max(total["noise_true"], 1)}
    for window in (0.5, 2.0):
        precision = total[f"hits_{window}"] / max(total["boundaries_said"], 1)
        recall = total[f"hits_{window}"] / max(total["boundaries_true"], 1)
        out[f"F@{window:g}"] = 2 * precision * recall / max(precision + recall, 1e-12)
        out[f"P@{window:g}"], out[f"R@{window:g}"] = precision, recall
    return out


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------- runs
def run_msc(model, items, hop_s: float, coarse_s: float) -> tuple[dict, float]:
    """msc's segments of every programme at one window hop and first pass (0: none), and the CPU seconds."""
    segments, started = {}, cpu_seconds()
    for path, _ in items:
        label = label_file(path, model, hop_s=hop_s, coarse_s=coarse_s)
        segments[path] = [(s.start_s, s.end_s, s.label) for s in label.segments]
    return segments, cpu_seconds() - started


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
    parser.add_argument("corpus", type=Path, help="corpus folder (scripts/corpus/build.sh)")
    parser.add_argument("split_manifest", type=Path, help="scripts/corpus_split_manifest.py's output")
    parser.add_argument("--programmes", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/msc-broadcast"))
    parser.add_argument("--model", default=None, help="msc model directory (default: the bundled model)")
    parser.add_argument("--ina", default=None, metavar="PYTHON", help="python of an inaSpeechSegmenter venv")
    parser.add_argument("--hops", default="5,1,1/5", help="msc window hops to run, s (5: back to back; 1: 0.9985 s; "
                                                       "1/5: hop 1 with a coarse pass every 5 s; a suffix @bf16 or "
                                                       "@auto: the model's arithmetic, default fp32)")
    args = parser.parse_args()

    started = time.time()
    items = programmes(args.dir, args.programmes, args.minutes, held_out_clips(args.corpus, args.split_manifest))
    durations = {path: sf.info(path).duration for path, _ in items}
    audio_s = sum(durations.values())
    print(f"{len(items)} programmes, {audio_s / 60:.1f} min, "
          f"{sum(len(truth) - 1 for _, truth in items)} true boundaries (built in {time.time() - started:.0f} s)")
    print(featurize_ratio(items[0][0]))
    models = {}
    estimates, cpu = {}, {}
    for spec in args.hops.split(","):
        spec, _, precision = spec.partition("@")
        precision = precision or "fp32"
        if precision not in models:
            models[precision] = load_model(args.model, precision=precision)
            label_features(featurize_file(items[0][0], window_config("all", 1.0)), models[precision])  # warm-up
        hop, _, coarse = spec.partition("/")
        name = (f"msc, {'5-s windows' if float(hop) == 5 else f'hop {hop} s'}{f', coarse {coarse} s' if coarse else ''}"
                f" ({models[precision].precision})")
        estimates[name], cpu[name] = run_msc(models[precision], items, float(hop), float(coarse) if coarse else 0)
    if args.ina:
        estimates["inaSpeechSegmenter sm"], cpu["inaSpeechSegmenter sm"] = run_ina(args.ina, items)

    columns = ("music/speech acc", "3-class acc", "5-class acc", "silence recall", "noise recall", "F@0.5", "F@2")
    print("\n| method | " + " | ".join(columns) + " | audio-s per CPU-s |")
    print("|---|" + "---:|" * (len(columns) + 1))
    for method, by_path in estimates.items():
        pooled = summary([score(truth, by_path[path], durations[path]) for path, truth in items])
        print(f"| {method} | " + " | ".join(f"{pooled[name]:.3f}" for name in columns)
              + f" | {audio_s / cpu[method]:.1f} |")
    print(f"\n(total {time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
