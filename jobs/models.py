"""``msc models ...``: manage msc model directories (see :mod:`msc_core.model`)."""

from __future__ import annotations

import argparse



def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``msc models`` and its subcommands."""
    parser = subparsers.add_parser("models", help="manage model directories",
                                   description="Manage msc model directories.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    paper = actions.add_parser(
        "import-paper", help="turn the published Keras model into an msc model directory",
        description="Load the published model (config.json + model.weights.h5) safely, put it behind the "
                    "compact-code decode stage and save it as an msc model directory.")
    paper.add_argument("paper_dir", metavar="DIR", help="directory holding config.json and model.weights.h5")
    paper.add_argument("--out", required=True, metavar="MODEL_DIR", help="model directory to create (must not exist)")
    paper.set_defaults(func=import_paper)
    calibrate = actions.add_parser(
        "calibrate", help="fit a confidence temperature on a held-out split and store it in the model",
        description="Fit the temperature T that minimises the log loss of the model's raw outputs on the "
                    "labelled windows of a held-out split (never the split it was trained on), and record it "
                    "in MODEL_DIR/model.json; every later prediction is softmax(log p / T). Labels never "
                    "change, only confidences. --temperature 1 removes it.")
    calibrate.add_argument("model_dir", metavar="MODEL_DIR")
    calibrate.add_argument("shards", metavar="SHARDS", nargs="?", help="featurized dataset holding the split")
    calibrate.add_argument("--split", default="val", help="split to fit on (default val)")
    calibrate.add_argument("--temperature", type=float, help="set T directly instead of fitting it")
    calibrate.set_defaults(func=calibrate_model)
    info = actions.add_parser(
        "info", help="say what a model is",
        description="Print what a model directory is: identity, classes, feature hash and settings, layer widths, "
                    "training data summary, stored evaluation and calibration (its JSON files only; fast).")
    info.add_argument("model_dir", metavar="MODEL", help="msc model directory (local path or URI)")
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    info.set_defaults(func=model_info)


def import_paper(args: argparse.Namespace) -> int:
    """Run ``msc models import-paper``."""
    from msc_core.model import import_paper_model

    model = import_paper_model(args.paper_dir, args.out)
    print(f"wrote {args.out}: model {model.model_id} ({model.keras_model.count_params()} parameters, "
          f"features {model.config.hash})")
    return 0


def calibrate_model(args: argparse.Namespace) -> int:
    """Run ``msc models calibrate``."""
    from msc_core.errors import ParameterError
    from msc_core.evaluation import evaluate_shards, expected_calibration_error, fit_temperature, log_loss
    from msc_core.labelling import load_model
    from msc_core.model import apply_temperature, set_temperature
    from msc_core.shards import list_shards

    if args.temperature is not None:
        set_temperature(args.model_dir, temperature=args.temperature, fitted_on={"set_by_hand": True})
        print(f"{args.model_dir}: temperature {args.temperature:g}")
        return 0
    if not args.shards:
        raise ParameterError("give SHARDS to fit on, or --temperature")
    raw = load_model(args.model_dir).uncalibrated()
    held_out = evaluate_shards(raw, list_shards(args.shards), split=args.split)
    temperature = fit_temperature(held_out.labels, held_out.probs)
    scaled = apply_temperature(held_out.probs, temperature)
    before = {"log_loss": log_loss(held_out.labels, held_out.probs),
              "ece": expected_calibration_error(held_out.labels, held_out.probs)}
    after = {"log_loss": log_loss(held_out.labels, scaled), "ece": expected_calibration_error(held_out.labels, scaled)}
    set_temperature(args.model_dir, temperature=temperature,
                    fitted_on={"shards": str(args.shards), "split": args.split, "windows": int(len(scaled)),
                               "before": before, "after": after})
    print(f"{args.model_dir}: temperature {temperature:.4g} fitted on {len(scaled)} {args.split} windows; "
          f"log loss {before['log_loss']:.4f} -> {after['log_loss']:.4f}, ECE {before['ece']:.4f} -> {after['ece']:.4f}")
    return 0


def model_info(args: argparse.Namespace) -> int:
    """Run ``msc models info``."""
    import json

    from msc_core.report import model_facts, model_info_lines

    facts = model_facts(args.model_dir)
    print(json.dumps(facts, indent=1) if args.json else "\n".join(model_info_lines(facts)))
    return 0
