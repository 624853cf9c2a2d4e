"""Labelling files with a model: window probabilities -> one row per file, segments, a small API.

How a file is labelled
----------------------
1. The file is cut into windows under a :class:`~msc_core.config.WindowPolicy`
   (``window="all"``: every ``hop_s`` seconds, by default 0.9985 s, so that
   windows overlap; ``window="first"``: the paper's rule, the first 5 s only)
   and each window is featurized into compact codes (:func:`featurize_file`).
   With overlapping windows the model first runs on every fifth window
   (``coarse_s``, 4.99 s) and then on the windows in between only where two
   neighbours of that pass disagree (:func:`coarse_to_fine`): the boundaries
   of a 1-s hop for about half its model time or less (:func:`labelling_windows`).
2. The model gives each window a probability per class it knows, spread over
   the content classes :data:`~msc_core.config.CLASSES` (speech, music,
   speech_over_music, noise) by :func:`class_probs`: a class the model does not
   know (the paper's binary models know speech and music only) gets 0. With
   ``view="binary"`` the paper's two-class view is given instead: speech over
   music counts as speech, noise is left out and speech and music are scaled to sum to 1.
3. **Aggregation** (:func:`aggregate`): ``p_<class>`` is the *mean* of the
   windows' probabilities of that class; ``<class>_fraction`` is the share of
   windows whose own argmax is that class; each window weighs the stretch it
   stands for (:func:`window_weights`: all the same on a regular grid).
   The file's ``label`` is its dominant content class, the one with the most
   seconds in its segments (step 4), or ``silence`` for a file with no
   content; ``confidence`` is that label's segments' confidence weighted by
   their seconds (:func:`dominant_label`). A silent stretch therefore never
   lends its window's model output to the file's label.
4. **Segments** (:func:`segments_of`, :mod:`msc_core.segmentation`): each
   window stands for the centre of its audio; the class probabilities are
   interpolated between centres on a 10-ms grid, ``silence`` is found by
   energy (no model), a Viterbi pass with minimum durations smooths the
   labels, and boundaries between content classes move to the strongest spectral
   change near them. Segments (a content class or ``silence``) tile the file from
   0 to ``duration_s`` with boundaries on the 10-ms grid; a segment's
   ``confidence`` is the mean probability of its label over its frames.
   Silence and refinement need the file's frame cues, which
   :func:`featurize_file` computes as it reads the audio (``FileFeatures.cues``);
   windows read back without them give content segments only.

Windows that overlap and start on the STFT frame grid (a hop that is a
multiple of 512 samples at 22,050 Hz; :func:`window_config` rounds overlapping
hops to it) share one STFT per batch (:func:`msc_core.depth.featurize_hopped`),
with codes bit-equal to featurizing each window alone.

A file that cannot be decoded gives a :class:`FileLabel` with
``status="error"`` and the decoder's reason in ``error`` (no exception).

A file with more windows than ``DecodeLimits.max_windows`` is labelled from its
first ``max_windows`` windows only: its row says ``truncated=True`` and
``truncated_at_s``, the end of the last window taken, and its segments stop there.

With ``child=`` (a :class:`~msc_core.isolation.ChildProcess`), decoding and
featurizing run in that supervised process, which is killed when a file takes
longer than ``DecodeLimits.max_decode_s``: the file gets the error
``decoding took longer than N s; killed``, even when the decoder hung inside one call.

Example
-------
>>> from msc_core.labelling import load_model, label_file
>>> model = load_model("models/msc-v1")          # or load_model() for the bundled default
>>> result = label_file("talk.mp3", model)       # 5-s windows every second, the model where content changes
>>> result.label, round(result.confidence, 2)
('speech', 0.93)
>>> for segment in result.segments:
...     print(f"{segment.start_s:7.1f} {segment.end_s:7.1f} {segment.label}")
>>> result.row()                                 # the fields of a predictions.csv row

``label_array(samples, sample_rate, model)`` labels audio already in memory;
``featurize_file(path, config)`` gives the windows' start times and codes.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import pyarrow as pa

from .audio import AudioStream, DecodeLimits
from .config import CLASSES, PAPER, FeatureConfig
from .depth import featurize, featurize_at, featurize_hopped
from .errors import AudioDecodeError, ChildProcessFailed, ModelLoadError
from .segmentation import SEGMENT_LABELS, CueTracker, FrameCues, segment_timeline

if TYPE_CHECKING:
    from .isolation import ChildProcess
    from .model import MscModel

SPEECH, MUSIC, SPEECH_OVER_MUSIC = CLASSES.index("speech"), CLASSES.index("music"), CLASSES.index("speech_over_music")
LABEL_HOP_S = 1.0
"""Labelling's default hop (s): overlapping windows, one every 0.9985 s (:func:`labelling_windows`)."""
LABEL_COARSE_S = 5.0
"""Labelling's default first pass (s): every fifth window, the rest only where the content changes."""
REFINE_CHANGE = 0.25
"""A coarse pass (:func:`coarse_to_fine`) refines between two neighbouring windows whose most probable
classes differ or whose probability of some class differs by more than this."""
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
"""Where the package's bundled model lives once it ships (see :func:`load_model`)."""

