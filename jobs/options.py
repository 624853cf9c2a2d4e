"""Command-line options shared by several ``msc`` subcommands."""

from __future__ import annotations

import argparse


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """``--window first|all`` and ``--hop S``: how files are cut into 5-s windows."""
    parser.add_argument("--window", choices=("all", "first"), default="all",
                        help="every window (default) or only the first 5 s, as in the paper")
    parser.add_argument("--hop", type=float, default=None, metavar="S",
                        help="seconds between window starts with --window all (default 5, back to back)")


def window_config(args: argparse.Namespace):
    """The paper's :class:`~msc_core.config.FeatureConfig` with the window policy ``args`` ask for.

    Raises
    ------
    InputError
        ``--hop`` with ``--window first``, or a hop that is not positive.
    """
    from msc_core.config import PAPER
    from msc_core.errors import InputError

    if args.hop is not None and args.window == "first":
        raise InputError("--hop applies to --window all only")
    try:
        return PAPER.with_window(mode=args.window, hop_seconds=args.hop)
    except ValueError as error:
        raise InputError(str(error)) from error
