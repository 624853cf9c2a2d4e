"""How well a model labels one split of the shards, and pictures of training.

:func:`evaluate_shards` streams a split through a model in batches and keeps
only the true class and the model's probabilities per window plus the
misclassified windows, so memory stays small for large sets. Windows of a
class the model does not know are left out. :meth:`Evaluation.write` writes into a directory:

- ``evaluation.json``: split, windows, accuracy, per-class precision/recall/F1/support,
  confusion matrix, ROC-AUC (binary models only: music as the positive class),
  log loss, expected calibration error, model id;
- ``confusion_matrix.json`` and ``confusion_matrix.png``: rows true, columns predicted, the model's class order;
- ``misclassified.csv``: ``path, start_s, true, predicted, p_predicted``.

:func:`write_history` writes ``history.csv`` and ``training_curves.png``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import rankdata

from .errors import InputError
from .model import MscModel, apply_temperature
from .shards import codes_from_arrow, iter_batches

EVALUATION_FILE = "evaluation.json"
CONFUSION_JSON = "confusion_matrix.json"
CONFUSION_PNG = "confusion_matrix.png"
MISCLASSIFIED_FILE = "misclassified.csv"
HISTORY_FILE = "history.csv"
CURVES_PNG = "training_curves.png"
MISCLASSIFIED_COLUMNS = ("path", "start_s", "true", "predicted", "p_predicted")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts, int64 (C, C): row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``labels == 1`` (Mann-Whitney U, ties count half).

    Returns NaN when only one class is present.
    """
    positives = int(np.sum(labels == 1))
    negatives = len(labels) - positives
    if not positives or not negatives:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(labels: np.ndarray, probs: np.ndarray, *, eps: float = 1e-7) -> float:
    """Mean negative log-likelihood (nats) of the true classes; probabilities clipped to [eps, 1 - eps].

    ``labels`` int (N,) index the columns of ``probs`` float (N, C).
    """
    probs = np.asarray(probs, np.float64)
    p_true = probs[np.arange(len(probs)), np.asarray(labels)]
    return float(-np.mean(np.log(np.clip(p_true, eps, 1.0 - eps))))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, *, bins: int = 10) -> float:
    """ECE: the window-weighted mean |accuracy - confidence| over ``bins`` equal-width confidence bins.

    Confidence is the probability of the predicted class (the argmax of
    ``probs`` float (N, C)), which lies in [1/C, 1]; the bins split that range.
    """
    probs = np.asarray(probs, np.float64)
    predicted = np.argmax(probs, axis=1)
    confidence = probs[np.arange(len(probs)), predicted]
    correct = (predicted == np.asarray(labels)).astype(np.float64)
    floor = 1.0 / probs.shape[1]
    which = np.minimum(((confidence - floor) / (1 - floor) * bins).astype(np.int64), bins - 1)
    total = 0.0
    for index in range(bins):
        members = which == index
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / max(len(probs), 1))


