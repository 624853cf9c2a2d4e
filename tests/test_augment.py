"""Audio augmentation (msc_core.augment) and scripts/augment_corpus.py on real decoded audio."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from msc_core import synth
from msc_core.augment import add_noise, apply_gain, augment_clip, band_limit, time_shift
from msc_core.config import PAPER
from msc_core.depth import featurize
from tests.conftest import REPO, write_audio

RATE = PAPER.sample_rate


def _power_above(samples: np.ndarray, cutoff_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    return float(spectrum[np.fft.rfftfreq(len(samples), 1 / RATE) > cutoff_hz].sum() / spectrum.sum())


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    return synth.music_like(6.0, sample_rate=RATE, seed=3)


def test_band_limit_removes_everything_above_the_cutoff_and_keeps_the_length(music):
    wideband = (music + 0.05 * np.random.default_rng(0).standard_normal(len(music))).astype(np.float32)
    narrow = band_limit(wideband, RATE, cutoff_hz=4000.0)
    assert narrow.dtype == np.float32 and narrow.shape == music.shape
    assert _power_above(wideband, 4200.0) > 0.05
    assert _power_above(narrow, 4200.0) < 1e-5
    np.testing.assert_array_equal(band_limit(music, RATE, cutoff_hz=RATE), music)  # nothing to remove


def test_noise_has_the_requested_snr(music):
    noisy = add_noise(music, snr_db=10.0, rng=np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(music.astype(np.float64) ** 2) / np.mean((noisy - music).astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.2)


def test_time_shift_drops_the_start(music):
    shifted = time_shift(music, RATE, seconds=1.5)
    np.testing.assert_array_equal(shifted, music[int(1.5 * RATE):])


def test_depth_features_do_not_see_gain(music):
    """Each window's dB are relative to its own maximum, so a level change moves codes only by rounding."""
    window = music[: PAPER.window_samples][None]
    codes = featurize(window, PAPER).astype(np.int16)
    for gain_db in (-30.0, -6.0):
        quieter = featurize(apply_gain(window[0], gain_db=gain_db)[None], PAPER).astype(np.int16)
        assert np.abs(quieter - codes).max() <= 1
        assert np.mean(quieter != codes) < 0.01


def test_augment_clip_is_seeded_and_reports_what_it_drew(music):
    kinds = ("band", "noise", "shift", "gain")
    first, params = augment_clip(music, RATE, kinds=kinds, rng=np.random.default_rng(7))
    again, params_again = augment_clip(music, RATE, kinds=kinds, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first, again)
    assert params == params_again and set(params) == {"cutoff_hz", "snr_db", "shift_s", "gain_db"}
    assert len(first) == len(music) - int(round(params["shift_s"] * RATE))
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_clip(music, RATE, kinds=("reverb",), rng=np.random.default_rng(0))


def test_augment_corpus_copies_train_clips_only(tmp_path):
    spec = importlib.util.spec_from_file_location("augment_corpus", REPO / "scripts" / "augment_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    rows = []
    for split, kind, seed in (("train", "music", 0), ("train", "speech", 1), ("val", "music", 2)):
        path = write_audio(tmp_path / "in" / f"{split}_{kind}.wav", kind, 6.0, seed=seed)
        rows.append({"path": str(path), "label": kind, "group": f"g{seed}", "split": split})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    out = module.main([str(tmp_path / "manifest.csv"), str(tmp_path / "aug"), "--kinds", "band,noise"])
    again = pd.read_csv(tmp_path / "aug" / "manifest.csv", keep_default_na=False)
    assert len(out) == len(again) == 5
    copies = again[again["augmentation"] != ""]
    assert sorted(copies["group"]) == ["g0", "g1"] and set(copies["split"]) == {"train"}
    assert set(json.loads(copies["augmentation"].iloc[0])) == {"cutoff_hz", "snr_db"}
    def audio() -> dict[str, bytes]:  # the samples: a float WAV's PEAK chunk holds the time it was written
        return {path.name: sf.read(path, dtype="float32")[0].tobytes()
                for path in (tmp_path / "aug" / "audio").glob("*.wav")}

    before = audio()
    module.main([str(tmp_path / "manifest.csv"), str(tmp_path / "aug"), "--kinds", "band,noise"])
    assert audio() == before and len(before) == 2
