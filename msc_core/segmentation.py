"""From window probabilities and frame-level cues to a timeline of segments at 10 ms.

How a file's segments are made (:func:`segment_timeline`)
---------------------------------------------------------
1. **Windows stand for their centres.** Each window's content class
   probabilities (speech, music, speech over music, noise) are placed at the
   centre of its real audio, and every 10-ms frame's are interpolated linearly
   between the centres (held flat before the first and after the last).
2. **Silence by energy, no model** (:func:`silence_mask`): a frame is silent
   when its level is below ``absolute_db`` (dB re full scale, mean square) or
   more than ``relative_db`` below the file's loud level (its 90th
   percentile); silent runs shorter than ``min_silence_s`` are not silence.
3. **Smoothing**: a Viterbi pass (``librosa.sequence.viterbi``) over the
   states (the content classes and silence), with self-loops that make a change
   cost about ``expected_s`` seconds of evidence. The content classes'
   frame probabilities are interpolated from windows, so 100 frames a second
   carry about one observation every ``evidence_s``: each frame's content
   evidence counts ``FRAME_S / evidence_s`` (its probabilities raised to that
   power), or a single flickering window would outweigh any transition cost.
   Silence, measured on every frame, counts in full. Then a minimum-duration
   pass: the shortest run under its minimum (``min_content_s`` for content
   classes, ``min_silence_s`` for silence) joins its longer neighbour, until none is left.
4. **Boundary refinement** from frame cues: each boundary between content classes moves to
   the frame, within the windows' spacing around it, where the mean log band
   spectrum of the ``novelty_s`` before and after differs most (a hard cut or
   the middle of a crossfade). Silence edges are already frame-exact.
5. Segments tile ``[0, duration_s]`` with boundaries on the 10-ms grid.

The frame cues (:class:`FrameCues`) come from the decoded samples: a
:class:`CueTracker` is fed the decoded samples as they are read, and keeps,
per 10-ms frame, its level and a few log band energies. Without cues (for
example windows read back from a table), steps 2 and 4 are skipped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import librosa
import numpy as np

from .config import CLASSES

FRAME_S = 0.01
"""Frame step of cues and segments (s)."""

SEGMENT_LABELS = (*CLASSES, "silence")
"""Labels a segment may carry: the content classes, then ``"silence"`` (by energy)."""

_SILENCE = SEGMENT_LABELS.index("silence")
_BAND_FFT = 256
_BANDS = 8


@dataclass(frozen=True)
class FrameCues:
    """Frame-level cues of one file's audio, every :data:`FRAME_S` seconds from 0.

    Attributes
    ----------
    level_db : np.ndarray, float32, shape (F,)
        Mean square of each frame's samples in dB re full scale (a full-scale
        sine is -3 dB; digital silence -120 dB).
    bands : np.ndarray, float32, shape (F, 8)
        Log (dB) energies of each frame in 8 log-spaced bands from 50 Hz to the Nyquist rate.
    """

    level_db: np.ndarray
    bands: np.ndarray

    @property
    def frames(self) -> int:
        """F, the number of frames."""
        return len(self.level_db)

    def to_bytes(self) -> bytes:
        """The cues as bytes (float32 (F, 9): level, then the bands), for a table or a pipeline column."""
        return np.concatenate([self.level_db[:, None], self.bands], axis=1).astype(np.float32).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "FrameCues":
        """Inverse of :meth:`to_bytes`."""
        table = np.frombuffer(data, np.float32).reshape(-1, 1 + _BANDS)
        return cls(table[:, 0].copy(), table[:, 1:].copy())


@dataclass(frozen=True)
class SegmentParams:
    """Settings of :func:`segment_timeline`.

    The defaults were chosen on programmes of the validation split
    (``scripts/tune_segmentation.py``): among the best there, the setting that
    still keeps a 5-s segment the model is sure of (stronger smoothing scored a
    little higher on those programmes, whose segments all last 5 s or more, but
    drops such short segments: jingles, stings, a word between two pieces).

    Attributes
    ----------
    absolute_db : float
        Frames below this level (dB re full scale) are silent.
    relative_db : float
        Frames more than this many dB below the file's 90th-percentile level are silent.
    min_silence_s : float
        Shortest silence (s); shorter quiet runs (pauses in speech) stay content.
    min_content_s : float
        Shortest speech or music segment (s).
    expected_s : float
        Mean segment length the Viterbi transitions assume (s).
    evidence_s : float
        Seconds of audio per independent observation of the content classes (module docstring, step 3).
    novelty_s : float
        Context on each side of a candidate boundary when refining it (s).
    """

    absolute_db: float = -60.0
    relative_db: float = 45.0
    min_silence_s: float = 1.0
    min_content_s: float = 2.0
    expected_s: float = 10.0
    evidence_s: float = 0.5
    novelty_s: float = 1.0


@dataclass(frozen=True)
class Run:
    """One segment of the timeline, in frames.

    Attributes
    ----------
    start, stop : int
        Frames ``[start, stop)``.
    state : int
        Index into :data:`SEGMENT_LABELS`.
    confidence : float
        Mean over the run's frames of that state's probability.
    """

    start: int
    stop: int
    state: int
    confidence: float


class CueTracker:
    """Builds a file's :class:`FrameCues` from its decoded samples as they are read.

    Feed the file's mono samples in order, in blocks of any size
    (:meth:`push`; ``AudioStream.windows(on_audio=tracker.push)`` does it),
    then call :meth:`finish`. The cues cover all the audio pushed, including
    a tail too short to make a window.

    Parameters
    ----------
    sample_rate : int
        Rate of the samples (Hz).
    """

    def __init__(self, *, sample_rate: int):
        self.sample_rate = sample_rate
        self._buffer = np.zeros(0, np.float32)
        self._consumed = 0           # samples before _buffer[0]
        self._frames = 0             # frames done
        self._levels: list[np.ndarray] = []
        self._bands: list[np.ndarray] = []

    def push(self, samples: np.ndarray) -> None:
        """Take the next block of the file's samples (np.ndarray, float32, shape (N,))."""
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, np.float32)])
        self._emit(final=False)

    def finish(self) -> FrameCues:
        """The cues of everything pushed (a partial last frame included)."""
        self._emit(final=True)
        return FrameCues(np.concatenate(self._levels or [np.zeros(0, np.float32)]),
                         np.concatenate(self._bands or [np.zeros((0, _BANDS), np.float32)]))

    def _emit(self, *, final: bool) -> None:
        """Turn the complete frames in the buffer (and with ``final`` a partial last one) into cues."""
        have = self._consumed + len(self._buffer)
        edges = _frame_edges(self._frames, have, self.sample_rate)
        if final and edges[-1] < have:
            edges = np.append(edges, have)
        if len(edges) < 2:
            return
        local = edges - self._consumed
        self._levels.append(_levels_db(self._buffer, local))
        self._bands.append(_band_db(self._buffer, local[:-1], self.sample_rate))
        self._frames += len(edges) - 1
        self._buffer = self._buffer[local[-1]:]
        self._consumed = int(edges[-1])


