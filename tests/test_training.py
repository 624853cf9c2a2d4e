"""The training loop, shard planning, checkpoints and evaluation, without Ray (real TF, real Parquet)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from msc_core import depth, shards, synth
from msc_core.config import FeatureConfig
from msc_core.errors import FeatureConfigMismatchError, InputError

#: Small features (32 mel bands, 1 s windows, 43 frames) so that CPU training takes seconds.
SMALL = FeatureConfig(n_mels=32, window_seconds=1.0, frames=43)
SMALL_WIDTHS = (4, 8, 16)


def write_synthetic_shards(root: Path, config: FeatureConfig = SMALL, *, files: int = 4,
                           splits: dict[str, int] | None = None, music_share: float = 0.5, train_repeats: int = 1,
                           seed: int = 0) -> Path:
    """A featurized dataset ``root/shards/part-*.parquet`` of synthetic music-like and speech-like windows.

    Each file holds ``splits[split]`` distinct windows of every split (default 16 train, 4 val, 4 test),
    labels cycling so that ``music_share`` of them are music; its train rows are then
    written ``train_repeats`` times, which gives more steps per epoch cheaply (BatchNormalization's
    moving statistics, momentum .99, need a few hundred steps before validation means anything).
    """
    splits = splits or {"train": 16, "val": 4, "test": 4}
    per_file = sum(splits.values())
    (root / "shards").mkdir(parents=True, exist_ok=True)
    for part in range(files):
        keys = [seed + part * per_file + i for i in range(per_file)]
        kinds = ["music" if (i + 1) % round(1 / music_share) == 0 else "speech" for i in range(per_file)]
        audio = np.stack([(synth.music_like if kind == "music" else synth.speech_like)(
            config.window_seconds, sample_rate=config.sample_rate, seed=key) for kind, key in zip(kinds, keys)])
        split_of = [split for split, count in splits.items() for _ in range(count)]
        rows = [i for i in range(per_file) for _ in range(train_repeats if split_of[i] == "train" else 1)]
        table = shards.windows_table(config, codes=depth.featurize(audio, config)[rows], columns={
            "path": [f"synth/{kinds[i]}-{keys[i]}.wav" for i in rows], "label": [kinds[i] for i in rows],
            "split": [split_of[i] for i in rows], "window": [0] * len(rows), "start_s": [0.5 * i for i in rows],
            "duration_s": [config.window_seconds] * len(rows), "sample_rate": [config.sample_rate] * len(rows),
            "channels": [1] * len(rows)})
        shards.write_atomic(table, str(root / "shards" / f"part-{part:05d}.parquet"))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic_shards(tmp_path_factory.mktemp("synthetic"), files=3,
                                  splits={"train": 8, "val": 4, "test": 4})


def test_plan_counts_balances_and_sizes_epochs(dataset):
    from msc_core.shards import list_shards
    from msc_core.training import ShardPlan

    paths = list_shards(str(dataset))
    plan = ShardPlan.scan(paths)
    assert plan.config.hash == SMALL.hash
    assert plan.totals("train").tolist() == [12, 12, 0, 0] and plan.totals("val").tolist() == [6, 6, 0, 0]
    assert plan.classes() == ("speech", "music")
    np.testing.assert_allclose(plan.class_weights(), [1, 1])
    parts = plan.assign(2)
    assert sorted(sum(parts, [])) == paths and all(parts)
    assert plan.steps_per_epoch(parts, 4) == 2            # the lighter worker holds one file: 8 windows
    with pytest.raises(InputError, match="too few"):
        plan.assign(4)
    with pytest.raises(InputError, match="fewer than one batch"):
        plan.steps_per_epoch(parts, 9)


def test_plan_weights_imbalanced_classes_and_refuses_mixed_features(tmp_path):
    from msc_core.shards import list_shards
    from msc_core.training import ShardPlan

    skewed = write_synthetic_shards(tmp_path / "skewed", files=1, music_share=0.25,
                                    splits={"train": 8, "val": 1, "test": 1})
    plan = ShardPlan.scan(list_shards(str(skewed)))
    speech, music = plan.totals("train")[:2]
    assert (speech, music) == (6, 2)
    np.testing.assert_allclose(plan.class_weights(), [8 / 12, 8 / 4])
    other = write_synthetic_shards(tmp_path / "other", FeatureConfig(n_mels=16, window_seconds=1.0, frames=43),
                                   files=1, splits={"train": 2, "val": 1, "test": 1})
    with pytest.raises(FeatureConfigMismatchError):
        ShardPlan.scan(list_shards(str(skewed)) + list_shards(str(other)))


def _fit_locally(dataset: Path, settings, restore=None, on_epoch_end=lambda end: None):
    """:func:`fit` on one worker with the default strategy, as a quick stand-in for Ray."""
    import tensorflow as tf

    from msc_core.shards import list_shards, tf_dataset
    from msc_core.training import ShardPlan, fit

    paths = list_shards(str(dataset))
    plan = ShardPlan.scan(paths)
    steps = plan.steps_per_epoch([paths], settings.batch_size)
    return fit(SMALL, settings, strategy=tf.distribute.get_strategy(), rank=0, workers=1,
               train_data=lambda epoch: tf_dataset(paths, SMALL, split="train", batch_size=settings.batch_size,
                                                   shuffle_seed=epoch).take(steps),
               val_data=lambda: tf_dataset(paths, SMALL, split="val", batch_size=8),
               class_weights=plan.class_weights(), restore=restore, on_epoch_end=on_epoch_end)


def test_fit_learns_and_resumes_from_a_checkpoint(dataset, tmp_path):
    from msc_core.training import Checkpoint, TrainSettings

    settings = TrainSettings(epochs=2, batch_size=4, widths=SMALL_WIDTHS, learning_rate=3e-3, seed=1)
    saved = []
    first = _fit_locally(dataset, settings, on_epoch_end=lambda end: saved.append(end.peak_rss_mb))
    assert len(saved) == 2 and saved[-1] > 0
    first.save(tmp_path / "ckpt")
    restored = Checkpoint.load(tmp_path / "ckpt")
    assert restored.progress == first.progress
    assert all(np.array_equal(a, b) for a, b in zip(restored.optimizer, first.optimizer))
    final = _fit_locally(dataset, TrainSettings(**{**settings.__dict__, "epochs": 6}), restore=restored)
    progress = final.progress
    assert progress.epoch == 6 and progress.resumed_at == [2]
    assert [row["epoch"] for row in progress.history] == list(range(1, 7))
    assert final.optimizer[0] == 6 * 6             # Adam's step counter went on: 24 train windows / 4 per step
    assert progress.history[-1]["loss"] < progress.history[0]["loss"]
    assert progress.best_val_accuracy == max(row["val_accuracy"] for row in progress.history)


def test_early_stopping_and_plateau_schedule(dataset):
    from msc_core.training import TrainSettings

    # min_delta larger than any change: no epoch after the first counts as an improvement.
    settings = TrainSettings(epochs=10, batch_size=4, widths=SMALL_WIDTHS, early_stopping_patience=3,
                             lr_patience=2, min_delta=10.0, learning_rate=1e-3)
    final = _fit_locally(dataset, settings)
    progress = final.progress
    assert progress.stopped_early and progress.epoch == 4
    assert [row["learning_rate"] for row in progress.history] == [1e-3, 1e-3, 1e-3, 5e-4]
    assert progress.best_loss_epoch == 1
    assert all(np.array_equal(a, b) for a, b in zip(final.model, final.best_loss))   # best weights restored


def test_metrics_agree_with_scikit_learn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    from msc_core.evaluation import Evaluation

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    p_music = np.clip(labels * 0.3 + rng.random(200) * 0.7, 0, 1).round(2).astype(np.float32)  # with ties
    probs = np.stack([1 - p_music, p_music], axis=1)
    summary = Evaluation("test", "m", ("speech", "music"), labels, probs, []).summary()
    predicted = np.argmax(probs, axis=1)
    assert summary["confusion_matrix"]["counts"] == confusion_matrix(labels, predicted).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted)
    for index, label in enumerate(("speech", "music")):
        got = summary["per_class"][label]
        np.testing.assert_allclose([got["precision"], got["recall"], got["f1"]],
                                   [precision[index], recall[index], f1[index]])
        assert got["support"] == support[index]
    assert summary["roc_auc"] == pytest.approx(roc_auc_score(labels, p_music))
    assert summary["accuracy"] == pytest.approx(np.mean(predicted == labels))


def test_evaluate_shards_writes_every_file(dataset, tmp_path):
    from msc_core.evaluation import evaluate_shards, write_history
    from msc_core.model import build_model, save_model_dir
    from msc_core.shards import list_shards

    model = save_model_dir(build_model(SMALL, widths=SMALL_WIDTHS, seed=0), SMALL, tmp_path / "model",
                           source="trained")
    evaluation = evaluate_shards(model, list_shards(str(dataset)), split="test", batch_size=5)
    summary = evaluation.write(tmp_path / "eval")
    write_history([{"epoch": 1, "loss": 0.7, "accuracy": 0.5, "val_loss": 0.69, "val_accuracy": 0.5},
                   {"epoch": 2, "loss": 0.6, "accuracy": 0.6, "val_loss": 0.65, "val_accuracy": 0.6}], tmp_path / "eval")
    names = {p.name for p in (tmp_path / "eval").iterdir()}
    assert names == {"evaluation.json", "confusion_matrix.json", "confusion_matrix.png", "misclassified.csv",
                     "history.csv", "training_curves.png"}
    assert summary["windows"] == 12 and json.loads((tmp_path / "eval" / "evaluation.json").read_text()) == summary
    wrong = (tmp_path / "eval" / "misclassified.csv").read_text().splitlines()
    assert wrong[0] == "path,start_s,true,predicted,p_predicted"
    assert len(wrong) - 1 == sum(summary["confusion_matrix"]["counts"][i][1 - i] for i in range(2))
    for row in evaluation.misclassified:
        assert row["path"].startswith("synth/") and row["true"] in row["path"] and row["start_s"] >= 6.0
    with pytest.raises(InputError, match="no labelled windows"):
        evaluate_shards(model, list_shards(str(dataset)), split="nonexistent")


def test_a_new_head_learns_new_classes_over_frozen_convolutions(dataset, tmp_path):
    import keras

    from msc_core.model import build_model, head, load_model_dir, save_model_dir, trunk
    from msc_core.shards import list_shards
    from msc_core.training import TrainSettings, fit_head, pooled_features

    base = save_model_dir(build_model(SMALL, widths=SMALL_WIDTHS, seed=0), SMALL, tmp_path / "base", source="trained")
    classes = ("speech", "music", "noise")
    pooled = pooled_features(base, list_shards(str(dataset)), classes=classes)
    train = pooled["train"]
    assert train[0].shape == (24, SMALL_WIDTHS[-1]) and set(train[1]) == {0, 1}
    assert [len(pooled[split][1]) for split in ("val", "test")] == [12, 12]
    rng = np.random.default_rng(0)   # three separable clouds of pooled features stand in for the three classes
    centres = rng.normal(0, 1, (3, SMALL_WIDTHS[-1])).astype(np.float32)
    labels = np.repeat(np.arange(3, dtype=np.int32), 40)
    features = centres[labels] + rng.normal(0, 0.05, (120, SMALL_WIDTHS[-1])).astype(np.float32)
    full, history = fit_head(base, train=(features, labels), val=(features, labels), classes=classes,
                             settings=TrainSettings(epochs=60, batch_size=16, learning_rate=1e-2,
                                                    early_stopping_patience=60))
    assert full.output_shape == (None, 3) and 1 <= history["best_epoch"] <= len(history["loss"]) == 60
    for kept, learnt in zip(trunk(base.keras_model).weights, trunk(full).weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(kept), keras.ops.convert_to_numpy(learnt))
    head_only = keras.Sequential([keras.Input((SMALL_WIDTHS[-1],)), *head(full)])
    assert np.mean(head_only.predict(features, verbose=0).argmax(axis=1) == labels) > 0.95
    save_model_dir(full, SMALL, tmp_path / "new", source="trained", labels=classes)
    assert load_model_dir(tmp_path / "new").labels == classes
    with pytest.raises(InputError, match="every class"):
        fit_head(base, train=(features[:80], labels[:80]), val=(features, labels), classes=classes)
