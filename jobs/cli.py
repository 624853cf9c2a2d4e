"""The ``msc`` command: a thin argparse front over the jobs and the library.

Each subcommand lives in its own module, which exposes ``add_parser(subparsers)``
(registering its arguments and ``func``) and does its imports lazily, so that
``msc --help`` stays fast and ``msc predict`` never starts Ray.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

#: Modules whose ``add_parser`` registers a subcommand, in help order.
SUBCOMMAND_MODULES = (
    "jobs.demo",
    "jobs.featurize",
    "jobs.train",
    "jobs.evaluate",
    "jobs.infer",
    "jobs.predict",
    "jobs.features",
    "jobs.models",
)


def build_parser() -> argparse.ArgumentParser:
    """The full ``msc`` parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="msc", description="Music/speech labelling for audio archives, on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``msc`` console script; returns the process exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter (inherited by Ray workers)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from msc_core.errors import MscError

    try:
        return int(args.func(args) or 0)
    except MscError as error:
        print(f"msc {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
