"""The ``msc`` command: a thin argparse front over the jobs and the library.

Each subcommand lives in its own module, which exposes ``add_parser(subparsers)``
(registering its arguments and ``func``) and does its imports lazily, so that
``msc --help`` stays fast and ``msc predict`` never starts Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules whose ``add_parser`` registers a subcommand, in help order.
SUBCOMMAND_MODULES = (
    "jobs.demo",
    "jobs.featurize",
    "jobs.train",
    "jobs.evaluate",
    "jobs.infer",
    "jobs.predict",
    "jobs.report",
    "jobs.features",
    "jobs.models",
)


#: Exit codes of ``msc`` (README: "Exit codes").
EXIT_OK, EXIT_FILES_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    """The full ``msc`` parser with every available subcommand; ``-v``/``-q`` work before or after it."""
    parser = argparse.ArgumentParser(prog="msc", description="Music/speech labelling for audio archives, on Ray.")
    _add_verbosity(parser, default=0)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        module.add_parser(subparsers)
    for subparser in subparsers.choices.values():
        _add_verbosity(subparser, default=argparse.SUPPRESS)  # after the command too, without resetting it
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, *, default) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
                       help="also Ray's, TensorFlow's and the workers' own logs, and msc's debug log")
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
                       help="no progress bars: only each command's summary line and errors")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``msc`` console script; returns the process exit code.

    Exit codes: 0 done; 1 done, but some input files failed (each has its error row); 2 an
    :class:`~msc_core.errors.MscError` (bad arguments or inputs, nothing to do, no space left), printed
    as one line; 130 interrupted (Ctrl-C): rerun the same command to resume.
    """
    from jobs import console

    args = build_parser().parse_args(argv)
    console.configure(args.verbosity)
    from msc_core.errors import MscError

    try:
        with console.interruptible(args.command, exit_code=EXIT_INTERRUPTED):
            return int(args.func(args) or EXIT_OK)
    except MscError as error:
        console.error(args.command, str(error))
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
