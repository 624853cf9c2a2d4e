"""Synthetic music-like and speech-like audio, for tests, benchmarks and the demo.

These signals are clearly synthetic: music is notes of a scale with harmonics
and envelopes; speech is syllables of a pulse train shaped by moving formants,
with fricative noise and pauses. They make a learnable toy task, not a
substitute for recordings.
"""

from __future__ import annotations

import numpy as np

_SCALE = 2.0 ** (np.array([0, 2, 4, 5, 7, 9, 11]) / 12)


def music_like(seconds: float, *, sample_rate: int = 22050, seed: int = 0) -> np.ndarray:
    """Notes of a major scale (harmonics, attack-decay envelopes) over a sustained chord.

    Returns
    -------
    np.ndarray, float32, shape (round(seconds * sample_rate),), peak about 0.5
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    root = 110.0 * 2 ** rng.uniform(0, 2)
    out = np.zeros(n)
    for degree in (0, 2, 4):  # sustained chord
        out += 0.08 * np.sin(2 * np.pi * root * _SCALE[degree] * t)
    position = 0
    while position < n:
        length = int(sample_rate * rng.choice([0.125, 0.25, 0.5]))
        stop = min(n, position + length)
        local = np.arange(stop - position) / sample_rate
        pitch = root * 2 * _SCALE[rng.integers(7)] * 2 ** rng.integers(0, 2)
        envelope = np.minimum(local / 0.01, 1) * np.exp(-local * rng.uniform(2, 6))
        harmonics = sum(np.sin(2 * np.pi * pitch * k * local) / k ** 1.5 for k in range(1, 6))
        out[position:stop] += 0.25 * envelope * harmonics
        position = stop
    out += 0.002 * rng.standard_normal(n)
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def speech_like(seconds: float, *, sample_rate: int = 22050, seed: int = 0) -> np.ndarray:
    """Syllables (about 4 per second) of a jittered glottal pulse train through moving formants.

    Returns
    -------
    np.ndarray, float32, shape (round(seconds * sample_rate),), peak about 0.5
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    out = np.zeros(n)
    f0_base = rng.uniform(95, 230)
    position = int(sample_rate * rng.uniform(0, 0.2))
    while position < n:
        length = int(sample_rate * rng.uniform(0.12, 0.3))
        stop = min(n, position + length)
        local = np.arange(stop - position) / sample_rate
        f0 = f0_base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 3) * local + rng.uniform(0, 6)))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        formants = rng.uniform([300, 900, 2200], [850, 2300, 3200])
        glide = 1 + rng.uniform(-0.2, 0.2) * local / max(local[-1], 1e-3)
        voiced = sum(
            np.sin(k * phase) / k * sum(np.exp(-((k * f0 - f * glide) / 120.0) ** 2) for f in formants)
            for k in range(1, 40)
        )
        envelope = np.sin(np.pi * local / local[-1]) ** 2 if len(local) > 1 else np.ones(1)
        out[position:stop] += envelope * voiced
        if rng.random() < 0.4:  # a fricative after the vowel
            hiss = min(n, stop + int(0.06 * sample_rate)) - stop
            out[stop:stop + hiss] += 0.3 * np.diff(rng.standard_normal(hiss + 1)) * np.hanning(hiss)
        pause = rng.choice([0.03, 0.06, 0.1, 0.35], p=[0.4, 0.3, 0.2, 0.1])
        position = stop + int(sample_rate * pause)
    out += 0.001 * rng.standard_normal(n)
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)
