"""scripts/model_card_eval.py end to end on a few generated files (plumbing only, untrained model)."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np

from msc_core.config import LABELS, PAPER
from msc_core.labelling import featurize_file
from msc_core.model import build_model, save_model_dir
from msc_core.shards import windows_table, write_atomic
from tests.conftest import REPO, write_audio


def _load_script():
    spec = importlib.util.spec_from_file_location("model_card_eval", REPO / "scripts" / "model_card_eval.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _write_shards(tmp_path):
    """Two synthetic files per class in train and in test, 10 s each (2 windows), as one shard."""
    codes, columns = [], {name: [] for name in ("path", "label", "group", "split", "window", "start_s",
                                                "duration_s", "sample_rate", "channels")}
    for split, seed in (("train", 0), ("test", 10)):
        for label in LABELS:
            for offset in range(2):
                path = write_audio(tmp_path / "audio" / f"{split}_{label}_{offset}.wav", label, 10.0,
                                   seed=seed + offset)
                features = featurize_file(path, PAPER)
                codes.append(features.codes)
                for window, (start, end) in enumerate(zip(features.start_s, features.end_s)):
                    for name, value in (("path", str(path)), ("label", label), ("group", path.stem),
                                        ("split", split), ("window", window), ("start_s", float(start)),
                                        ("duration_s", float(end - start)), ("sample_rate", 22050),
                                        ("channels", 1)):
                        columns[name].append(value)
    (tmp_path / "shards" / "shards").mkdir(parents=True)
    write_atomic(windows_table(PAPER, codes=np.concatenate(codes), columns=columns),
                 str(tmp_path / "shards" / "shards" / "part-0.parquet"))
    return tmp_path / "shards"


def test_model_card_eval_runs_on_generated_files(tmp_path, capsys):
    shards = _write_shards(tmp_path)
    model_dir = tmp_path / "tiny_model"
    save_model_dir(build_model(PAPER, widths=(2, 2, 2), dense=(4, 4), seed=0), PAPER, model_dir, source="trained")
    out = tmp_path / "eval"
    result = _load_script().main(["--shards", str(shards), "--models", f"tiny={model_dir}", "--split", "test",
                                  "--out", str(out), "--limit", "6"])
    written = json.loads((out / "model_card_eval.json").read_text())
    assert set(written["models"]) == {"tiny", "mfcc_logreg"}
    for entry in result["models"].values():
        assert entry["split"]["windows"] == 6
        assert sum(map(sum, entry["split"]["confusion_matrix"]["counts"])) == 6
        assert 0.0 <= entry["recall"]["music_lp4k"] <= 1.0
    assert written["sets"]["music_lp4k"]["windows"] == 3
    assert written["codes_check"]["identical_pixel_share"] == 1.0
    assert (written["sets"]["music_lp4k"]["median_power_share_above_4khz"]
            < written["sets"]["music_real"]["median_power_share_above_4khz"])
    if not written["tts_skipped"]:
        assert written["sets"]["tts"]["windows"] == 6
    assert "| tiny | 6 |" in capsys.readouterr().out