def _frame_edges(first: int, available: int, sample_rate: int) -> np.ndarray:
    """Sample edges ``floor(k * rate * FRAME_S)`` of frames ``first, first + 1, ...`` complete within ``available``."""
    per = sample_rate * FRAME_S
    last = int(np.floor(available / per + 1e-9))
    if last < first:
        return np.zeros(0, np.int64)
    return np.floor(np.arange(first, last + 1) * per + 1e-9).astype(np.int64)


def _levels_db(buffer: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean square (dB) of ``buffer[edges[k]:edges[k + 1]]`` for each k."""
    squares = np.add.reduceat(buffer[:edges[-1]].astype(np.float64) ** 2, edges[:-1])
    return (10 * np.log10(squares / np.diff(edges) + 1e-12)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _band_matrix(sample_rate: int) -> np.ndarray:
    """(bins, 8) sums of FFT power bins into log-spaced bands from 50 Hz to the Nyquist rate."""
    freqs = np.fft.rfftfreq(_BAND_FFT, 1 / sample_rate)
    edges = np.geomspace(50.0, sample_rate / 2, _BANDS + 1)
    index = np.clip(np.searchsorted(edges, freqs, side="right") - 1, 0, _BANDS - 1)
    return (index[:, None] == np.arange(_BANDS)).astype(np.float32)


def _band_db(buffer: np.ndarray, starts: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log band energies (F, 8) of the frames starting at ``starts`` (their first 220 samples, Hann-windowed)."""
    length = min(int(sample_rate * FRAME_S), _BAND_FFT)
    padded = np.concatenate([buffer, np.zeros(length, np.float32)])
    frames = padded[starts[:, None] + np.arange(length)] * np.hanning(length).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, n=_BAND_FFT, axis=1)) ** 2
    return (10 * np.log10(power @ _band_matrix(sample_rate) + 1e-10)).astype(np.float32)


