"""``msc models import-paper`` and ``msc features --png`` through the real CLI entry point."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest

from jobs.cli import main
from jobs.features import window_at
from msc_core.audio import load_audio
from msc_core.config import PAPER
from msc_core.model import load_model_dir


def test_import_paper_writes_a_loadable_model_dir(paper_model_dir, tmp_path, capsys):
    out = tmp_path / "paper"
    assert main(["models", "import-paper", str(paper_model_dir), "--out", str(out)]) == 0
    model = load_model_dir(out)
    assert f"wrote {out}: model {model.model_id}" in capsys.readouterr().out
    assert main(["models", "import-paper", str(paper_model_dir), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_import_paper_reports_a_bad_directory(tmp_path, capsys):
    assert main(["models", "import-paper", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "missing config.json" in capsys.readouterr().err


def test_features_png_and_layer_counts_match_the_reference(golden_dir, tmp_path, capsys):
    name = "music_stereo_44100_6s.wav"
    png = tmp_path / "layers.png"
    assert main(["features", str(golden_dir / "inputs" / name), "--png", str(png)]) == 0
    printed = capsys.readouterr().out.splitlines()
    counts = [int(line.split(": ")[1].removesuffix(" px")) for line in printed if line.startswith("layer ")]
    assert counts == json.loads((golden_dir / "summary.json").read_text())[name]["nonzero_per_layer"]
    picture = matplotlib.image.imread(png)
    assert png.stat().st_size > 20_000 and picture.shape[0] > 500 and picture.shape[1] > 800
    assert np.unique(picture.reshape(-1, picture.shape[-1]), axis=0).shape[0] > 100


def test_features_at_a_later_start(golden_dir, tmp_path, capsys):
    tone = str(golden_dir / "inputs" / "tone_8000_12s.wav")
    png = tmp_path / "late.png"
    assert main(["features", tone, "--png", str(png), "--start", "6.5"]) == 0
    assert "window at 6.50 s" in capsys.readouterr().out and png.is_file()
    assert main(["features", tone, "--png", str(png), "--start", "12.5"]) == 2
    assert "no audio at 12.5 s" in capsys.readouterr().err


@pytest.mark.parametrize("start_s", [0.0, 1e-6, 3.25, 9.0])
def test_window_at_cuts_the_decoded_audio(golden_dir, start_s):
    tone = golden_dir / "inputs" / "tone_8000_12s.wav"
    whole = load_audio(tone, sample_rate=PAPER.sample_rate)
    begin = int(round(start_s * PAPER.sample_rate))
    expected = np.zeros(PAPER.window_samples, np.float32)
    expected[: len(whole) - begin] = whole[begin:begin + PAPER.window_samples]
    found_start, samples = window_at(str(tone), PAPER, start_s)
    assert found_start == pytest.approx(start_s, abs=1 / PAPER.sample_rate)
    np.testing.assert_array_equal(samples, expected)