PREDICTIONS_SCHEMA = pa.schema([
    ("path", pa.string()), ("label", pa.string()), ("confidence", pa.float64()), ("p_music", pa.float64()),
    ("p_speech", pa.float64()), ("duration_s", pa.float64()), ("windows", pa.int32()),
    ("music_fraction", pa.float64()), ("speech_fraction", pa.float64()), ("model_id", pa.string()),
    ("feature_hash", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("truncated", pa.bool_()), ("truncated_at_s", pa.float64()),
    ("speech_s", pa.float64()), ("music_s", pa.float64()), ("silence_s", pa.float64()),
    ("p_speech_over_music", pa.float64()), ("p_noise", pa.float64()), ("speech_over_music_fraction", pa.float64()),
    ("noise_fraction", pa.float64()), ("speech_over_music_s", pa.float64()), ("noise_s", pa.float64()),
])
"""``predictions.parquet``: one row per input file (label and numbers null when ``status="error"``).

``truncated`` is True when ``DecodeLimits.max_windows`` cut the file: only its
first ``windows`` windows, up to ``truncated_at_s`` seconds, were labelled
(``truncated_at_s`` is null otherwise). For each content class (speech, music,
speech_over_music, noise), ``p_<class>`` is its mean window probability and
``<class>_fraction`` the share of windows it wins; ``<label>_s`` are the
seconds of the file's segments with each label, silence included. Columns are
only ever added at the end, so rows written before them read back with nulls there.
"""

WINDOWS_SCHEMA = pa.schema([
    ("path", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()), ("p_music", pa.float64()),
    ("p_speech", pa.float64()), ("p_speech_over_music", pa.float64()), ("p_noise", pa.float64()),
])
"""``windows.parquet``: one row per window, its probability of each content class; ``end_s`` is where
the window's real audio ends."""

SEGMENTS_SCHEMA = pa.schema([
    ("path", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()), ("label", pa.string()),
    ("confidence", pa.float64()),
])
"""``segments.parquet``: runs of one label (a content class or ``silence``), tiling each ok file
from 0 to its duration, boundaries on the 10-ms grid (see the module docstring, step 4)."""


@dataclass(frozen=True)
class Segment:
    """A run of windows with one label.

    Attributes
    ----------
    start_s, end_s : float
        Span in the file (s).
    label : str
        A content class or ``"silence"`` (:data:`~msc_core.segmentation.SEGMENT_LABELS`).
    confidence : float
        Mean over the segment's 10-ms frames of its label's probability.
    """

    start_s: float
    end_s: float
    label: str
    confidence: float


@dataclass(frozen=True)
class FileFeatures:
    """The windows of one file, featurized.

    Attributes
    ----------
    path : str
    start_s : np.ndarray, float64, shape (W,)
        Window starts (s).
    end_s : np.ndarray, float64, shape (W,)
        Where each window's real audio ends (s); the rest of the window is padding.
    codes : np.ndarray, uint8, shape (W, n_mels, frames), or None
        Compact depth-layer codes (:func:`msc_core.depth.featurize`); None when
        featurized lazily (``signal`` holds the audio: :meth:`window_codes`).
    duration_s : float
        Length of the file (s): decoded, or as declared when decoding stopped
        early (``window="first"``, or a file cut by ``max_windows``).
    sample_rate, channels : int
        The file's own rate (Hz) and channel count.
    truncated_at_s : float or None
        When ``DecodeLimits.max_windows`` cut the file: the end of the last
        window taken (s); None otherwise.
    cues : FrameCues or None
        Level and band energies every 10 ms of all the audio read, a tail too
        short for a window included (None for windows read back from a table).
    signal : np.ndarray, float32, shape (N,), or None
        With lazy featurizing, the mono audio at the features' rate from the
        first window's start on (all that was read); None otherwise.
    """

    path: str
    start_s: np.ndarray
    end_s: np.ndarray
    codes: np.ndarray
    duration_s: float
    sample_rate: int
    channels: int
    truncated_at_s: float | None = None
    cues: FrameCues | None = field(default=None, repr=False)
    signal: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def join(cls, parts: Sequence["FileFeatures"]) -> "FileFeatures":
        """One file's features from the parts :func:`iter_features` yields (all but the windows from the last)."""
        lazy = parts[-1].codes is None
        return dataclasses.replace(
            parts[-1], start_s=np.concatenate([part.start_s for part in parts]),
            end_s=np.concatenate([part.end_s for part in parts]),
            codes=None if lazy else np.concatenate([part.codes for part in parts]),
            signal=np.concatenate([part.signal for part in parts]) if lazy else None)

    def window_codes(self, positions: np.ndarray, *, config: FeatureConfig) -> np.ndarray:
        """The codes of the windows at ``positions``, featurized now from ``signal`` when featurized lazily.

        Parameters
        ----------
        positions : np.ndarray, int, shape (K,)
            Indices into the windows, increasing.
        config : FeatureConfig
            The features (:func:`msc_core.depth.featurize_at`; any window policy).

        Returns
        -------
        np.ndarray, uint8, shape (K, n_mels, frames)
            Bit-equal to the codes :func:`featurize_file` computes for every window.
        """
        if self.codes is not None:
            return self.codes[positions]
        origin = self.start_s[0] if len(self.start_s) else 0.0
        offsets = np.rint((self.start_s[positions] - origin) * config.sample_rate).astype(np.int64)
        return featurize_at(self.signal, offsets, config=config)


@dataclass(frozen=True)
class FileLabel:
    """Everything msc says about one file: a ``predictions`` row plus its windows and segments.

    Attributes
    ----------
    path, label, confidence, duration_s, windows, model_id, feature_hash, status, error, truncated, truncated_at_s
        The row's fields (:data:`PREDICTIONS_SCHEMA`); with ``status="error"``
        the numbers and label are None, ``windows`` is 0 and ``error`` says why.
        The row's ``p_<class>``, ``<class>_fraction`` and ``<label>_s`` are
        :meth:`probability`, :meth:`fraction` and :meth:`seconds`.
    window_start_s, window_end_s : np.ndarray, float64, shape (windows,)
        Per-window start and end of real audio (s).
    window_probs : np.ndarray, float64, shape (windows, len(CLASSES))
        Per-window probability of each content class (:func:`class_probs`).
    segments : tuple of Segment
        Tile ``[0, duration_s]`` (empty for an error).
    """

    path: str
    label: str | None
    confidence: float | None
    duration_s: float | None
    windows: int
    model_id: str
    feature_hash: str
    status: Literal["ok", "error"]
    error: str | None
    truncated: bool = False
    truncated_at_s: float | None = None
    window_start_s: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    window_end_s: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    window_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, len(CLASSES))), repr=False)
    segments: tuple[Segment, ...] = ()

    def row(self) -> dict:
        """The ``predictions`` row: a dict keyed by :data:`PREDICTIONS_SCHEMA` names."""
        derived = {**{f"p_{name}": self.probability(name) for name in CLASSES},
                   **{f"{name}_fraction": self.fraction(name) for name in CLASSES},
                   **{f"{label}_s": self.seconds(label) for label in SEGMENT_LABELS}}
        return {name: derived[name] if name in derived else getattr(self, name) for name in PREDICTIONS_SCHEMA.names}

    def probability(self, name: str) -> float | None:
        """Mean window probability of the content class ``name``, each window weighted by the stretch
        it stands for (:func:`window_weights`; None for a file that failed)."""
        if self.status != "ok":
            return None
        return float(np.average(self.window_probs[:, CLASSES.index(name)], weights=self._weights))

    def fraction(self, name: str) -> float | None:
        """Share of windows whose most probable class is ``name``, weighted as in :meth:`probability`
        (None for a file that failed)."""
        if self.status != "ok":
            return None
        wins = np.argmax(self.window_probs, axis=1) == CLASSES.index(name)
        return float(np.average(wins, weights=self._weights))

    @functools.cached_property
    def _weights(self) -> np.ndarray:
        """:func:`window_weights` of the windows, once per file."""
        return window_weights(self.window_start_s)

    def seconds(self, label: str) -> float | None:
        """Seconds of the segments labelled ``label`` (None for a file that failed)."""
        if self.status != "ok":
            return None
        return float(sum(segment.end_s - segment.start_s for segment in self.segments if segment.label == label))

    @classmethod
    def failed(cls, path: str, error: str, *, model_id: str, feature_hash: str) -> "FileLabel":
        """The label of a file that could not be read: ``status="error"`` with the reason.

        A leading ``"<path>: "`` is dropped from ``error``: the row names the path already.
        """
        error = error.removeprefix(f"{path}: ")
        return cls(path=path, label=None, confidence=None, duration_s=None, windows=0, model_id=model_id,
                   feature_hash=feature_hash, status="error", error=error)


