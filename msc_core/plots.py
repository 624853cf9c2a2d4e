"""Pictures of the depth-layer representation, drawn off screen (Agg, no display needed)."""

from __future__ import annotations

import os

import numpy as np

from .config import FeatureConfig
from .depth import decode


def plot_depth_layers(normalized: np.ndarray, codes: np.ndarray, config: FeatureConfig, *,
                      title: str, path: str | os.PathLike) -> None:
    """Write one PNG: the normalized mel spectrogram and each depth layer of one window.

    Parameters
    ----------
    normalized : np.ndarray, float, shape (n_mels, frames)
        Min-max normalized dB mel spectrogram in [0, 1]
        (:func:`msc_core.depth.normalized_spectrograms`).
    codes : np.ndarray, uint8, shape (n_mels, frames)
        Its colormap indices (:func:`msc_core.depth.encode`).
    config : FeatureConfig
        Gives the colormap and the number of layers.
    title : str
        Figure title, e.g. the file and the window start.
    path : str or PathLike
        PNG file to write.
    """
    from matplotlib.figure import Figure

    layers = decode(codes, config)[..., 0]                       # (layers, n_mels, frames)
    panels = [("normalized mel spectrogram", normalized, config.colormap)]
    panels += [(f"layer {i}: {np.count_nonzero(layer)} px", layer, "magma") for i, layer in enumerate(layers)]
    columns = 3
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.2 * columns, 2.8 * rows), layout="constrained")
    figure.suptitle(title)
    grid = list(figure.subplots(rows, columns).flat)
    for axes, (name, image, colormap) in zip(grid, panels):
        shown = axes.imshow(image, origin="lower", aspect="auto", cmap=colormap, vmin=0, vmax=1,
                            interpolation="nearest")
        axes.set_title(name, fontsize=9)
        axes.set_xlabel("frame")
        axes.set_ylabel("mel band")
    for axes in grid[len(panels):]:
        axes.set_axis_off()
    figure.colorbar(shown, ax=grid[1:len(panels)], shrink=0.6, label="layer intensity (luma)")
    figure.savefig(path, dpi=100)
