"""Confidence calibration: metrics, temperature fitting, and a temperature stored in a model directory."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from jobs.cli import main
from msc_core.config import PAPER
from msc_core.depth import featurize
from msc_core import synth
from msc_core.evaluation import expected_calibration_error, fit_temperature, log_loss
from msc_core.model import apply_temperature, load_model_dir, set_temperature


def _overconfident(temperature: float, size: int = 4000):
    """Labels and (N, 3) probabilities of a calibrated source, then sharpened by 1/temperature."""
    rng = np.random.default_rng(0)
    calibrated = rng.dirichlet([1.0, 1.0, 1.0], size)
    labels = np.array([rng.choice(3, p=row) for row in calibrated])
    return labels, apply_temperature(calibrated, temperature)


def test_fit_temperature_undoes_a_known_sharpening():
    labels, probs = _overconfident(0.5)
    fitted = fit_temperature(labels, probs)
    assert fitted == pytest.approx(2.0, rel=0.15)
    repaired = apply_temperature(probs, fitted)
    assert expected_calibration_error(labels, repaired) < expected_calibration_error(labels, probs) / 2
    assert log_loss(labels, repaired) < log_loss(labels, probs)
    np.testing.assert_array_equal(repaired.argmax(axis=1), probs.argmax(axis=1))


def test_metrics_on_perfect_and_wrong_answers():
    labels = np.array([0, 1, 1, 0])
    music = np.array([0.0, 1.0, 1.0, 0.0])
    assert expected_calibration_error(labels, np.stack([1 - music, music], axis=1)) == 0.0
    assert expected_calibration_error(labels, np.stack([music, 1 - music], axis=1)) == 1.0
    assert log_loss(labels, np.full((4, 2), 0.5)) == pytest.approx(np.log(2))
    assert log_loss(np.array([2]), np.array([[0.25, 0.25, 0.5]])) == pytest.approx(np.log(2))


def test_temperature_in_a_model_directory_changes_confidences_not_labels(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    rate = PAPER.sample_rate
    clips = [synth.music_like(5.0, sample_rate=rate, seed=9), synth.speech_like(5.0, sample_rate=rate, seed=9)]
    codes = featurize(np.stack([clip[: PAPER.window_samples] for clip in clips]), PAPER)
    raw = load_model_dir(copy).predict_codes(codes)
    set_temperature(copy, temperature=3.0, fitted_on={"note": "test"})
    model = load_model_dir(copy)
    assert model.temperature == 3.0 and model.uncalibrated().temperature == 1.0
    soft = model.predict_codes(codes)
    np.testing.assert_allclose(soft, apply_temperature(raw, 3.0), rtol=1e-5)
    np.testing.assert_array_equal(soft.argmax(-1), raw.argmax(-1))
    assert np.all(np.abs(soft[:, 1] - 0.5) <= np.abs(raw[:, 1] - 0.5) + 1e-6)
    assert json.loads((copy / "model.json").read_text())["calibration"]["fitted_on"] == {"note": "test"}
    assert main(["models", "calibrate", str(copy), "--temperature", "1"]) == 0
    np.testing.assert_allclose(load_model_dir(copy).predict_codes(codes), raw, rtol=1e-5)
    with pytest.raises(ValueError, match="a finite number above 0"):
        set_temperature(copy, temperature=0.0, fitted_on={})
