"""``msc train`` on real Ray Train (2 workers, MultiWorkerMirroredStrategy) and ``msc evaluate``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_training import SMALL, SMALL_WIDTHS, write_synthetic_shards

from jobs import cli
from msc_core.config import PAPER
from msc_core.errors import InputError
from msc_core.training import TrainSettings

MODEL_FILES = {"model.keras", "feature_config.json", "model.json", "history.csv", "training_curves.png",
               "evaluation.json", "confusion_matrix.json", "confusion_matrix.png", "misclassified.csv"}
EVALUATION_FILES = {"evaluation.json", "confusion_matrix.json", "confusion_matrix.png", "misclassified.csv"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """4 files of 24 distinct train windows (each written 10 times), 6 val and 6 test windows, half music."""
    return write_synthetic_shards(tmp_path_factory.mktemp("train-job"), files=4,
                                  splits={"train": 24, "val": 6, "test": 6}, train_repeats=10)


def epoch_hook(record_dir: Path, *, kill_rank: int | None = None, kill_epoch: int | None = None,
               fail_epoch: int | None = None, storage: Path | None = None):
    """A per-worker ``on_epoch_end`` hook (pickled by value to the Ray workers).

    Writes ``rank<r>-epoch<e>.sha``, a sha256 of the worker's weights; kills
    worker ``kill_rank`` with SIGKILL once epoch ``kill_epoch``'s checkpoint is
    listed as finished in ``storage``, or raises on every worker after epoch
    ``fail_epoch``, each only once (a marker file remembers it).
    """
    def hook(end) -> None:
        import hashlib
        import os
        import signal
        import time

        from jobs.train import finished_checkpoints

        digest = hashlib.sha256()
        for weight in end.model.weights:
            digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
        (record_dir / f"rank{end.rank}-epoch{end.progress.epoch}.sha").write_text(digest.hexdigest())
        if end.progress.epoch == kill_epoch and end.rank == kill_rank and not (record_dir / "killed").exists():
            (record_dir / "killed").write_text(str(os.getpid()))
            deadline = time.monotonic() + 120
            while kill_epoch not in finished_checkpoints(str(storage)) and time.monotonic() < deadline:
                time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGKILL)
        if end.progress.epoch == fail_epoch and not (record_dir / f"failed-{end.rank}").exists():
            (record_dir / f"failed-{end.rank}").write_text("")
            raise RuntimeError("interrupted on purpose")

    return hook


def read_history(model_dir: Path) -> list[dict]:
    with open(model_dir / "history.csv") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def test_two_workers_learn_in_sync(ray_local, dataset, tmp_path):
    from jobs.train import train

    settings = TrainSettings(epochs=10, widths=SMALL_WIDTHS, seed=3)
    model = train(str(dataset), str(tmp_path / "model"), settings, workers=2, max_failures=0,
                  on_epoch_end=epoch_hook(tmp_path))
    for epoch in range(1, 11):     # MultiWorkerMirroredStrategy keeps both replicas identical
        assert (tmp_path / f"rank0-epoch{epoch}.sha").read_text() == (tmp_path / f"rank1-epoch{epoch}.sha").read_text()
    model_dir = tmp_path / "model"
    assert MODEL_FILES <= {p.name for p in model_dir.iterdir()}
    history = read_history(model_dir)
    assert [row["epoch"] for row in history] == list(range(1, 11))
    assert all(row["windows"] == 960 for row in history)     # 60 steps x 8 windows x 2 workers
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert max(row["val_accuracy"] for row in history) >= 0.85        # chance is 0.5
    evaluation = json.loads((model_dir / "evaluation.json").read_text())
    assert evaluation["windows"] == 24 and evaluation["accuracy"] >= 0.75 and evaluation["roc_auc"] >= 0.8
    assert evaluation["model_id"] == model.model_id
    extra = json.loads((model_dir / "model.json").read_text())["extra"]
    assert extra["workers"] == 2 and extra["best_val_accuracy"] == max(row["val_accuracy"] for row in history)

    # msc evaluate on the same model reproduces the job's evaluation.
    assert cli.main(["evaluate", str(model_dir), str(dataset), "--out", str(tmp_path / "eval")]) == 0
    assert {p.name for p in (tmp_path / "eval").iterdir()} == EVALUATION_FILES
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text()) == evaluation
    # ... and refuses shards of other features.
    other = write_synthetic_shards(tmp_path / "paper", PAPER, files=1, splits={"train": 1, "val": 1, "test": 2})
    assert cli.main(["evaluate", str(model_dir), str(other), "--out", str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow  # 2-3 min on 2 cores; the library's resume is in test_training.py
def test_killed_worker_restarts_from_checkpoint_and_resume(ray_local, dataset, tmp_path):
    from ray.train import TrainingFailedError

    from jobs.train import train

    settings = TrainSettings(epochs=4, widths=SMALL_WIDTHS, seed=5)
    out = str(tmp_path / "model")
    with pytest.raises(TrainingFailedError):            # interrupted after epoch 2, no retries allowed
        train(str(dataset), out, settings, workers=2, max_failures=0, on_epoch_end=epoch_hook(tmp_path, fail_epoch=2))
    assert not Path(out).exists()
    with pytest.raises(InputError, match="--resume"):
        train(str(dataset), out, settings, workers=2)
    # --resume continues from epoch 2; a worker killed after epoch 3 makes Ray restart from that checkpoint.
    train(str(dataset), out, settings, workers=2, max_failures=1, resume=True,
          on_epoch_end=epoch_hook(tmp_path, kill_rank=1, kill_epoch=3, storage=tmp_path / "model.ray"))
    assert (tmp_path / "killed").exists()
    extra = json.loads((Path(out) / "model.json").read_text())["extra"]
    assert extra["resumed_at"] == [2, 3] and extra["epochs_run"] == 4
    assert [row["epoch"] for row in read_history(Path(out))] == [1, 2, 3, 4]
    assert (tmp_path / "rank0-epoch4.sha").read_text() == (tmp_path / "rank1-epoch4.sha").read_text()


def test_cli_arguments_make_the_settings():
    from jobs.train import settings_from_args

    args = cli.build_parser().parse_args(["train", "DATA", "--out", "M", "--workers", "2", "--widths", "4,8,16",
                                          "--epochs", "3", "--lr", "0.01", "--patience", "4", "--seed", "9"])
    assert settings_from_args(args) == TrainSettings(epochs=3, widths=(4, 8, 16), learning_rate=0.01,
                                                     early_stopping_patience=4, seed=9)
    assert (args.workers, args.max_failures, args.use_gpu, args.resume) == (2, 3, False, False)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "DATA", "--out", "M", "--widths", "4,8"])
    defaults = settings_from_args(cli.build_parser().parse_args(["train", "DATA", "--out", "M"]))
    assert defaults == TrainSettings() and (defaults.batch_size, defaults.learning_rate) == (8, 1e-3)


def test_evaluate_the_imported_paper_model(paper_model_dir, tmp_path):
    from msc_core.model import import_paper_model

    import_paper_model(paper_model_dir, tmp_path / "paper-model")
    data = write_synthetic_shards(tmp_path / "paper-shards", PAPER, files=1, splits={"test": 4})
    assert cli.main(["evaluate", str(tmp_path / "paper-model"), str(data), "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert summary["windows"] == 4 and summary["model_id"].startswith("paper-import-")
    small = write_synthetic_shards(tmp_path / "small", SMALL, files=1, splits={"test": 2})
    assert cli.main(["evaluate", str(tmp_path / "paper-model"), str(small), "--out", str(tmp_path / "no")]) == 2


def test_head_from_learns_the_shards_classes_over_a_models_convolutions(ray_local, dataset, tmp_path):
    import keras
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from msc_core.model import build_model, load_model_dir, save_model_dir, trunk
    from msc_core.shards import list_shards, write_atomic

    three = tmp_path / "three"
    (three / "shards").mkdir(parents=True)
    for index, path in enumerate(list_shards(str(dataset))):   # every 3rd window of each file relabelled noise
        table = pq.read_table(path)
        noise = pc.equal(pc.bit_wise_and(pa.array(np.arange(table.num_rows)), 3), 0)
        table = table.set_column(table.schema.get_field_index("label"), "label",
                                 pc.if_else(noise, "noise", table["label"]))
        write_atomic(table, str(three / "shards" / f"part-{index:05d}.parquet"))
    base = save_model_dir(build_model(SMALL, widths=SMALL_WIDTHS, seed=0), SMALL, tmp_path / "base", source="trained")
    assert cli.main(["train", str(three), "--out", str(tmp_path / "model"), "--head-from", str(tmp_path / "base"),
                     "--epochs", "3", "--batch-size", "16", "-q"]) == 0
    model = load_model_dir(tmp_path / "model")
    assert model.labels == ("speech", "music", "noise") and model.metadata["extra"]["head_from"] == base.model_id
    assert MODEL_FILES <= {p.name for p in (tmp_path / "model").iterdir()}
    summary = json.loads((tmp_path / "model" / "evaluation.json").read_text())
    assert summary["confusion_matrix"]["labels"] == ["speech", "music", "noise"] and summary["windows"] == 24
    for kept, learnt in zip(trunk(base.keras_model).weights, trunk(model.keras_model).weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(kept), keras.ops.convert_to_numpy(learnt))
    assert len(read_history(tmp_path / "model")) <= 3


def test_init_from_starts_every_weight_from_a_model(ray_local, tmp_path):
    import keras

    from msc_core.model import build_model, load_model_dir, save_model_dir

    dataset = write_synthetic_shards(tmp_path / "data", files=1)
    start = save_model_dir(build_model(SMALL, widths=SMALL_WIDTHS, seed=7), SMALL, tmp_path / "start",
                           source="trained")
    # --lr 0: the optimizer changes nothing, so the learnt weights are the starting model's (widths taken from it),
    # and BatchNormalization stays in inference mode: its moving statistics are the starting model's too
    assert cli.main(["train", str(dataset), "--out", str(tmp_path / "model"), "--init-from", str(tmp_path / "start"),
                     "--epochs", "1", "--batch-size", "4", "--lr", "0", "-q"]) == 0
    model = load_model_dir(tmp_path / "model")
    assert model.metadata["extra"]["init_from"] == start.model_id and model.metadata["widths"] == list(SMALL_WIDTHS)
    for kept, learnt in zip(start.keras_model.weights, model.keras_model.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(kept), keras.ops.convert_to_numpy(learnt))
    save_model_dir(build_model(SMALL, widths=SMALL_WIDTHS, outputs=3, seed=7), SMALL, tmp_path / "three",
                   source="trained", labels=("speech", "music", "noise"))
    assert cli.main(["train", str(dataset), "--out", str(tmp_path / "other"), "--init-from", str(tmp_path / "three"),
                     "--epochs", "1", "-q"]) == 2
    assert cli.main(["train", str(dataset), "--out", str(tmp_path / "both"), "--init-from", str(tmp_path / "start"),
                     "--head-from", str(tmp_path / "start"), "-q"]) == 2
