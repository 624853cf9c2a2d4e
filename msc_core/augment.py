"""Audio-domain augmentation for training data: band-limiting, noise, time shift, gain.

Every function takes mono float32 samples (N,) at ``sample_rate`` Hz and returns
new float32 samples; none changes its input. :func:`augment_clip` draws one
random combination for a clip from a seeded generator, so an augmented corpus
is reproducible. Augmentation happens before featurizing, so the depth layers
of augmented audio are computed exactly like any other.

Gain is in the set for completeness, but the depth-layer features are nearly
invariant to it: each window's decibels are taken relative to its own maximum
(PREPROCESSING.md step 4), so only float rounding (a code moves by 1 at most),
the -100 dB power floor and 16-bit quantization can see a change of level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

KINDS = ("band", "noise", "shift", "gain")


@dataclass(frozen=True)
class AugmentRanges:
    """The ranges :func:`augment_clip` draws from (uniformly).

    Attributes
    ----------
    cutoff_hz : (float, float)
        Band-limit cutoff: the clip is resampled to twice this rate and back.
        3.4-8 kHz spans telephone to wideband-codec bandwidths.
    snr_db : (float, float)
        White-noise signal-to-noise ratio, relative to the clip's RMS.
    max_shift_s : float
        Largest time shift (s): that many seconds are dropped from the start,
        so windows fall at other offsets of the recording.
    gain_db : (float, float)
    """

    cutoff_hz: tuple[float, float] = (3400.0, 8000.0)
    snr_db: tuple[float, float] = (5.0, 30.0)
    max_shift_s: float = 5.0
    gain_db: tuple[float, float] = (-30.0, 6.0)


def band_limit(samples: np.ndarray, sample_rate: int, *, cutoff_hz: float) -> np.ndarray:
    """Keep only 0-``cutoff_hz``: soxr HQ resampling to ``2 * cutoff_hz`` and back, length kept."""
    low_rate = 2.0 * cutoff_hz
    if low_rate >= sample_rate:
        return np.array(samples, np.float32)
    narrow = soxr.resample(soxr.resample(samples, sample_rate, low_rate, quality="HQ"),
                           low_rate, sample_rate, quality="HQ")
    out = np.zeros(len(samples), np.float32)
    out[: min(len(out), len(narrow))] = narrow[: len(out)]
    return out


def add_noise(samples: np.ndarray, *, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at ``snr_db`` below the clip's RMS (digital silence stays at a -100 dBFS floor)."""
    rms = max(float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))), 1e-5)
    noise = rng.standard_normal(len(samples)) * (rms * 10 ** (-snr_db / 20))
    return (samples + noise).astype(np.float32)


def time_shift(samples: np.ndarray, sample_rate: int, *, seconds: float) -> np.ndarray:
    """Drop the first ``seconds`` so that every window starts that much later in the recording."""
    return np.array(samples[int(round(seconds * sample_rate)):], np.float32)


def apply_gain(samples: np.ndarray, *, gain_db: float) -> np.ndarray:
    """Scale by ``gain_db`` and clip to [-1, 1]."""
    return np.clip(samples * np.float32(10 ** (gain_db / 20)), -1.0, 1.0).astype(np.float32)


def augment_clip(samples: np.ndarray, sample_rate: int, *, kinds: tuple[str, ...], rng: np.random.Generator,
                 ranges: AugmentRanges = AugmentRanges()) -> tuple[np.ndarray, dict[str, float]]:
    """Apply each of ``kinds`` (in :data:`KINDS` order) with parameters drawn from ``ranges``.

    Returns
    -------
    (samples, params)
        The augmented float32 samples (N',) and what was drawn, e.g.
        ``{"cutoff_hz": 4210.5, "snr_db": 12.3}``, for the manifest.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; choose from {KINDS}")
    params: dict[str, float] = {}
    out = np.asarray(samples, np.float32)
    if "shift" in kinds:
        params["shift_s"] = float(rng.uniform(0.0, ranges.max_shift_s))
        out = time_shift(out, sample_rate, seconds=params["shift_s"])
    if "band" in kinds:
        params["cutoff_hz"] = float(rng.uniform(*ranges.cutoff_hz))
        out = band_limit(out, sample_rate, cutoff_hz=params["cutoff_hz"])
    if "noise" in kinds:
        params["snr_db"] = float(rng.uniform(*ranges.snr_db))
        out = add_noise(out, snr_db=params["snr_db"], rng=rng)
    if "gain" in kinds:
        params["gain_db"] = float(rng.uniform(*ranges.gain_db))
        out = apply_gain(out, gain_db=params["gain_db"])
    return out, params