# ---------------------------------------------------------------------------------------- the timeline
def silence_mask(level_db: np.ndarray, params: SegmentParams = SegmentParams()) -> np.ndarray:
    """Silent frames by energy (absolute and relative thresholds), runs under ``min_silence_s`` dropped.

    Parameters
    ----------
    level_db : np.ndarray, float, shape (F,)
        :attr:`FrameCues.level_db`.
    params : SegmentParams

    Returns
    -------
    np.ndarray, bool, shape (F,)
    """
    level_db = np.asarray(level_db, np.float64)
    if not len(level_db):
        return np.zeros(0, bool)
    loud = np.percentile(level_db, 90)
    quiet = (level_db < params.absolute_db) | (level_db < loud - params.relative_db)
    shortest = int(round(params.min_silence_s / FRAME_S))
    for start, stop, value in _runs(quiet):
        if value and stop - start < shortest:
            quiet[start:stop] = False
    return quiet


def frame_probabilities(centre_s: np.ndarray, probs: np.ndarray, frames: int,
                        silent: np.ndarray | None = None) -> np.ndarray:
    """Per-frame probabilities of each label of :data:`SEGMENT_LABELS`.

    Parameters
    ----------
    centre_s : np.ndarray, float, shape (W,)
        Centre of each window's real audio (s), increasing.
    probs : np.ndarray, float, shape (W, len(CLASSES))
        Content class probabilities of each window.
    frames : int
        Frames of :data:`FRAME_S` in the timeline.
    silent : np.ndarray of bool, shape (<= frames,) or None
        :func:`silence_mask` of the first frames; None: no silence.

    Returns
    -------
    np.ndarray, float64, shape (len(SEGMENT_LABELS), frames)
        Columns sum to 1; the class probabilities are interpolated between window centres.
    """
    times = (np.arange(frames) + 0.5) * FRAME_S
    centre_s, probs = np.asarray(centre_s, np.float64), np.asarray(probs, np.float64)
    content = np.stack([np.interp(times, centre_s, column) for column in probs.T])
    content /= np.maximum(content.sum(axis=0), 1e-12)
    quiet = np.zeros(frames)
    if silent is not None:
        quiet[:min(frames, len(silent))] = np.where(silent[:frames], 0.999, 0.001)
    return np.concatenate([content * (1 - quiet), quiet[None]])


def smooth(probs: np.ndarray, params: SegmentParams = SegmentParams()) -> list[Run]:
    """Viterbi path over the states of ``probs``, then the minimum-duration pass (module docstring, step 3).

    Parameters
    ----------
    probs : np.ndarray, float, shape (S, F)
        :func:`frame_probabilities`.
    params : SegmentParams

    Returns
    -------
    list of Run
        Consecutive runs covering frames ``[0, F)``.
    """
    states = len(probs)
    stay = 1 - FRAME_S / params.expected_s
    sound = np.maximum(1 - probs[_SILENCE], 1e-12)  # content probabilities given not silent, tempered
    evidence = np.maximum(probs / sound, 1e-12) ** min(1.0, FRAME_S / params.evidence_s) * sound
    evidence[_SILENCE] = probs[_SILENCE]
    path = librosa.sequence.viterbi(np.minimum(evidence, 1.0), librosa.sequence.transition_loop(states, stay),
                                    p_init=np.full(states, 1 / states))
    runs = [[start, stop, int(state)] for start, stop, state in _runs(path)]
    minimum = {state: int(round(params.min_content_s / FRAME_S)) for state in range(states)}
    minimum[_SILENCE] = int(round(params.min_silence_s / FRAME_S))
    while len(runs) > 1:
        short = [i for i, (start, stop, state) in enumerate(runs) if stop - start < minimum[state]]
        if not short:
            break
        i = min(short, key=lambda k: runs[k][1] - runs[k][0])
        neighbours = [k for k in (i - 1, i + 1) if 0 <= k < len(runs)]
        into = max(neighbours, key=lambda k: runs[k][1] - runs[k][0])
        runs[into] = [min(runs[into][0], runs[i][0]), max(runs[into][1], runs[i][1]), runs[into][2]]
        del runs[i]
        runs = _merge_equal(runs)
    return [Run(start, stop, state, float(probs[state, start:stop].mean())) for start, stop, state in runs]


