"""Model-card evaluation: msc models against an MFCC baseline, plus bandwidth probes, in one run.

Usage::

    python scripts/model_card_eval.py --shards /work/runs/corpus_shards \\
        --models msc16=/work/runs/model_w16 paper=/tmp/paper_model --split test --out eval_test [--limit N]

Everything below is measured in the run; nothing is copied from elsewhere.

1. **Held-out split** (``--split test`` or ``val``): the labelled windows of that
   split of the shards (real recordings from sources that training never saw).
   For each msc model: accuracy, per-class precision/recall/F1, confusion matrix
   and ROC-AUC (:meth:`msc_core.evaluation.Evaluation.summary`), and windows/s of
   :meth:`MscModel.predict_codes` on this CPU (with the load average and the CPU
   share the process got, because the machine may be shared).
2. **Baseline**: mean and standard deviation over time of 20 MFCCs and their
   deltas (80 numbers per window, librosa), standardized, into scikit-learn's
   LogisticRegression (balanced class weights), trained on the TRAIN split's
   windows. Each window's audio is decoded from its source file with
   :func:`msc_core.audio.read_windows` and the shards' feature config, and matched
   to its shard row by ``start_s``.
3. **Probes** (the corpus pairs telephone-band speech with wideband music):

   - the split's music windows low-passed to 4 kHz (soxr to 8 kHz and back, a
     telephone simulation, :func:`msc_core.augment.band_limit`), re-featurized
     with :func:`msc_core.depth.featurize`: music recall;
   - the split's music and speech windows with white noise at 10 dB SNR
     (:func:`msc_core.augment.add_noise`, seeded): recall of each class;
   - synthetic wideband speech from espeak-ng (generated audio, formant TTS, not
     a recording; several languages and voices, 22,050 Hz, 5-s windows): speech
     recall; also the same TTS low-passed to 4 kHz;
   - for reference, music recall on the split's real (wideband) music and speech
     recall on its real speech (which in this corpus is telephone band).

   Each probe line gives its number of windows and the median share of signal
   power above 4 kHz, which shows what band the audio really has.
4. **Calibration**: log loss and expected calibration error (10 bins) of every
   model on the split, beside accuracy.

Outputs: a Markdown report on stdout (also ``OUT/model_card_eval.md``),
``OUT/model_card_eval.json`` with every number, ``OUT/<split>_<name>/`` with
:meth:`Evaluation.write`'s files (confusion-matrix PNG, misclassified windows)
for each model and the baseline, and the generated TTS audio in ``OUT/tts/``.
``--limit N`` evaluates at most N windows of each set (evenly spaced, balanced
between classes), for quick runs during development.

Memory: the split's compact codes (27.5 KB a window) plus the probes' codes and
80 floats per window; audio is decoded one file at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from msc_core.audio import read_windows  # noqa: E402
from msc_core.augment import add_noise, apply_gain, band_limit  # noqa: E402
from msc_core.config import LABELS, FeatureConfig, require_same_features  # noqa: E402
from msc_core.depth import featurize  # noqa: E402
from msc_core.evaluation import Evaluation  # noqa: E402
from msc_core.labelling import class_probs  # noqa: E402
from msc_core.shards import codes_from_arrow, iter_batches, list_shards, read_feature_config  # noqa: E402

MUSIC, SPEECH = LABELS.index("music"), LABELS.index("speech")
CUTOFF_HZ = 4000.0             # Hz: telephone band edge, for the low-pass probes and to describe each set
NOISE_SNR_DB = 10.0            # white-noise probes
GAIN_CHECK_DB = -30.0          # level change whose effect on the codes is measured
N_MFCC = 20
TTS_NOISE_DBFS = -70.0         # white-noise floor added to the TTS (espeak pauses are digital zeros)
BASELINE_NAME = "mfcc_logreg"

# Original sentences (written for this script), one paragraph per language; each
# is spoken by three voices: the language's default voice, a female and a male variant.
TTS_TEXTS = {
    "en-us": "The library opens at nine in the morning and closes late on Thursdays. Yesterday I walked along "
             "the river to buy bread, apples and a newspaper. My neighbour told me that the bridge will be "
             "repaired next spring, so the buses will take a longer road for a few weeks. If you have time on "
             "Saturday, we could meet at the station and visit the old market together.",
    "de": "Die Bibliothek öffnet um neun Uhr morgens und schließt am Donnerstag erst spät. Gestern bin ich am "
          "Fluss entlang gegangen, um Brot, Äpfel und eine Zeitung zu kaufen. Mein Nachbar hat erzählt, dass "
          "die Brücke im nächsten Frühling repariert wird. Wenn du am Samstag Zeit hast, können wir uns am "
          "Bahnhof treffen und zusammen den alten Markt besuchen.",
    "fr-fr": "La bibliothèque ouvre à neuf heures du matin et ferme tard le jeudi. Hier, je me suis promené le "
             "long de la rivière pour acheter du pain, des pommes et un journal. Mon voisin m'a dit que le pont "
             "sera réparé au printemps prochain. Si tu as le temps samedi, nous pourrions nous retrouver à la "
             "gare et visiter ensemble le vieux marché.",
    "es": "La biblioteca abre a las nueve de la mañana y cierra tarde los jueves. Ayer caminé junto al río para "
          "comprar pan, manzanas y un periódico. Mi vecino me dijo que el puente será reparado la próxima "
          "primavera. Si tienes tiempo el sábado, podríamos encontrarnos en la estación y visitar juntos el "
          "mercado antiguo.",
    "it": "La biblioteca apre alle nove del mattino e il giovedì chiude tardi. Ieri ho camminato lungo il fiume "
          "per comprare pane, mele e un giornale. Il mio vicino mi ha detto che il ponte sarà riparato la "
          "prossima primavera. Se hai tempo sabato, potremmo incontrarci alla stazione e visitare insieme il "
          "vecchio mercato.",
    "nl": "De bibliotheek gaat om negen uur 's ochtends open en sluit op donderdag pas laat. Gisteren liep ik "
          "langs de rivier om brood, appels en een krant te kopen. Mijn buurman vertelde dat de brug volgend "
          "voorjaar wordt gerepareerd. Als je zaterdag tijd hebt, kunnen we elkaar bij het station ontmoeten "
          "en samen de oude markt bezoeken.",
    "pt": "A biblioteca abre às nove da manhã e fecha tarde às quintas-feiras. Ontem caminhei ao longo do rio "
          "para comprar pão, maçãs e um jornal. O meu vizinho disse-me que a ponte vai ser reparada na próxima "
          "primavera. Se tiveres tempo no sábado, podemos encontrar-nos na estação e visitar juntos o mercado "
          "antigo.",
}
TTS_VOICES = (("", 165, 50), ("+f3", 145, 65), ("+m3", 185, 35))   # (variant, words/min, pitch 0-99)

_STARTED = time.monotonic()


def log(message: str) -> None:
    """Progress on stderr, with seconds since start."""
    print(f"[{time.monotonic() - _STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- data
@dataclass
class AudioSet:
    """Windows of one kind of audio, ready for every model.

    Attributes
    ----------
    name : str
        Short key (``split``, ``music_lp4k``, ``tts``...).
    description : str
        What the audio is, for the report.
    labels : np.ndarray, int64 (N,)
        True class index (LABELS order).
    codes : np.ndarray, uint8 (N, n_mels, frames)
        Compact depth-layer codes, the msc models' input.
    mfcc : np.ndarray, float32 (N, 80)
        The baseline's features.
    hf_share : np.ndarray, float64 (N,)
        Share of the window's power above :data:`CUTOFF_HZ` (NaN for a silent window).
    paths, start_s : list
        Where each window comes from (for misclassified lists).
    """

    name: str
    description: str
    labels: np.ndarray
    codes: np.ndarray
    mfcc: np.ndarray
    hf_share: np.ndarray
    paths: list = field(default_factory=list)
    start_s: list = field(default_factory=list)

    def describe(self) -> dict:
        """JSON-ready facts: description, windows per class, median power share above 4 kHz."""
        counts = {label: int(np.sum(self.labels == index)) for index, label in enumerate(LABELS)}
        return {"description": self.description, "windows": int(len(self.labels)), "windows_per_class": counts,
                "median_power_share_above_4khz": _nan_median(self.hf_share)}


def _nan_median(values: np.ndarray) -> float | None:
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if len(finite) else None


def evenly(count: int, keep: int | None) -> np.ndarray:
    """Indices of ``keep`` items spread evenly over ``count`` (all of them when ``keep`` is None or larger)."""
    if keep is None or keep >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, keep).round().astype(int))


def split_rows(shards: list[str], config: FeatureConfig, split: str, limit: int | None) -> pd.DataFrame:
    """The labelled windows of ``split`` (path, start_s, label), sorted; at most ``limit``, balanced by class."""
    parts = []
    for batch in iter_batches(shards, config, columns=("path", "start_s", "label"), filter_split=split,
                              batch_rows=4096):
        parts.append(batch.to_pandas())
    if not parts:
        raise SystemExit(f"the {split!r} split of these shards holds no windows")
    rows = pd.concat(parts, ignore_index=True)
    rows = rows[rows["label"].isin(LABELS)].sort_values(["label", "path", "start_s"], ignore_index=True)
    if limit is not None:
        per_class = -(-limit // len(LABELS))
        rows = pd.concat([group.iloc[evenly(len(group), per_class)] for _, group in rows.groupby("label")],
                         ignore_index=True)
    rows["key"] = list(zip(rows["path"], rows["start_s"].round(3)))
    return rows


def split_codes(shards: list[str], config: FeatureConfig, split: str, rows: pd.DataFrame) -> np.ndarray:
    """The shards' codes of exactly ``rows``, in their order."""
    position = {key: index for index, key in enumerate(rows["key"])}
    codes = np.zeros((len(rows), *config.encoded_shape), np.uint8)
    found = 0
    for batch in iter_batches(shards, config, columns=("codes", "path", "start_s"), filter_split=split):
        paths, starts = batch.column("path").to_pylist(), pc.round(batch.column("start_s"), 3).to_pylist()
        wanted = [(row, position[key]) for row, key in enumerate(zip(paths, starts)) if key in position]
        if wanted:
            block = codes_from_arrow(batch.column("codes"), config)
            for row, index in wanted:
                codes[index] = block[row]
            found += len(wanted)
    if found != len(rows):
        raise SystemExit(f"found codes for {found} of {len(rows)} windows of the {split!r} split")
    return codes


