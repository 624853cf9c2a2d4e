"""``msc predict FILE...``: label a few files right here, with no Ray at all.

Prints each file's label, confidence and segments, or with ``--json`` a JSON
list of objects with the ``predictions.csv`` fields plus ``segments``. Files
are decoded in a supervised child process, killed when one takes longer than
``--file-timeout`` (that file then fails). Exit code 0 when every file was
labelled, 1 when some could not be decoded.
"""

from __future__ import annotations

import argparse
import json

from jobs.options import (add_limit_arguments, add_precision_argument, add_view_argument, add_window_arguments,
                          decode_limits, labelling_windows)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``msc predict``."""
    parser = subparsers.add_parser(
        "predict", help="label a few files locally (no Ray), with segments",
        description="Label audio files in this process: label, confidence and segments (speech, music, "
                    "speech over music, noise, silence).")
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files (paths or fsspec URIs)")
    parser.add_argument("--model", default=None, metavar="MODEL_DIR",
                        help="msc model directory (default: the model bundled with msc)")
    add_window_arguments(parser, labelling=True)
    add_view_argument(parser)
    add_limit_arguments(parser)
    add_precision_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Label each file and print the results; 1 if any file failed."""
    from msc_core.engine import process_file
    from msc_core.isolation import shared_child
    from msc_core.labelling import FileLabel, format_label, label_dict, label_features, load_model, warm_up

    config, coarse_s = labelling_windows(args)  # refuses bad options before the model loads
    limits = decode_limits(args)
    model = load_model(args.model, precision=args.precision)
    child = None if args.no_isolation else shared_child(warm_up=warm_up)
    labels = []
    for path in args.files:  # the jobs' per-file step, so that a file fails here as it fails in msc infer
        result = process_file(path, config, limits=limits, child=child)
        labels.append(FileLabel.failed(path, result.message, model_id=model.model_id, feature_hash=model.config.hash)
                      if result.features is None else
                      label_features(result.features, model, view=args.view, coarse_s=coarse_s))
    if args.json:
        print(json.dumps([label_dict(label) for label in labels], indent=1))
    else:
        print("\n".join(format_label(label) for label in labels))
    return 1 if any(label.status != "ok" for label in labels) else 0