def refine_boundaries(runs: list[Run], bands: np.ndarray, probs: np.ndarray, *, radius_s: float,
                      params: SegmentParams = SegmentParams()) -> list[Run]:
    """Move each boundary between content classes to the strongest spectral change near it (module docstring, step 4).

    Parameters
    ----------
    runs : list of Run
        :func:`smooth`'s result.
    bands : np.ndarray, float, shape (F', 8)
        :attr:`FrameCues.bands`; frames past F' are not searched.
    probs : np.ndarray, float, shape (S, F)
        The frame probabilities the confidences are taken from.
    radius_s : float or np.ndarray, float, shape (len(runs) - 1,)
        Search this far on each side (s) of every inner boundary, or of each
        one; never past the middle of a neighbouring run.

    Returns
    -------
    list of Run
    """
    novelty = _novelty(bands, int(round(params.novelty_s / FRAME_S)))
    radius = np.rint(np.broadcast_to(radius_s, (max(len(runs) - 1, 0),)) / FRAME_S).astype(int)
    edges = [run.start for run in runs] + [runs[-1].stop]
    for i in range(1, len(runs)):
        if _SILENCE in (runs[i - 1].state, runs[i].state):
            continue
        low = max(edges[i] - radius[i - 1], (runs[i - 1].start + runs[i - 1].stop) // 2 + 1)
        high = min(edges[i] + radius[i - 1], (runs[i].start + runs[i].stop) // 2, len(novelty))
        if high > low:
            edges[i] = low + int(np.argmax(novelty[low:high]))
    return [Run(edges[i], edges[i + 1], run.state, float(probs[run.state, edges[i]:edges[i + 1]].mean()))
            for i, run in enumerate(runs)]


def _novelty(bands: np.ndarray, context: int) -> np.ndarray:
    """Distance (dB) between the mean band spectrum of the ``context`` frames before and after each frame edge."""
    bands = np.asarray(bands, np.float64)
    frames = len(bands)
    total = np.concatenate([np.zeros((1, bands.shape[1])), np.cumsum(bands, axis=0)])
    edge = np.arange(frames)
    before_start, after_stop = np.maximum(edge - context, 0), np.minimum(edge + context, frames)
    before = (total[edge] - total[before_start]) / np.maximum(edge - before_start, 1)[:, None]
    after = (total[after_stop] - total[edge]) / np.maximum(after_stop - edge, 1)[:, None]
    distance = np.sqrt(np.mean((after - before) ** 2, axis=1))
    distance[(edge - before_start < context) | (after_stop - edge < context)] = 0
    return distance


def segment_timeline(centre_s: np.ndarray, probs: np.ndarray, duration_s: float, *,
                     cues: FrameCues | None = None,
                     params: SegmentParams = SegmentParams()) -> list[tuple[float, float, str, float]]:
    """A file's segments from its windows' probabilities and (optionally) its frame cues.

    Parameters
    ----------
    centre_s : np.ndarray, float, shape (W,), W >= 1
        Centre of each window's real audio (s), increasing.
    probs : np.ndarray, float, shape (W, len(CLASSES))
        Content class probabilities of each window.
    duration_s : float
        End of the timeline (s).
    cues : FrameCues or None
        The file's cues; None skips silence and boundary refinement.
    params : SegmentParams

    Returns
    -------
    list of (start_s, end_s, label, confidence)
        Tiling ``[0, duration_s]``; inner boundaries on the 10-ms grid; labels
        from :data:`SEGMENT_LABELS`.
    """
    if np.ndim(probs) != 2 or np.shape(probs)[1] != len(CLASSES):
        raise ValueError(f"probs must be (windows, {len(CLASSES)}), one column per content class; "
                         f"got {np.shape(probs)}")
    frames = max(1, int(np.ceil(round(duration_s / FRAME_S, 6))))
    silent = None if cues is None else silence_mask(cues.level_db, params)
    frame_probs = frame_probabilities(centre_s, probs, frames, silent)
    runs = smooth(frame_probs, params)
    if cues is not None and cues.frames and len(runs) > 1:
        runs = refine_boundaries(runs, cues.bands, frame_probs, radius_s=_spacing_at(
            centre_s, np.array([run.start for run in runs[1:]]) * FRAME_S), params=params)
    return [(round(run.start * FRAME_S, 2), float(duration_s) if run.stop == frames else round(run.stop * FRAME_S, 2),
             SEGMENT_LABELS[run.state], run.confidence) for run in runs]


def _spacing_at(centre_s: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Distance (s, at least 1) between the window centres either side of each time: how far off a
    boundary found there may be."""
    centre_s = np.asarray(centre_s, np.float64)
    if len(centre_s) < 2:
        return np.ones(len(times_s))
    after = np.clip(np.searchsorted(centre_s, times_s), 1, len(centre_s) - 1)
    return np.maximum(centre_s[after] - centre_s[after - 1], 1.0)


def _runs(values: np.ndarray) -> list[tuple[int, int, object]]:
    """``(start, stop, value)`` of each run of equal values."""
    values = np.asarray(values)
    if not len(values):
        return []
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(values)]])
    return [(int(a), int(b), values[a].item()) for a, b in zip(starts, stops)]


def _merge_equal(runs: list[list[int]]) -> list[list[int]]:
    """Join neighbouring ``[start, stop, state]`` runs of the same state."""
    merged = [runs[0]]
    for start, stop, state in runs[1:]:
        if state == merged[-1][2]:
            merged[-1] = [merged[-1][0], stop, state]
        else:
            merged.append([start, stop, state])
    return merged