# ---------------------------------------------------------------------------------------- pure maths
def segments_of(start_s: np.ndarray, end_s: np.ndarray, probs: np.ndarray, duration_s: float, *,
                cues: FrameCues | None = None) -> tuple[Segment, ...]:
    """A file's segments from its windows (:func:`msc_core.segmentation.segment_timeline`).

    Parameters
    ----------
    start_s, end_s : np.ndarray, float, shape (W,), W >= 1
        Window starts and ends of real audio (s), increasing; a window stands
        for the centre of its real audio.
    probs : np.ndarray, float, shape (W, len(CLASSES))
        Content class probabilities of each window (:func:`class_probs`).
    duration_s : float
        End of the file (s).
    cues : FrameCues or None
        The file's frame cues (silence, boundary refinement); None without them.

    Returns
    -------
    tuple of Segment
        Tiling ``[0, duration_s]``.
    """
    centre_s = (np.asarray(start_s, np.float64) + np.asarray(end_s, np.float64)) / 2
    return tuple(Segment(*segment) for segment in segment_timeline(centre_s, probs, duration_s, cues=cues))


def aggregate(path: str, *, start_s: np.ndarray, end_s: np.ndarray, duration_s: float, probs: np.ndarray,
              model_id: str, feature_hash: str, truncated_at_s: float | None = None,
              cues: FrameCues | None = None) -> FileLabel:
    """One file's label, numbers and segments from its windows' probabilities (see the module docstring, step 3).

    Parameters
    ----------
    path : str
    start_s, end_s : np.ndarray, float, shape (W,), W >= 1
        Window starts and ends of real audio (s).
    duration_s : float
        Length of the file (s).
    probs : np.ndarray, float, shape (W, len(CLASSES))
        Content class probabilities of each window (:func:`class_probs`).
    model_id, feature_hash : str
        Recorded in the row.
    truncated_at_s : float or None
        Where the windows of a file cut by ``max_windows`` end (s); its segments stop there.
    cues : FrameCues or None
        ``FileFeatures.cues``: with them the segments hold silence and refined boundaries.
    """
    probs = np.asarray(probs, np.float64)
    segments = segments_of(start_s, end_s, probs, duration_s if truncated_at_s is None else truncated_at_s, cues=cues)
    label, confidence = dominant_label(segments)
    return FileLabel(
        path=path, label=label, confidence=confidence, duration_s=float(duration_s), windows=len(probs),
        model_id=model_id, feature_hash=feature_hash, status="ok", error=None, truncated=truncated_at_s is not None,
        truncated_at_s=truncated_at_s, window_start_s=np.asarray(start_s, np.float64),
        window_end_s=np.asarray(end_s, np.float64), window_probs=probs, segments=segments)