def fit_temperature(labels: np.ndarray, probs: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T (within ``bounds``) that minimises the log loss of ``probs`` (N, C) on ``labels``.

    Fit it on a held-out split the model was not trained on; it changes
    confidences, never the predicted class.
    """
    from scipy.optimize import minimize_scalar

    def loss(log_t: float) -> float:
        return log_loss(labels, apply_temperature(probs, float(np.exp(log_t))))

    best = minimize_scalar(loss, bounds=tuple(np.log(bounds)), method="bounded")
    return float(np.exp(best.x))


@dataclass(frozen=True)
class Evaluation:
    """A model's answers on the labelled windows of one split.

    Attributes
    ----------
    split : str
    model_id : str
    classes : tuple of str
        The model's classes (C), in its output order.
    labels : np.ndarray, int64, shape (N,)
        True class index into ``classes``.
    probs : np.ndarray, float32, shape (N, C)
        The model's probabilities.
    misclassified : list of dict
        One row per wrong window with :data:`MISCLASSIFIED_COLUMNS`.
    """

    split: str
    model_id: str
    classes: tuple[str, ...]
    labels: np.ndarray
    probs: np.ndarray
    misclassified: list[dict]

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class index, int64 (N,): the most probable class."""
        return np.argmax(self.probs, axis=1)

    def summary(self) -> dict:
        """Accuracy, per-class precision/recall/F1/support, confusion matrix and ROC-AUC (JSON-ready)."""
        matrix = confusion_matrix(self.labels, self.predicted, len(self.classes))
        per_class = {}
        for index, label in enumerate(self.classes):
            hits, predicted, actual = matrix[index, index], matrix[:, index].sum(), matrix[index].sum()
            precision = hits / predicted if predicted else 0.0
            recall = hits / actual if actual else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            per_class[label] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                                "support": int(actual)}
        auc = roc_auc(self.labels, self.probs[:, 1]) if len(self.classes) == 2 else float("nan")
        return {"split": self.split, "model_id": self.model_id, "windows": int(len(self.labels)),
                "accuracy": float(np.trace(matrix) / max(matrix.sum(), 1)), "per_class": per_class,
                "confusion_matrix": {"labels": list(self.classes), "rows": "true", "columns": "predicted",
                                     "counts": matrix.tolist()},
                "roc_auc": None if np.isnan(auc) else auc, "log_loss": log_loss(self.labels, self.probs),
                "ece": expected_calibration_error(self.labels, self.probs)}

    def write(self, out_dir: str | os.PathLike) -> dict:
        """Write the evaluation files (module docstring) into ``out_dir``; return :meth:`summary`."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = self.summary()
        (out_dir / EVALUATION_FILE).write_text(json.dumps(summary, indent=1))
        (out_dir / CONFUSION_JSON).write_text(json.dumps(summary["confusion_matrix"], indent=1))
        _plot_confusion(np.array(summary["confusion_matrix"]["counts"]), self.classes,
                        title=f"{self.split}: accuracy {summary['accuracy']:.3f}", path=out_dir / CONFUSION_PNG)
        with open(out_dir / MISCLASSIFIED_FILE, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MISCLASSIFIED_COLUMNS)
            writer.writeheader()
            writer.writerows(self.misclassified)
        return summary


def evaluate_shards(model: MscModel, paths: Sequence[str], *, split: str = "test", batch_size: int = 32,
                    batch_rows: int = 256) -> Evaluation:
    """Stream the labelled windows of ``split`` through ``model``.

    Parameters
    ----------
    model : MscModel
    paths : sequence of str
        Shard files; each must hold ``model.config``'s features.
    split : str
        Rows whose ``split`` column equals this; unlabelled rows are skipped.
    batch_size : int
        Windows per forward pass.
    batch_rows : int
        Rows read from Parquet at a time (bounds memory with ``batch_size``).

    Raises
    ------
    FeatureConfigMismatchError
        A shard's features differ from the model's.
    InputError
        The split holds no labelled windows.
    """
    classes = pa.array(list(model.labels))
    labels, scores, wrong = [], [], []
    columns = ("codes", "label", "path", "start_s")
    for batch in iter_batches(paths, model.config, columns=columns, batch_rows=batch_rows, filter_split=split):
        batch = batch.filter(pc.fill_null(pc.is_in(batch.column("label"), classes), False))
        if not batch.num_rows:
            continue
        truth = pc.index_in(batch.column("label"), classes).to_numpy().astype(np.int64)
        probs = model.predict_codes(codes_from_arrow(batch.column("codes"), model.config), batch_size=batch_size)
        labels.append(truth)
        scores.append(probs)
        predicted = np.argmax(probs, axis=1)
        for row in np.flatnonzero(predicted != truth):
            wrong.append({"path": batch.column("path")[row].as_py(), "start_s": batch.column("start_s")[row].as_py(),
                          "true": model.labels[truth[row]], "predicted": model.labels[predicted[row]],
                          "p_predicted": float(probs[row, predicted[row]])})
    if not labels:
        raise InputError(f"the {split!r} split of these shards holds no labelled windows")
    return Evaluation(split, model.model_id, model.labels, np.concatenate(labels),
                      np.concatenate(scores).astype(np.float32), wrong)


def write_history(history: Sequence[Mapping[str, float]], out_dir: str | os.PathLike) -> None:
    """Write ``history.csv`` (one row per epoch) and ``training_curves.png`` (loss and accuracy).

    Parameters
    ----------
    history : sequence of mapping
        Rows with at least ``epoch, loss, accuracy, val_loss, val_accuracy``.
    out_dir : str or PathLike
    """
    from matplotlib.figure import Figure

    if not history:
        raise InputError("no training history to write")
    out_dir = Path(out_dir)
    with open(out_dir / HISTORY_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        axes.plot(epochs, [row[metric] for row in history], marker=".", label="train")
        axes.plot(epochs, [row[f"val_{metric}"] for row in history], marker=".", label="validation")
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.legend()
        axes.grid(alpha=0.3)
    figure.savefig(out_dir / CURVES_PNG, dpi=100)


def _plot_confusion(matrix: np.ndarray, classes: Sequence[str], *, title: str, path: Path) -> None:
    """A C x C heat map with counts, rows true, columns predicted."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 3.6), layout="constrained")
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    names = [name.replace("_", " ") for name in classes]
    axes.set_xticks(range(len(classes)), names, rotation=30 if len(classes) > 2 else 0)
    axes.set_yticks(range(len(classes)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.savefig(path, dpi=100)