# ---------------------------------------------------------------------------------------- audio
def file_windows(rows: pd.DataFrame, config: FeatureConfig):
    """Decode each file of ``rows`` once and yield ``(row_indices, samples)`` for its wanted windows.

    Windows come from :func:`msc_core.audio.read_windows` under ``config`` (the
    shards' features and window policy) and are matched to rows by start time.
    """
    for path, group in rows.groupby("path", sort=False):
        wanted = {round(start, 3): index for index, start in zip(group.index, group["start_s"])}
        indices, samples = [], []
        for batch in read_windows(path, config):
            for start, window in zip(batch.start_s, batch.samples):
                index = wanted.pop(round(float(start), 3), None)
                if index is not None:
                    indices.append(index)
                    samples.append(window)
        if wanted:
            raise SystemExit(f"{path}: decoding gave no window at {sorted(wanted)} s (shards and audio differ)")
        yield np.asarray(indices), np.stack(samples)


def mfcc_stats(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean and std over time of 20 MFCCs and their deltas: float32 (B, 80)."""
    import librosa

    mfcc = librosa.feature.mfcc(y=np.asarray(samples, np.float32), sr=sample_rate, n_mfcc=N_MFCC)
    delta = librosa.feature.delta(mfcc)
    return np.concatenate([mfcc.mean(-1), mfcc.std(-1), delta.mean(-1), delta.std(-1)], axis=-1).astype(np.float32)


def telephone_lowpass(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Each window (B, N) with nothing above :data:`CUTOFF_HZ` (:func:`msc_core.augment.band_limit`)."""
    return np.stack([band_limit(window, sample_rate, cutoff_hz=CUTOFF_HZ) for window in samples])


@dataclass(frozen=True)
class Probe:
    """A transformed copy of the split's windows of one class.

    ``transform`` maps windows float32 (B, N) to (B, N).
    """

    name: str
    label: str
    description: str
    transform: Callable[[np.ndarray], np.ndarray]


def split_probes(sample_rate: int) -> list[Probe]:
    """The probes built from the split's own windows (module docstring, item 3)."""
    rng = np.random.default_rng(0)

    def noisy(samples: np.ndarray) -> np.ndarray:
        return np.stack([add_noise(window, snr_db=NOISE_SNR_DB, rng=rng) for window in samples])

    return [Probe("music_lp4k", "music", f"the same real music low-passed to {CUTOFF_HZ / 1000:g} kHz "
                  "(soxr 22.05 -> 8 -> 22.05 kHz)", lambda samples: telephone_lowpass(samples, sample_rate)),
            Probe("music_noise10", "music", f"the same real music with white noise at {NOISE_SNR_DB:g} dB SNR", noisy),
            Probe("speech_noise10", "speech", f"the same real speech with white noise at {NOISE_SNR_DB:g} dB SNR",
                  noisy)]


def power_share_above(samples: np.ndarray, sample_rate: int, cutoff_hz: float = CUTOFF_HZ) -> np.ndarray:
    """Share of each window's power above ``cutoff_hz`` (NaN for an all-zero window): float64 (B,)."""
    spectrum = np.abs(np.fft.rfft(np.asarray(samples, np.float64), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(samples.shape[-1], 1.0 / sample_rate)
    total = spectrum.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, spectrum[:, freqs > cutoff_hz].sum(-1) / total, np.nan)


@dataclass
class SplitAudio:
    """What one pass over a split's audio gives (see :func:`scan_split_audio`)."""

    mfcc: np.ndarray
    hf_share: np.ndarray
    mfcc_seconds: float
    featurize_windows_per_s: float | None
    probes: dict[str, AudioSet]
    codes_check: dict


def scan_split_audio(rows: pd.DataFrame, config: FeatureConfig, *, probes: Sequence[Probe] = (),
                     codes: np.ndarray | None = None, check_windows: int = 16) -> SplitAudio:
    """Decode the windows of ``rows`` file by file: baseline features, band share, the probes.

    Parameters
    ----------
    rows : DataFrame from :func:`split_rows`
    config : FeatureConfig
    probes : sequence of Probe
        Transformed copies to build (featurized, with baseline features).
    codes : np.ndarray or None
        The shards' codes of ``rows``; the first ``check_windows`` decoded
        windows are re-featurized and compared with them (a check that the
        audio matched to each row is the audio the shards hold), and again
        at :data:`GAIN_CHECK_DB` (how much a level change moves the codes).
    """
    rate = config.sample_rate
    mfcc = np.zeros((len(rows), 4 * N_MFCC), np.float32)
    hf = np.full(len(rows), np.nan)
    mfcc_seconds = featurize_seconds = 0.0
    built = {probe.name: {"index": [], "codes": [], "mfcc": [], "hf": []} for probe in probes}
    checked, equal_pixels, equal_after_gain = 0, 0, 0
    done = 0
    for indices, samples in file_windows(rows, config):
        started = time.perf_counter()
        mfcc[indices] = mfcc_stats(samples, rate)
        mfcc_seconds += time.perf_counter() - started
        hf[indices] = power_share_above(samples, rate)
        if codes is not None and checked < check_windows:
            take = slice(0, check_windows - checked)
            equal_pixels += int(np.sum(featurize(samples[take], config) == codes[indices[take]]))
            quieter = np.stack([apply_gain(window, gain_db=GAIN_CHECK_DB) for window in samples[take]])
            equal_after_gain += int(np.sum(featurize(quieter, config) == codes[indices[take]]))
            checked += len(indices[take])
        for probe in probes:
            mask = (rows.loc[indices, "label"] == probe.label).to_numpy()
            if mask.any():
                changed = probe.transform(samples[mask])
                parts = built[probe.name]
                parts["index"].append(indices[mask])
                started = time.perf_counter()
                parts["codes"].append(featurize(changed, config))
                featurize_seconds += time.perf_counter() - started
                parts["mfcc"].append(mfcc_stats(changed, rate))
                parts["hf"].append(power_share_above(changed, rate))
        done += len(indices)
        if done % 500 < len(indices):
            log(f"  decoded {done}/{len(rows)} windows")
    sets = {}
    for probe in probes:
        parts = built[probe.name]
        if parts["index"]:
            order = np.concatenate(parts["index"])
            sets[probe.name] = AudioSet(
                name=probe.name, description=probe.description,
                labels=np.full(len(order), LABELS.index(probe.label), np.int64), codes=np.concatenate(parts["codes"]),
                mfcc=np.concatenate(parts["mfcc"]), hf_share=np.concatenate(parts["hf"]),
                paths=rows.loc[order, "path"].tolist(), start_s=rows.loc[order, "start_s"].tolist())
    pixels = checked * config.n_mels * config.frames
    check = {"windows": checked, "identical_pixel_share": equal_pixels / pixels if pixels else None,
             "gain_db": GAIN_CHECK_DB, "identical_pixel_share_after_gain": equal_after_gain / pixels if pixels else None}
    featurized = sum(len(audio.labels) for audio in sets.values())
    speed = featurized / featurize_seconds if featurized and featurize_seconds else None
    return SplitAudio(mfcc, hf, mfcc_seconds, speed, sets, check)


# ---------------------------------------------------------------------------------------- synthetic speech
def synthesize_tts(out_dir: Path, sample_rate: int) -> tuple[list[Path], str | None]:
    """Speak :data:`TTS_TEXTS` with espeak-ng in each of :data:`TTS_VOICES`; WAV files at ``sample_rate``.

    Each file gets a seeded white-noise floor at :data:`TTS_NOISE_DBFS` (RMS),
    because espeak's pauses are exact digital silence, which no recording has.

    Returns
    -------
    (paths, reason)
        The files, or ``([], reason)`` when espeak-ng is not installed.
    """
    binary = shutil.which("espeak-ng")
    if binary is None:
        return [], "espeak-ng is not installed (apt-get install -y espeak-ng)"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for language, text in TTS_TEXTS.items():
        for variant, speed, pitch in TTS_VOICES:
            voice = f"{language}{variant}"
            path = out_dir / f"espeak_{voice.replace('+', '_')}.wav"
            subprocess.run([binary, "-v", voice, "-s", str(speed), "-p", str(pitch), "-b", "1", "-w", str(path), text],
                           check=True, capture_output=True)
            audio, rate = sf.read(path, dtype="float32")
            if rate != sample_rate:
                audio = soxr.resample(audio, rate, sample_rate, quality="HQ")
            audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * np.float32(10 ** (TTS_NOISE_DBFS / 20))
            sf.write(path, audio, sample_rate, subtype="PCM_16")
            paths.append(path)
    return paths, None


def tts_sets(paths: list[Path], config: FeatureConfig, limit: int | None) -> tuple[AudioSet, AudioSet]:
    """The TTS files' 5-s windows as they are (wideband) and low-passed to 4 kHz."""
    rows = pd.DataFrame([{"path": str(path), "start_s": float(start)} for path in paths
                         for batch in read_windows(path, config) for start in batch.start_s])
    rows = rows.iloc[evenly(len(rows), limit)].reset_index(drop=True)
    rows["label"] = "speech"
    parts = {"wide": [], "narrow": []}
    for indices, samples in file_windows(rows, config):
        for kind, audio in (("wide", samples), ("narrow", telephone_lowpass(samples, config.sample_rate))):
            parts[kind].append((indices, featurize(audio, config), mfcc_stats(audio, config.sample_rate),
                                power_share_above(audio, config.sample_rate)))
    sets = []
    for kind, name in (("wide", "tts"), ("narrow", "tts_lp4k")):
        order = np.concatenate([p[0] for p in parts[kind]])
        sets.append(AudioSet(name, "", np.full(len(order), SPEECH, np.int64),
                             np.concatenate([p[1] for p in parts[kind]]), np.concatenate([p[2] for p in parts[kind]]),
                             np.concatenate([p[3] for p in parts[kind]]),
                             rows.loc[order, "path"].tolist(), rows.loc[order, "start_s"].tolist()))
    return sets[0], sets[1]


# ---------------------------------------------------------------------------------------- scoring
def evaluation_of(split: str, model_id: str, audio: AudioSet, p_music: np.ndarray) -> Evaluation:
    """An :class:`Evaluation` of ``p_music`` on ``audio`` (with its misclassified windows)."""
    p_music = np.asarray(p_music, np.float32)
    predicted = (p_music > 0.5).astype(np.int64)
    wrong = [{"path": audio.paths[i], "start_s": audio.start_s[i], "true": LABELS[audio.labels[i]],
              "predicted": LABELS[predicted[i]], "p_predicted": float(max(p_music[i], 1 - p_music[i]))}
             for i in np.flatnonzero(predicted != audio.labels)] if audio.paths else []
    return Evaluation(split, model_id, LABELS, audio.labels, np.stack([1 - p_music, p_music], axis=1), wrong)


def recall_on(audio: AudioSet, p_music: np.ndarray) -> float:
    """Recall of the (single) true class of a probe set."""
    label = LABELS[int(audio.labels[0])]
    return evaluation_of(audio.name, "", audio, p_music).summary()["per_class"][label]["recall"]


def cpu_note() -> dict:
    """CPU count, load averages and, when readable, the CPU model."""
    note = {"cpus": os.cpu_count(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                note["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return note


def timed_predict(model, codes: np.ndarray, batch_size: int) -> tuple[np.ndarray, dict]:
    """``model.predict_codes`` on ``codes`` after a warm-up call; p_music (the binary view) and the speed it ran at."""
    model.predict_codes(codes[: min(len(codes), 2)], batch_size=batch_size)   # trace the graph once
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    probs = model.predict_codes(codes, batch_size=batch_size)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    speed = {"windows": int(len(codes)), "seconds": round(wall, 3), "windows_per_s": len(codes) / wall,
             "process_cpu_s_per_wall_s": round(cpu / wall, 2), "batch_size": batch_size,
             "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    return class_probs(probs, model.labels, view="binary")[:, MUSIC], speed


def fit_baseline(train_mfcc: np.ndarray, train_labels: np.ndarray):
    """StandardScaler + LogisticRegression (balanced class weights) on the TRAIN windows' MFCC statistics."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
    return baseline.fit(train_mfcc, train_labels)


def baseline_p_music(baseline, features: np.ndarray) -> np.ndarray:
    """The baseline's music probability for MFCC statistics (B, 80)."""
    classes = list(baseline.classes_)
    return baseline.predict_proba(features)[:, classes.index(MUSIC)]


def score(out: Path, split: str, name: str, model_id: str, p_split: np.ndarray, probes: dict, speed: dict,
          sets: dict, **facts) -> dict:
    """One model's JSON entry: the split's :meth:`Evaluation.summary` (its files written to
    ``OUT/<split>_<name>/``), recall on every probe and on each class of the split, and its speed."""
    split_set = sets["split"]
    summary = evaluation_of(split, model_id, split_set, p_split).write(out / f"{split}_{name}")
    probes = {**probes, "music_real": p_split[split_set.labels == MUSIC],
              "speech_real": p_split[split_set.labels == SPEECH]}
    return {"model_id": model_id, **facts, "split": summary, "speed": speed,
            "recall": {n: recall_on(sets[n], p) for n, p in probes.items() if len(p)},
            "mean_p_music": {n: float(np.mean(p)) for n, p in probes.items() if len(p)}}


# ---------------------------------------------------------------------------------------- report
def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
    """The report: what was measured on what audio, the split table and the probe table."""
    split, sets = result["split"], result["sets"]
    lines = [f"## Model-card evaluation on the `{split}` split ({result['created']})", ""]
    if result["limit"] is not None:
        lines += [f"**Partial run: --limit {result['limit']}** (at most that many windows per set).", ""]
    lines += ["Audio sets (windows; median share of signal power above 4 kHz):", ""]
    for name, facts in sets.items():
        share = facts["median_power_share_above_4khz"]
        lines.append(f"- `{name}`: {facts['description']}; {facts['windows']} windows "
                     f"({', '.join(f'{k} {v}' for k, v in facts['windows_per_class'].items() if v)}); "
                     f"power above 4 kHz: {'n/a' if share is None else f'{100 * share:.3g} %'}")
    if result.get("tts_skipped"):
        lines.append(f"- synthetic TTS probes skipped: {result['tts_skipped']}")
    cpu = result["cpu"]
    lines += ["", f"CPU: {cpu['cpus']} cores ({cpu.get('cpu_model', 'unknown model')}), load average "
              f"{cpu['load_average_1_5_15']} at start. **The machine was shared** with other jobs, so windows/s "
              "are lower bounds; `cpu/wall` is the cores this process actually got while timing.", ""]
    lines += [f"### `{split}` split: {sets['split']['description']}", "",
              "| model | windows | accuracy | music P / R / F1 | speech P / R / F1 | ROC-AUC | log loss | ECE "
              "| confusion [[s→s, s→m], [m→s, m→m]] | windows/s (cpu/wall) |",
              "|---|---:|---:|---|---|---:|---:|---:|---|---:|"]
    for name, entry in result["models"].items():
        summary = entry["split"]
        per = summary["per_class"]
        pr = {label: " / ".join(_f(per[label][k]) for k in ("precision", "recall", "f1")) for label in LABELS}
        speed = entry["speed"]
        lines.append(f"| {name} | {summary['windows']} | {_f(summary['accuracy'])} | {pr['music']} | {pr['speech']} "
                     f"| {_f(summary['roc_auc'])} | {_f(summary['log_loss'], 4)} | {_f(summary['ece'], 4)} "
                     f"| {summary['confusion_matrix']['counts']} "
                     f"| {speed['windows_per_s']:.1f} ({speed['process_cpu_s_per_wall_s']}) |")
    featurizer = result["featurize_windows_per_s"]
    lines += ["", "windows/s: msc models = `MscModel.predict_codes` on compact codes (featurizing excluded; "
              f"msc's depth featurizer ran at {_f(featurizer, 1)} windows/s here, one process); "
              f"{BASELINE_NAME} = MFCC statistics from decoded audio + logistic regression (decoding excluded).",
              "", "### Probes (bandwidth, noise): recall of the true class", "",
              "| audio | true class | windows | power > 4 kHz | " + " | ".join(result["models"]) + " |",
              "|---|---|---:|---:|" + "---:|" * len(result["models"])]
    for name, facts in sets.items():
        if name == "split":
            continue
        share = facts["median_power_share_above_4khz"]
        true = next(k for k, v in facts["windows_per_class"].items() if v)
        recalls = " | ".join(_f(entry["recall"].get(name)) for entry in result["models"].values())
        lines.append(f"| `{name}`: {facts['description']} | {true} | {facts['windows']} | "
                     f"{'n/a' if share is None else f'{100 * share:.3g} %'} | {recalls} |")
    lines += ["", "A model that has learnt 'nothing above 4 kHz means speech' keeps its recall on real "
              "telephone speech but loses music recall on `music_lp4k` and speech recall on `tts`. "
              "`tts` is synthetic formant speech (espeak-ng), not a recording: a different domain as well as "
              "a different band, so `tts_lp4k` separates the two effects."]
    if result.get("codes_check"):
        check = result["codes_check"]
        lines += ["", f"Check: {check['windows']} decoded windows re-featurized match the shard codes on "
                      f"{100 * check['identical_pixel_share']:.2f} % of pixels; the same windows at "
                      f"{check['gain_db']:g} dB gain give the same codes on "
                      f"{100 * check['identical_pixel_share_after_gain']:.2f} % of pixels."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- main
def parse_models(pairs: list[str]) -> dict[str, str]:
    """``name=DIR`` pairs into an ordered dict."""
    models = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--models takes name=DIR, not {pair!r}")
        if name == BASELINE_NAME or name in models:
            raise SystemExit(f"model name {name!r} is taken")
        models[name] = path
    return models


def main(argv: list[str] | None = None) -> dict:
    """Run the whole evaluation (module docstring); returns the JSON written to ``OUT/model_card_eval.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", required=True, help="featurize output folder (or folder of shards)")
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=DIR", help="msc model directories")
    parser.add_argument("--split", default="test", choices=("test", "val"), help="held-out split to evaluate")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--limit", type=int, default=None, help="at most N windows per set (development)")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    args = parser.parse_args(argv)

    from msc_core.labelling import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shards = list_shards(args.shards)
    config = read_feature_config(shards[0])
    cpu = cpu_note()
    log(f"{len(shards)} shards, features {config.hash}; loading {len(args.models)} model(s)")
    models = {}
    for name, path in parse_models(args.models).items():
        models[name] = load_model(path)
        require_same_features(config, models[name].config, what=f"shards {args.shards} vs model {path}")

    # 1. the held-out split: rows, codes, audio (baseline features, band, low-passed music)
    rows = split_rows(shards, config, args.split, args.limit)
    codes = split_codes(shards, config, args.split, rows)
    labels = np.array([LABELS.index(label) for label in rows["label"]], np.int64)
    log(f"{args.split}: {len(rows)} windows; decoding their audio")
    scanned = scan_split_audio(rows, config, probes=split_probes(config.sample_rate), codes=codes)
    split_set = AudioSet("split", f"real recordings, held-out `{args.split}` sources, as featurized in the shards",
                         labels, codes, scanned.mfcc, scanned.hf_share, rows["path"].tolist(),
                         rows["start_s"].tolist())
    sets = {"split": split_set}
    for label, what in (("music", "real music of the split (wideband sources)"),
                        ("speech", "real speech of the split (in this corpus's held-out splits: 8 kHz telephony sources)")):
        mask = labels == LABELS.index(label)
        sets[f"{label}_real"] = AudioSet(f"{label}_real", what, labels[mask], codes[mask], scanned.mfcc[mask],
                                         scanned.hf_share[mask], [p for p, m in zip(split_set.paths, mask) if m],
                                         [s for s, m in zip(split_set.start_s, mask) if m])
    sets.update(scanned.probes)

    # 2. synthetic wideband speech
    tts_paths, tts_skipped = synthesize_tts(out / "tts", config.sample_rate)
    if tts_paths:
        log(f"espeak-ng: {len(tts_paths)} files; featurizing their windows")
        wide, narrow = tts_sets(tts_paths, config, args.limit)
        wide.description = (f"SYNTHETIC TTS (espeak-ng formant speech, generated, not recorded), "
                            f"{len(TTS_TEXTS)} languages x {len(TTS_VOICES)} voices, 22,050 Hz, "
                            f"{TTS_NOISE_DBFS:.0f} dBFS noise floor")
        narrow.description = "the same synthetic TTS low-passed to 4 kHz"
        sets["tts"], sets["tts_lp4k"] = wide, narrow
    else:
        log(f"synthetic TTS skipped: {tts_skipped}")

    # 3. the baseline, trained on the TRAIN split's windows
    train_rows = split_rows(shards, config, "train", args.limit)
    log(f"baseline: decoding {len(train_rows)} train windows for MFCC statistics")
    train_mfcc = scan_split_audio(train_rows, config).mfcc
    baseline = fit_baseline(train_mfcc, np.array([LABELS.index(label) for label in train_rows["label"]]))
    started = time.perf_counter()
    baseline_split = baseline_p_music(baseline, split_set.mfcc)
    baseline_seconds = scanned.mfcc_seconds + time.perf_counter() - started

    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": ["scripts/model_card_eval.py", *(sys.argv[1:] if argv is None else argv)],
        "split": args.split, "shards": str(args.shards), "feature_hash": config.hash, "limit": args.limit,
        "cpu": cpu, "featurize_windows_per_s": scanned.featurize_windows_per_s, "codes_check": scanned.codes_check,
        "tts_skipped": tts_skipped, "tts_files": [str(p) for p in tts_paths],
        "sets": {name: audio.describe() for name, audio in sets.items()},
        "baseline": {"features": f"mean and std over time of {N_MFCC} MFCCs and their deltas (librosa defaults)",
                     "classifier": "StandardScaler + LogisticRegression(class_weight='balanced')",
                     "train_windows": int(len(train_rows)),
                     "train_windows_per_class": train_rows["label"].value_counts().to_dict()},
        "models": {},
    }
    probe_names = [name for name in sets if name not in ("split", "music_real", "speech_real")]
    for name, model in models.items():
        log(f"{name}: predicting {len(codes)} {args.split} windows (timed), then the probes")
        p_split, speed = timed_predict(model, codes, args.batch_size)
        probes = {n: class_probs(model.predict_codes(sets[n].codes, batch_size=args.batch_size), model.labels,
                                 view="binary")[:, MUSIC] for n in probe_names}
        result["models"][name] = score(out, args.split, name, model.model_id, p_split, probes, speed, sets,
                                       widths=model.metadata.get("widths"), source=model.metadata.get("source"))
    speed = {"windows": len(codes), "seconds": round(baseline_seconds, 3),
             "windows_per_s": len(codes) / baseline_seconds, "process_cpu_s_per_wall_s": "n/a"}
    probes = {n: baseline_p_music(baseline, sets[n].mfcc) for n in probe_names}
    result["models"][BASELINE_NAME] = score(out, args.split, BASELINE_NAME, "mfcc-logreg", baseline_split, probes,
                                            speed, sets, widths=None, source="scikit-learn, trained on train split")
    report = markdown(result)
    (out / "model_card_eval.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "model_card_eval.md").write_text(report + "\n")
    print(report)
    log(f"wrote {out / 'model_card_eval.json'}")
    return result


if __name__ == "__main__":
    main()