def window_weights(start_s: np.ndarray) -> np.ndarray:
    """How much of its file each window stands for: half the distance between its neighbours' starts.

    Windows on a regular grid weigh the same; after :func:`coarse_to_fine`, a
    first-pass window stands for the stretch up to its refined neighbours.

    Parameters
    ----------
    start_s : np.ndarray, float, shape (W,), W >= 1
        Window starts (s), increasing.

    Returns
    -------
    np.ndarray, float64, shape (W,)
        Positive weights (s; all 1 for a single window). The ends count their one neighbour's gap twice.
    """
    start_s = np.asarray(start_s, np.float64)
    if len(start_s) < 2:
        return np.ones(len(start_s))
    gaps = np.diff(start_s)
    return np.maximum((np.concatenate([gaps[:1], gaps]) + np.concatenate([gaps, gaps[-1:]])) / 2, 1e-9)


def coarse_to_fine(group: np.ndarray, start_s: np.ndarray, predict: Callable[[np.ndarray], np.ndarray], *,
                   coarse_s: float | None, change: float = REFINE_CHANGE) -> np.ndarray:
    """Run a model on windows ``coarse_s`` apart first, then only on the windows between disagreeing neighbours.

    The first pass takes the windows that start on a multiple of
    ``coarse_s`` and the first and last window of each group (so a file
    split over several batches is covered end to end). Between two
    neighbouring first-pass windows of a group whose most probable classes
    differ, or whose probability of some class differs by more than
    ``change``, the second pass takes every window. Elsewhere the content
    does not change at the first pass's resolution and the windows in
    between are not run.

    Parameters
    ----------
    group : np.ndarray, shape (W,)
        Which file each window belongs to; a file's windows are contiguous.
    start_s : np.ndarray, float, shape (W,)
        Window starts (s), on :data:`PAPER`'s STFT frame grid, increasing within a group.
    predict : callable
        ``predict(positions)`` with ``positions`` int (K,) into the W windows
        returns their class probabilities, float (K, C).
    coarse_s : float or None
        First-pass spacing (:func:`labelling_windows`); None runs every window in one pass.
    change : float
        Probability difference that calls for the second pass.

    Returns
    -------
    np.ndarray, float64, shape (W, C)
        The probabilities of every window run; NaN rows for the windows skipped.
    """
    group = np.asarray(group)
    if coarse_s is None or len(group) < 3:
        return np.asarray(predict(np.arange(len(group))), np.float64)
    frame_s = PAPER.hop_length / PAPER.sample_rate
    on_grid = np.rint(np.asarray(start_s) / frame_s).astype(np.int64) % int(round(coarse_s / frame_s)) == 0
    edge = np.ones(len(group), bool)
    edge[1:-1] = (group[1:-1] != group[:-2]) | (group[1:-1] != group[2:])
    first = np.flatnonzero(edge | on_grid)
    coarse = np.asarray(predict(first), np.float64)
    probs = np.full((len(group), coarse.shape[1]), np.nan)
    probs[first] = coarse
    left, right = first[:-1], first[1:]
    differ = ((np.argmax(coarse[:-1], axis=1) != np.argmax(coarse[1:], axis=1))
              | (np.abs(coarse[:-1] - coarse[1:]).max(axis=1) > change)) & (group[left] == group[right])
    between = [np.arange(a + 1, b) for a, b in zip(left[differ], right[differ]) if b > a + 1]
    if between:
        second = np.concatenate(between)
        probs[second] = predict(second)
    return probs


