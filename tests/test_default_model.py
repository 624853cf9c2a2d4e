"""The default model bundled in msc_core/default_model/: loads safely, reads msc's features, labels recordings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jobs.cli import main
from msc_core.config import CLASSES, PAPER
from msc_core.labelling import DEFAULT_MODEL_DIR, load_model

#: Where scripts/build_default_model.sh leaves the corpus; MSC_TRAIN_CORPUS overrides.
CORPUS = Path(os.environ.get("MSC_TRAIN_CORPUS", Path(__file__).resolve().parents[1] / "runs" / "corpus"))


def test_default_model_is_bundled_with_its_card():
    model = load_model()  # no path: the bundled one, checked against PAPER in safe mode
    assert model.config.hash == PAPER.hash
    assert model.metadata["source"] == "trained" and model.labels == CLASSES
    assert (DEFAULT_MODEL_DIR / "MODEL_CARD.md").stat().st_size > 1000
    size = sum(path.stat().st_size for path in DEFAULT_MODEL_DIR.iterdir())
    assert size < 5_000_000


@pytest.mark.parametrize("label", ["speech", "music", "speech_over_music"])
def test_predict_labels_a_recorded_clip_of_the_test_split(label, capsys):
    manifest = CORPUS / "manifest.csv"
    if not manifest.exists():
        pytest.skip(f"{manifest} is absent: build the corpus with scripts/build_default_model.sh "
                    "or set MSC_TRAIN_CORPUS")
    from scripts.corpus_split_manifest import split_of

    import pandas as pd

    rows = pd.read_csv(manifest)
    clip = rows[(rows["label"] == label) & (rows["source"].map(split_of) == "test")].iloc[0]
    assert main(["predict", str(CORPUS / clip["path"]), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["label"] == label


def test_bf16_labels_as_fp32(tmp_path, capsys):
    from tests.conftest import write_audio

    files = [str(write_audio(tmp_path / f"{kind}.wav", kind, 12.0, seed=4)) for kind in ("music", "speech")]
    said = {}
    for precision in ("fp32", "bf16"):
        assert main(["predict", *files, "--json", "--precision", precision]) == 0
        said[precision] = json.loads(capsys.readouterr().out)
    for fp32, bf16 in zip(said["fp32"], said["bf16"]):
        assert bf16["label"] == fp32["label"]
        assert [segment["label"] for segment in bf16["segments"]] == [segment["label"] for segment in fp32["segments"]]
        for name in CLASSES:  # the model card's bound on held-out windows is 0.02
            assert abs(bf16[f"p_{name}"] - fp32[f"p_{name}"]) < 0.02
