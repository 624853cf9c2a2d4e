"""``msc models ...``: manage msc model directories (see :mod:`msc_core.model`)."""

from __future__ import annotations

import argparse
import sys


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


def import_paper(args: argparse.Namespace) -> int:
    """Run ``msc models import-paper``."""
    from msc_core.model import import_paper_model

    try:
        model = import_paper_model(args.paper_dir, args.out)
    except FileExistsError as error:
        print(f"msc models import-paper: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: model {model.model_id} ({model.keras_model.count_params()} parameters, "
          f"features {model.config.hash})")
    return 0