def class_probs(probs: np.ndarray, labels: Sequence[str], *, view: Literal["all", "binary"] = "all") -> np.ndarray:
    """A model's window probabilities spread over the content classes (see the module docstring, step 2).

    Parameters
    ----------
    probs : np.ndarray, float, shape (W, len(labels))
        The model's outputs.
    labels : sequence of str
        The model's classes (``MscModel.labels``), a subset of :data:`~msc_core.config.CLASSES`.
    view : {"all", "binary"}
        ``"all"``: every class as the model gives it, 0 for those it does not
        know. ``"binary"``: speech (speech over music included) and music only,
        scaled to sum to 1 (0.5 each when the model gives neither).

    Returns
    -------
    np.ndarray, float64, shape (W, len(CLASSES))
    """
    probs = np.asarray(probs, np.float64)
    spread = np.zeros((len(probs), len(CLASSES)))
    spread[:, [CLASSES.index(label) for label in labels]] = probs
    if view == "binary":
        speech, music = spread[:, SPEECH] + spread[:, SPEECH_OVER_MUSIC], spread[:, MUSIC]
        total = speech + music
        spread = np.zeros_like(spread)
        spread[:, SPEECH] = np.where(total > 1e-9, speech / np.maximum(total, 1e-9), 0.5)
        spread[:, MUSIC] = 1 - spread[:, SPEECH]
    elif view != "all":
        raise ValueError(f"view must be 'all' or 'binary', not {view!r}")
    return spread


def dominant_label(segments: Sequence[Segment]) -> tuple[str, float]:
    """A file's label and confidence from its segments: the content class with the most seconds.

    Content classes are every label but ``silence``, ties going to the first in
    :data:`~msc_core.segmentation.SEGMENT_LABELS` (speech); a file with no
    content segment is ``silence``. The confidence is the label's segments'
    confidence weighted by their seconds.

    Parameters
    ----------
    segments : sequence of Segment
        A file's segments (at least one).

    Returns
    -------
    label : str
    confidence : float
    """
    seconds = dict.fromkeys(SEGMENT_LABELS, 0.0)
    weighted = dict.fromkeys(SEGMENT_LABELS, 0.0)
    for segment in segments:
        length = segment.end_s - segment.start_s
        seconds[segment.label] += length
        weighted[segment.label] += length * segment.confidence
    content = [label for label in SEGMENT_LABELS if label != "silence" and seconds[label] > 0]
    label = max(content, key=lambda name: seconds[name], default="silence")  # max keeps the first of equals
    return label, weighted[label] / seconds[label] if seconds[label] > 0 else 1.0


