"""``msc evaluate MODEL SHARDS --out DIR``: score any msc model on one split of featurized shards.

Writes the files of :mod:`msc_core.evaluation` (accuracy, per-class
precision/recall/F1, confusion matrix JSON and PNG, ROC-AUC, misclassified
windows). Works for trained models and the imported published model alike;
shards made with other features than the model's are refused before any
prediction. Runs in this process, streaming the split in batches (no Ray).
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``msc evaluate``."""
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a model directory on one split of featurized shards",
        description="Stream the labelled windows of --split through MODEL and write accuracy, per-class "
                    "precision/recall/F1, the confusion matrix (JSON and PNG), ROC-AUC and the misclassified "
                    "windows to --out.")
    parser.add_argument("model", metavar="MODEL", help="msc model directory")
    parser.add_argument("shards", metavar="SHARDS", help="featurized dataset: DIR with shards/part-*.parquet")
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the evaluation files")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per forward pass (default 32)")
    parser.set_defaults(func=run)


def evaluate(model_dir: str, shards: str, out: str, *, split: str = "test", batch_size: int = 32) -> dict:
    """Evaluate ``model_dir`` on ``split`` of ``shards`` and write the files into ``out``.

    Returns
    -------
    dict
        :meth:`msc_core.evaluation.Evaluation.summary`.

    Raises
    ------
    FeatureConfigMismatchError
        The shards' features differ from the model's.
    ModelLoadError, InputError
        Unusable model directory or shards.
    """
    from msc_core.evaluation import evaluate_shards
    from msc_core.model import load_model_dir
    from msc_core.shards import list_shards, read_feature_config

    paths = list_shards(shards)
    model = load_model_dir(model_dir, expected_config=read_feature_config(paths[0]))
    return evaluate_shards(model, paths, split=split, batch_size=batch_size).write(out)


def run(args: argparse.Namespace) -> int:
    """Run ``msc evaluate``."""
    summary = evaluate(args.model, args.shards, args.out, split=args.split, batch_size=args.batch_size)
    print(f"wrote {args.out}: {summary['split']} accuracy {summary['accuracy']:.3f} on {summary['windows']} windows, "
          f"ROC-AUC {summary['roc_auc']}")
    return 0


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))
