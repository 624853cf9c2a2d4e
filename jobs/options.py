"""Command-line options shared by several ``msc`` subcommands."""

from __future__ import annotations

import argparse


def add_window_arguments(parser: argparse.ArgumentParser, *, labelling: bool = False) -> None:
    """``--window first|all`` and ``--hop S`` (with ``labelling``: and ``--coarse S``): how files are cut
    into 5-s windows."""
    parser.add_argument("--window", choices=("all", "first"), default="all",
                        help="every window (default) or only the first 5 s, as in the paper")
    if not labelling:
        parser.add_argument("--hop", type=float, default=None, metavar="S",
                            help="seconds between window starts with --window all (default 5, back to back)")
        return
    parser.add_argument("--hop", type=float, default=None, metavar="S",
                        help="seconds between window starts with --window all (default 1: windows overlap and "
                             "boundaries land within a second; 5: back to back, fastest)")
    parser.add_argument("--coarse", type=float, default=None, metavar="S",
                        help="run the model on windows S seconds apart first, and on the windows in between only "
                             "where the content changes (default 5 with overlapping windows; 0: every window)")


def add_view_argument(parser: argparse.ArgumentParser) -> None:
    """``--labels all|binary``: every content class, or the paper's speech/music view."""
    parser.add_argument("--labels", dest="view", choices=("all", "binary"), default="all",
                        help="all: speech, music, speech_over_music, noise and silence (default); binary: the "
                             "paper's speech/music view (speech over music counts as speech, noise is left out), "
                             "with silence")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision auto|fp32|bf16``: the arithmetic of the model's convolutions."""
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="fp32",
                        help="the model's convolutions in float32 (default) or bfloat16, faster where the CPU "
                             "computes it natively (the model card gives what it changes); auto: bf16 where the CPU "
                             "has AVX512_BF16 or AMX, fp32 elsewhere")


def window_config(args: argparse.Namespace):
    """The paper's :class:`~msc_core.config.FeatureConfig` with the window policy ``args`` ask for.

    The one rule of every job (:func:`msc_core.labelling.window_config`): a hop
    shorter than the window is rounded to whole STFT frames.

    Raises
    ------
    InputError
        ``--hop`` with ``--window first``, or a hop that is not positive.
    """
    from msc_core.errors import InputError
    from msc_core.labelling import window_config as config_of

    if args.hop is not None and args.window == "first":
        raise InputError("--hop applies to --window all only")
    try:
        return config_of(args.window, args.hop)
    except ValueError as error:
        raise InputError(str(error)) from error


def labelling_windows(args: argparse.Namespace):
    """The windows ``msc infer`` and ``msc predict`` label from, and their first pass
    (:func:`msc_core.labelling.labelling_windows`).

    Returns
    -------
    config : FeatureConfig
    coarse_s : float or None

    Raises
    ------
    InputError
        ``--hop`` with ``--window first``, a hop that is not positive, or a ``--coarse`` that cannot apply.
    """
    from msc_core.errors import InputError
    from msc_core.labelling import labelling_windows as windows_of

    window_config(args)  # refuses a bad --window/--hop in the same words as every job
    try:
        return windows_of(args.window, args.hop, args.coarse)
    except ValueError as error:
        raise InputError(str(error).replace("window 'all'", "--window all")) from error


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """``--file-timeout S``, ``--max-windows N`` and ``--no-isolation``: the bounds on one file."""
    from msc_core.audio import DecodeLimits

    defaults = DecodeLimits()
    parser.add_argument("--file-timeout", type=float, default=defaults.max_decode_s, metavar="S",
                        help=f"wall-clock seconds to decode and featurize one file (default {defaults.max_decode_s:g}); "
                             "a file over it is killed with its decoder and gets an error row")
    parser.add_argument("--max-windows", type=int, default=defaults.max_windows, metavar="N",
                        help=f"most windows taken from one file (default {defaults.max_windows}); "
                             "a file cut there is flagged as truncated in the outputs")
    parser.add_argument("--no-isolation", action="store_true",
                        help="decode in the worker itself instead of a supervised child process: slightly faster, "
                             "but --file-timeout is then checked only between decode blocks, so a decoder hung "
                             "inside one call is never cut off")


def decode_limits(args: argparse.Namespace):
    """The :class:`~msc_core.audio.DecodeLimits` that ``--file-timeout`` and ``--max-windows`` ask for.

    Raises
    ------
    InputError
        A timeout or window count that is not positive.
    """
    from msc_core.audio import DecodeLimits
    from msc_core.errors import InputError

    if args.file_timeout <= 0 or args.max_windows < 1:
        raise InputError("--file-timeout and --max-windows must be positive")
    return DecodeLimits(max_decode_s=args.file_timeout, max_windows=args.max_windows)