def label_tables(labels: Iterable[FileLabel]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The ``predictions``, ``windows`` and ``segments`` tables of some files, in their order."""
    labels = list(labels)
    predictions = pa.Table.from_pylist([label.row() for label in labels], schema=PREDICTIONS_SCHEMA)
    windows = pa.table({
        "path": [label.path for label in labels for _ in range(label.windows)],
        "start_s": np.concatenate([label.window_start_s for label in labels] or [np.zeros(0)]),
        "end_s": np.concatenate([label.window_end_s for label in labels] or [np.zeros(0)]),
        **{f"p_{name}": np.concatenate([label.window_probs[:, CLASSES.index(name)] for label in labels]
                                       or [np.zeros(0)]) for name in CLASSES},
    }, schema=WINDOWS_SCHEMA)
    segments = pa.Table.from_pylist([{"path": label.path, **vars(segment)} for label in labels
                                     for segment in label.segments], schema=SEGMENTS_SCHEMA)
    return predictions, windows, segments


# ---------------------------------------------------------------------------------------- features
def window_config(window: Literal["first", "all"] = "all", hop_s: float | None = None) -> FeatureConfig:
    """The paper's features with a window policy: ``"first"`` 5 s, or ``"all"`` every ``hop_s`` s (default 5).

    A hop shorter than the window is rounded to the nearest whole number of
    STFT frames (512 samples, 23.2 ms; at least one), so that the windows share
    one STFT: ``hop_s=1`` gives 43 frames, 0.9985 s.
    """
    if hop_s is not None and 0 < hop_s < PAPER.window_seconds:
        frame_s = PAPER.hop_length / PAPER.sample_rate
        hop_s = max(1, round(hop_s / frame_s)) * frame_s
    return PAPER.with_window(mode=window, hop_seconds=hop_s)


def labelling_windows(window: Literal["first", "all"] = "all", hop_s: float | None = None,
                      coarse_s: float | None = None) -> tuple[FeatureConfig, float | None]:
    """The windows a file is labelled from, with labelling's defaults (:func:`label_file`, ``msc infer``).

    Parameters
    ----------
    window : {"all", "first"}
        Every window, or the paper's first 5 s only.
    hop_s : float or None
        Seconds between window starts with ``window="all"``; None:
        :data:`LABEL_HOP_S`. Rounded as in :func:`window_config`.
    coarse_s : float or None
        Seconds between the windows of a first pass (:func:`coarse_to_fine`),
        rounded to whole hops; 0: no first pass, every window is run; None:
        :data:`LABEL_COARSE_S` where the windows overlap and it spans at least two hops.

    Returns
    -------
    config : FeatureConfig
    coarse_s : float or None
        The first pass's spacing (s), a whole number of hops; None: every window is run.

    Raises
    ------
    ValueError
        A hop with ``window="first"``; a first pass asked for over windows that do not overlap, or
        closer than two hops.
    """
    if window == "first" and hop_s is not None:
        raise ValueError("a hop applies to window 'all' only")
    config = window_config(window, LABEL_HOP_S if hop_s is None and window == "all" else hop_s)
    hop = config.hop_samples / config.sample_rate
    overlapping = config.window.mode == "all" and config.hop_samples < config.window_samples
    if coarse_s == 0 or (coarse_s is None and not (overlapping and LABEL_COARSE_S >= 2 * hop)):
        return config, None
    coarse_s = LABEL_COARSE_S if coarse_s is None else coarse_s
    if not overlapping:
        raise ValueError("a coarse pass needs overlapping windows (window 'all' with a hop under 5 s)")
    hops = int(round(coarse_s / hop))
    if hops < 2:
        raise ValueError(f"the coarse pass's spacing must be at least two hops ({2 * hop:.4g} s), not {coarse_s:g}")
    return config, hops * hop


def iter_features(source: str | os.PathLike | io.BufferedIOBase, config: FeatureConfig = PAPER, *,
                  name: str | None = None, batch_windows: int = 16, limits: DecodeLimits = DecodeLimits(),
                  lazy: bool = False) -> Iterator[FileFeatures]:
    """One file's features in parts: one per batch of windows, then one with no windows and the final fields.

    :meth:`FileFeatures.join` of the parts is :func:`featurize_file`'s result;
    the parts let a child process stream a file's codes (or audio) back batch by batch.
    Parameters as in :func:`featurize_file`.
    """
    hop = config.hop_samples if config.window.mode == "all" else config.window_samples
    tracker = CueTracker(sample_rate=config.sample_rate)
    blocks: list[np.ndarray] = []  # the audio read since the last part, when lazy

    def on_audio(block: np.ndarray) -> None:
        tracker.push(block)
        if lazy:
            blocks.append(block)

    def audio() -> np.ndarray | None:
        if not lazy:
            return None
        signal = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        blocks.clear()
        return signal

    with AudioStream.open(source, name=name, limits=limits) as stream:
        rate, channels, last_end = stream.info.sample_rate, stream.info.channels, 0.0
        for batch in stream.windows(config, batch_windows=batch_windows, on_audio=on_audio):
            end_s = batch.start_s + batch.audio_s
            last_end = float(end_s[-1])
            codes = None if lazy else featurize_hopped(batch.samples, hop_samples=hop, config=config)
            yield FileFeatures(stream.path, batch.start_s, end_s, codes, stream.decoded_s, rate, channels,
                               signal=audio())
        duration = stream.decoded_s
        if (config.window.mode == "first" or stream.truncated) and stream.info.duration_s:
            duration = max(duration, stream.info.duration_s)
        yield FileFeatures(stream.path, np.zeros(0), np.zeros(0),
                           None if lazy else np.zeros((0, *config.encoded_shape), np.uint8),
                           duration, rate, channels, truncated_at_s=last_end if stream.truncated else None,
                           cues=tracker.finish(), signal=audio())


def warm_up() -> None:
    """Import and cache what featurizing needs (decoders, librosa's lazy modules, the mel basis).

    A :class:`~msc_core.isolation.ChildProcess` runs it on start
    (``ChildProcess(warm_up=warm_up)``), so that its first file is as fast as the next.
    """
    import av  # noqa: F401 (imported on first use otherwise)
    import soundfile  # noqa: F401

    featurize(np.zeros((1, PAPER.window_samples), np.float32), PAPER)


def featurize_file(source: str | os.PathLike | io.BufferedIOBase, config: FeatureConfig = PAPER, *,
                   name: str | None = None, batch_windows: int = 16, limits: DecodeLimits = DecodeLimits(),
                   child: "ChildProcess | None" = None, lazy: bool = False) -> FileFeatures:
    """Decode one file, cut it into windows under ``config.window`` and featurize them (or keep its audio).

    Memory holds the file's codes (27,520 bytes per window), or with ``lazy``
    its audio (88,200 bytes per second), plus one decode block; with ``child``,
    the child holds the block and one batch of codes.

    Parameters
    ----------
    source : str, PathLike or binary file object
        Path, fsspec URI or open file.
    config : FeatureConfig
        Features and window policy (:func:`window_config`).
    name : str or None
        Name used in errors and ``FileFeatures.path`` (default: the source's).
    batch_windows : int
        Windows featurized together.
    limits : DecodeLimits
        Bounds on the file; ``max_decode_s`` is the hard bound with ``child``.
    child : ChildProcess or None
        Run the work in this supervised child (``source`` must then pickle:
        a path or URI), killed when the file overruns ``limits.max_decode_s``.
    lazy : bool
        Keep the audio (``FileFeatures.signal``) instead of featurizing every window: the
        windows a model reads are featurized when read (:meth:`FileFeatures.window_codes`).

    Raises
    ------
    AudioDecodeError
        The file cannot be decoded, or with ``child``: it overran (``decoding
        took longer than N s; killed``) or the child died.
    """
    return FileFeatures.join(list(_parts(source, config, name=name, batch_windows=batch_windows, limits=limits,
                                         child=child, lazy=lazy)))


def iter_pieces(source: str | os.PathLike, config: FeatureConfig = PAPER, *, windows: int,
                limits: DecodeLimits = DecodeLimits(), child: "ChildProcess | None" = None) -> Iterator[FileFeatures]:
    """One file's windows and audio in pieces of ``windows`` windows, as it is decoded (lazy features).

    Memory holds one piece's audio (88,200 bytes per second) and one decode
    block, whatever the file's length. Each piece also holds the next
    piece's first window, so that a coarse pass over a piece
    (:func:`coarse_to_fine`) decides as it does over the whole file when
    ``windows`` is a whole number of its spacing.

    Parameters
    ----------
    source : str or PathLike
        Path or fsspec URI.
    config : FeatureConfig
    windows : int
        Windows of each piece but the last (which has 1 to ``windows``), not counting the next piece's first.
    limits, child
        As in :func:`featurize_file`.

    Yields
    ------
    FileFeatures
        Lazy (``signal`` from the piece's first window to the end of its last); the
        last piece has the file's ``duration_s``, ``truncated_at_s`` and ``cues``, the
        others NaN and None.

    Raises
    ------
    AudioDecodeError
        As :func:`featurize_file`, possibly after some pieces were yielded.
    """
    held: list[FileFeatures] = []  # the parts not yet in a piece; the first's signal starts at its first window
    for part in _parts(source, config, limits=limits, child=child, lazy=True):
        held.append(part)
        while sum(len(piece.start_s) for piece in held) > windows:  # a piece and the next one's first window
            joined = FileFeatures.join(held)
            after = int(round((joined.start_s[windows] - joined.start_s[0]) * config.sample_rate))
            yield dataclasses.replace(joined, start_s=joined.start_s[:windows + 1], end_s=joined.end_s[:windows + 1],
                                      duration_s=np.nan, signal=joined.signal[:after + config.window_samples])
            held = [dataclasses.replace(joined, start_s=joined.start_s[windows:], end_s=joined.end_s[windows:],
                                        signal=joined.signal[after:])]
    yield FileFeatures.join(held)  # the last part's final fields


def _parts(source, config: FeatureConfig, *, limits: DecodeLimits, child: "ChildProcess | None", lazy: bool,
           name: str | None = None, batch_windows: int = 16) -> Iterator[FileFeatures]:
    """:func:`iter_features`'s parts, in this process or streamed from ``child`` (see :func:`featurize_file`)."""
    options = {"name": name, "batch_windows": batch_windows, "limits": limits, "lazy": lazy}
    if child is None:
        yield from iter_features(source, config, **options)
        return
    try:
        yield from child.stream(iter_features, source, config, timeout_s=limits.max_decode_s, **options)
    except ChildProcessFailed as error:
        raise AudioDecodeError(name or str(source), f"decoding {error}") from error


# ---------------------------------------------------------------------------------------- API
def model_location(path: str | os.PathLike | None = None) -> str | os.PathLike:
    """The model directory ``path`` names, or for None the model bundled with msc.

    Raises
    ------
    ModelLoadError
        ``path`` is None and this msc has no bundled model.
    """
    if path is not None:
        return path
    if not DEFAULT_MODEL_DIR.is_dir():
        raise ModelLoadError("no model given and this msc has no bundled default model; "
                             "pass a model directory (--model DIR)")
    return DEFAULT_MODEL_DIR


def check_model(path: str | os.PathLike | None = None) -> dict:
    """Check a model directory as :func:`load_model` does, from its files alone (no Keras, no TensorFlow).

    Returns
    -------
    dict
        The model's ``model.json`` (``model_id``, ``labels``, ...).

    Raises
    ------
    ModelLoadError, FeatureConfigMismatchError
        As :func:`load_model`, but for an archive that Keras itself refuses.
    """
    from .model import check_model_dir

    return check_model_dir(model_location(path), expected_config=PAPER)[0]


def load_model(path: str | os.PathLike | None = None, *, threads: int | None = None,
               precision: Literal["auto", "fp32", "bf16"] = "fp32") -> "MscModel":
    """Load an msc model directory, checked to read the features msc computes (:data:`PAPER`).

    Parameters
    ----------
    path : str, PathLike or None
        Model directory (``msc train`` output, ``msc models import-paper``
        output, ...); None takes the model bundled with the package.
    threads : int or None
        Threads TensorFlow may use for this process's model (intra- and
        inter-op); None leaves TensorFlow's default, every core it finds. Only
        a process whose TensorFlow has run nothing yet can set it (a Ray actor
        does so for the CPUs it reserves).
    precision : {"auto", "fp32", "bf16"}
        Arithmetic of the convolutions (:meth:`MscModel.with_precision`); ``"auto"`` is
        ``"bf16"`` where the CPU computes bfloat16 natively (:func:`msc_core.model.cpu_has_bf16`).

    Raises
    ------
    ModelLoadError
        No such model, or no bundled model when ``path`` is None.
    FeatureConfigMismatchError
        The model reads other features than msc computes.
    ParameterError
        An unknown ``precision``.
    """
    from .model import load_model_dir

    if threads is not None:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return load_model_dir(model_location(path), expected_config=PAPER).with_precision(precision)


def label_features(features: FileFeatures, model: "MscModel", *, batch_size: int = 32,
                   view: Literal["all", "binary"] = "all", coarse_s: float | None = None) -> FileLabel:
    """Run ``model`` on a file's featurized windows and :func:`aggregate` them.

    ``view`` as in :func:`class_probs`. With ``coarse_s`` (:func:`labelling_windows`)
    the model runs on the windows :func:`coarse_to_fine` picks, and only those are reported
    (and, for ``features`` featurized lazily, featurized).
    """
    def predict(positions: np.ndarray) -> np.ndarray:
        codes = features.window_codes(positions, config=model.config)
        return class_probs(model.predict_codes(codes, batch_size=batch_size), model.labels, view=view)

    probs = coarse_to_fine(np.zeros(len(features.start_s)), features.start_s, predict, coarse_s=coarse_s)
    run = ~np.isnan(probs[:, 0])
    return aggregate(features.path, start_s=features.start_s[run], end_s=features.end_s[run],
                     duration_s=features.duration_s, probs=probs[run], model_id=model.model_id,
                     feature_hash=model.config.hash, truncated_at_s=features.truncated_at_s, cues=features.cues)


def label_file(source: str | os.PathLike, model: "MscModel", *, window: Literal["first", "all"] = "all",
               hop_s: float | None = None, coarse_s: float | None = None, batch_size: int = 32,
               view: Literal["all", "binary"] = "all", limits: DecodeLimits = DecodeLimits(),
               child: "ChildProcess | None" = None) -> FileLabel:
    """Label one audio file (what ``msc predict`` prints and ``msc infer`` writes for it).

    Parameters
    ----------
    source : str or PathLike
        Path or fsspec URI.
    model : MscModel
        From :func:`load_model`.
    window : {"all", "first"}
        Every window (default), or the paper's first 5 s only.
    hop_s, coarse_s : float or None
        Seconds between window starts with ``window="all"``, and between the
        windows of a first pass run before the rest only where the content
        changes (:func:`labelling_windows`; default 0.9985 and 4.99 s; ``hop_s=5``: back
        to back, ``coarse_s=0``: every window).
    batch_size : int
        Windows per forward pass.
    view : {"all", "binary"}
        Every content class, or the paper's speech/music view (:func:`class_probs`).
    limits, child
        As in :func:`featurize_file`.

    Returns
    -------
    FileLabel
        ``status="error"`` with the reason when the file cannot be decoded.
    """
    config, coarse_s = labelling_windows(window, hop_s, coarse_s)
    try:
        features = featurize_file(source, config, limits=limits, child=child, lazy=True)
    except AudioDecodeError as error:
        return FileLabel.failed(str(source), str(error), model_id=model.model_id, feature_hash=model.config.hash)
    return label_features(features, model, batch_size=batch_size, view=view, coarse_s=coarse_s)


def label_array(samples: np.ndarray, sample_rate: int, model: "MscModel", *,
                window: Literal["first", "all"] = "all", hop_s: float | None = None, coarse_s: float | None = None,
                batch_size: int = 32, view: Literal["all", "binary"] = "all", name: str = "<array>") -> FileLabel:
    """Label audio already in memory, exactly as :func:`label_file` labels the same samples in a WAV file.

    Parameters
    ----------
    samples : np.ndarray, float, shape (n,) or (n, channels)
        Audio in [-1, 1] at ``sample_rate``; channels are averaged.
    sample_rate : int
        Hz.
    model, window, hop_s, coarse_s, batch_size, view
        As in :func:`label_file`.
    name : str
        ``path`` of the result.
    """
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.asarray(samples, np.float32), int(sample_rate), format="WAV", subtype="FLOAT")
    buffer.seek(0)
    config, coarse_s = labelling_windows(window, hop_s, coarse_s)
    try:
        features = featurize_file(buffer, config, name=name, lazy=True)
    except AudioDecodeError as error:
        return FileLabel.failed(name, str(error), model_id=model.model_id, feature_hash=model.config.hash)
    return label_features(features, model, batch_size=batch_size, view=view, coarse_s=coarse_s)


def format_label(label: FileLabel, *, segments: bool = True) -> str:
    """Human-readable lines for one file: the label and confidence, then its segments."""
    if label.status != "ok":
        return f"{label.path}: error: {label.error}"
    lines = [f"{label.path}: {label.label} (confidence {label.confidence:.2f}, {label.windows} windows, "
             f"{label.duration_s:.1f} s)"]
    if label.truncated:
        lines.append(f"  truncated: only the first {label.windows} windows, up to {label.truncated_at_s:.1f} s, "
                     "were labelled")
    if segments:
        lines += [f"  {s.start_s:9.2f} - {s.end_s:9.2f} s  {s.label:<17} {s.confidence:.2f}" for s in label.segments]
    return "\n".join(lines)


def label_dict(label: FileLabel) -> dict:
    """A JSON-ready dict: the row's fields plus ``segments`` (list of dicts)."""
    return {**label.row(), "segments": [vars(segment) for segment in label.segments]}
