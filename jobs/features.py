"""``msc features FILE --png OUT.png [--start S]``: look at one window's depth layers."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from msc_core.config import PAPER, FeatureConfig
from msc_core.errors import InputError

if TYPE_CHECKING:
    import numpy as np


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``msc features``."""
    parser = subparsers.add_parser(
        "features", help="draw one window's spectrogram and depth layers to a PNG",
        description="Decode the window of FILE that starts at --start, featurize it with the paper's settings, "
                    "write a PNG of the normalized mel spectrogram and its depth layers, and print how many "
                    "pixels each layer holds.")
    parser.add_argument("file", metavar="FILE", help="audio file (path or fsspec URI)")
    parser.add_argument("--png", required=True, metavar="OUT.png", help="picture to write")
    parser.add_argument("--start", type=float, default=0.0, metavar="S",
                        help="window start in seconds (default 0: the paper's first window)")
    parser.set_defaults(func=run)


def window_at(source: str, config: FeatureConfig, start_s: float) -> tuple[float, np.ndarray]:
    """The window of ``source`` that starts at ``start_s`` seconds.

    Returns
    -------
    start_s : float
        Actual start (s), ``start_s`` rounded to a sample at ``config.sample_rate``.
    samples : np.ndarray, float32, shape (config.window_samples,)
        Mono samples, zero-padded past the end of the audio.

    Raises
    ------
    InputError
        ``start_s`` is negative or lies past the end of the audio.
    """
    from msc_core.audio import read_windows

    if start_s < 0:
        raise InputError(f"--start must be >= 0, not {start_s}")
    # Windows every start_s seconds stream the file and make the second one start at start_s.
    at_zero = round(start_s * config.sample_rate) == 0
    policy = (config.with_window(mode="first") if at_zero
              else config.with_window(mode="all", hop_seconds=start_s, min_last_seconds=0))
    wanted = 0 if at_zero else 1
    windows = ((start, samples) for batch in read_windows(source, policy, batch_windows=2)
               for start, samples in zip(batch.start_s, batch.samples))
    for index, window in enumerate(windows):
        if index == wanted:
            return window
    raise InputError(f"{source}: no audio at {start_s} s")


def run(args: argparse.Namespace) -> int:
    """Featurize the window, write the PNG and print the pixels per layer."""
    import numpy as np

    from msc_core.depth import decode, encode, normalized_spectrograms
    from msc_core.plots import plot_depth_layers

    start_s, samples = window_at(args.file, PAPER, args.start)
    normalized = normalized_spectrograms(samples, PAPER)
    codes = encode(normalized)
    plot_depth_layers(normalized, codes, PAPER, title=f"{args.file} at {start_s:.2f} s", path=args.png)
    counts = np.count_nonzero(decode(codes, PAPER), axis=(-3, -2, -1))
    print(f"wrote {args.png} (window at {start_s:.2f} s)")
    for layer, count in enumerate(counts):
        print(f"layer {layer}: {count} px")
    return 0
