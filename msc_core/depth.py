"""The paper's depth-layer representation, vectorized over batches of windows.

Pipeline for one window of ``config.window_samples`` mono samples
(PREPROCESSING.md steps 3-10)::

    samples (N,) -> mel power (n_mels, 216) -> dB, floor top_db -> min-max [0, 1]
      -> crop/pad to frames (n_mels, 215) -> colormap index uint8   <- the compact code
      -> luma of the colour -> one-hot over depth layers -> (layers, n_mels, frames, 1)

Everything after the colormap index is a pure function of that byte, so msc
stores one uint8 per pixel (27,520 bytes per window) and rebuilds the exact
float32 tensor with :func:`decode` (NumPy) or :func:`decode_tf` (TensorFlow,
for tf.data pipelines and the model's first layer).
"""

from __future__ import annotations

import functools

import librosa
import numpy as np

from .config import FeatureConfig

COLORMAP_SIZE = 256
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney mel filter bank, float32 of shape (n_mels, 1 + n_fft // 2)."""
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


def normalized_spectrograms(windows: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Steps 3-6: min-max normalized dB mel spectrograms at a fixed frame count.

    Parameters
    ----------
    windows : np.ndarray, shape (B, config.window_samples) or (config.window_samples,)
        Mono float samples at ``config.sample_rate``.
    config : FeatureConfig

    Returns
    -------
    np.ndarray, float32, shape (B, n_mels, frames) (no batch axis for 1-D input)
        Values in [0, 1]; an all-constant window gives zeros.
    """
    windows = np.asarray(windows, dtype=np.float32)
    single = windows.ndim == 1
    batch = windows[None] if single else windows
    fixed = _normalized_from_power(_power(batch, config), config)
    return fixed[0] if single else fixed


def shares_stft(hop_samples: int, config: FeatureConfig) -> bool:
    """Whether windows ``hop_samples`` apart can share one STFT (:func:`featurize_hopped`).

    They can when they overlap and each window starts on the STFT frame grid
    of the first: ``hop_samples`` is a multiple of ``config.hop_length``
    (512 samples, 23.2 ms), e.g. 43 frames = 22,016 samples = 0.9985 s.
    """
    return 0 < hop_samples < config.window_samples and hop_samples % config.hop_length == 0


def featurize_hopped(windows: np.ndarray, *, hop_samples: int, config: FeatureConfig) -> np.ndarray:
    """:func:`featurize` of consecutive windows of one signal, with one STFT for all of them.

    The windows' signal is rebuilt from the rows, transformed once, and each
    window takes its frames from that transform; only the three frames per
    window that see the window's own zero padding (the first two and the last
    kept) are transformed again from the window. The paper's per-window steps
    (mel, dB against the window's peak, min-max, crop, colormap index) then run
    on each window's slice exactly as :func:`featurize` runs them, so the codes
    are bit-equal to ``featurize(windows, config)`` and to featurizing each
    window alone. When
    :func:`shares_stft` is false, this is :func:`featurize`.

    Parameters
    ----------
    windows : np.ndarray, float, shape (B, config.window_samples)
        Window ``i`` holds the signal from ``i * hop_samples`` on (zero-padded
        after the signal's end), as :meth:`msc_core.audio.AudioStream.windows` cuts them.
    hop_samples : int
        Samples between window starts.
    config : FeatureConfig

    Returns
    -------
    np.ndarray, uint8, shape (B, n_mels, frames)
    """
    windows = np.asarray(windows, dtype=np.float32)
    if len(windows) < 2 or not shares_stft(hop_samples, config):
        return featurize(windows, config)
    size, step = config.window_samples, config.hop_length
    signal = np.concatenate([windows[:-1, :hop_samples].ravel(), windows[-1]])
    shared = _power(signal, config)                      # (bins, signal frames)
    per_window = 1 + size // step                        # frames of one window's centred STFT
    offsets = np.arange(len(windows))[:, None] * (hop_samples // step) + np.arange(per_window)
    power = np.moveaxis(shared[:, offsets], 0, 1)         # (B, bins, per_window)
    edge = config.n_fft // (2 * step)                    # frames whose span reaches before the window
    tail_frame = (size - config.n_fft // 2) // step + 1  # first frame whose span reaches past its end
    head = _power(windows[:, :(edge + 2) * step + config.n_fft // 2], config)
    power[:, :, :edge] = head[:, :, :edge]
    tail_start = (tail_frame - edge - 2) * step
    tail = _power(windows[:, tail_start:], config)
    power[:, :, tail_frame:] = tail[:, :, tail_frame - tail_start // step:]
    return encode(_normalized_from_power(power, config))


def featurize_at(signal: np.ndarray, starts: np.ndarray, *, config: FeatureConfig,
                 batch_windows: int = 16) -> np.ndarray:
    """:func:`featurize` of the windows of ``signal`` that start at ``starts``, the others never computed.

    Window ``i`` holds ``signal[starts[i]:starts[i] + config.window_samples]``,
    zero-padded after the signal's end, as
    :meth:`msc_core.audio.AudioStream.windows` cuts it. Runs of windows equally
    spaced share one STFT (:func:`featurize_hopped`), in batches of at most
    ``batch_windows``; the codes are bit-equal to featurizing each window alone.

    Parameters
    ----------
    signal : np.ndarray, float, shape (N,)
        Mono samples at ``config.sample_rate``.
    starts : np.ndarray, int, shape (K,)
        Window starts (samples into ``signal``), increasing.
    config : FeatureConfig
    batch_windows : int
        Most windows featurized together (memory: 0.44 MB of samples per window at the paper's settings).

    Returns
    -------
    np.ndarray, uint8, shape (K, n_mels, frames)
    """
    signal = np.asarray(signal, dtype=np.float32)
    starts = np.asarray(starts, dtype=np.int64)
    size = config.window_samples
    codes = np.empty((len(starts), config.n_mels, config.frames), np.uint8)
    first = 0
    while first < len(starts):
        last = first + 1                                 # one run: [first, last), equally spaced
        step = int(starts[last] - starts[first]) if last < len(starts) else 0
        while last < len(starts) and last - first < batch_windows and starts[last] - starts[last - 1] == step:
            last += 1
        windows = np.zeros((last - first, size), np.float32)
        for row, start in enumerate(starts[first:last]):
            audio = signal[start:start + size]
            windows[row, :len(audio)] = audio
        codes[first:last] = featurize_hopped(windows, hop_samples=step, config=config)
        first = last
    return codes


def _power(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Centred, zero-padded STFT power of the last axis: shape (..., 1 + n_fft // 2, frames)."""
    spectrum = librosa.stft(samples, n_fft=config.n_fft, hop_length=config.hop_length)
    return np.abs(spectrum) ** 2


def _normalized_from_power(power: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Steps 4-6 of a batch of power spectrograms (B, bins, T): mel, dB, min-max, crop to ``frames``."""
    basis = _mel_basis(config.sample_rate, config.n_fft, config.n_mels)
    # One product per window, as librosa computes it for one window: a batched product may take
    # another BLAS kernel (seen on AMD EPYC) and differ from the single-window path in the last bit.
    mel = np.stack([np.einsum("ft,mf->mt", window_power, basis, optimize=True) for window_power in power])
    db = _power_to_db_per_window(mel, top_db=config.top_db)
    return _fix_frames(_min_max_per_window(db), config.frames)


def _power_to_db_per_window(power: np.ndarray, *, top_db: float, amin: float = 1e-10) -> np.ndarray:
    """``librosa.power_to_db(S, ref=np.max, top_db=top_db)`` applied to each (M, T) slice."""
    peak = power.max(axis=(-2, -1), keepdims=True)
    db = 10.0 * np.log10(np.maximum(amin, power))
    db -= 10.0 * np.log10(np.maximum(amin, peak))
    return np.maximum(db, db.max(axis=(-2, -1), keepdims=True) - top_db)


def _min_max_per_window(x: np.ndarray) -> np.ndarray:
    """``(x - min) / (max - min)`` per (M, T) slice, clipped to [0, 1]; a flat slice gives zeros."""
    low = x.min(axis=(-2, -1), keepdims=True)
    span = x.max(axis=(-2, -1), keepdims=True) - low
    span = np.where(span == 0, 1, span)
    return np.clip((x - low) / span, 0, 1).astype(np.float32)


def _fix_frames(x: np.ndarray, frames: int) -> np.ndarray:
    """Cut the time axis from the middle, or zero-pad it on both sides, to ``frames``."""
    have = x.shape[-1]
    if have >= frames:
        start = (have - frames) // 2
        return x[..., start:start + frames]
    left = (frames - have) // 2
    pad = [(0, 0)] * (x.ndim - 1) + [(left, frames - have - left)]
    return np.pad(x, pad)


def encode(normalized: np.ndarray) -> np.ndarray:
    """Step 7: colormap index ``min(floor(x * 256), 255)`` of each value, as uint8.

    Parameters
    ----------
    normalized : np.ndarray, float, any shape, values in [0, 1]

    Returns
    -------
    np.ndarray, uint8, same shape
    """
    scaled = np.floor(np.asarray(normalized, dtype=np.float32) * COLORMAP_SIZE)
    return np.clip(scaled, 0, COLORMAP_SIZE - 1).astype(np.uint8)


def featurize(windows: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Compact codes of a batch of windows: :func:`encode` of :func:`normalized_spectrograms`.

    Parameters
    ----------
    windows : np.ndarray, shape (B, config.window_samples) or (config.window_samples,)

    Returns
    -------
    np.ndarray, uint8, shape (B, n_mels, frames) (no batch axis for 1-D input)
    """
    return encode(normalized_spectrograms(windows, config))


@functools.lru_cache(maxsize=8)
def depth_tables(colormap: str = "viridis", layers: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Steps 8-9 as lookup tables over the 256 colormap indices.

    Returns
    -------
    layer_of : np.ndarray, int32, shape (256,)
        Depth layer that a pixel of each index lands in (-1 where none: intensity 1.0).
    intensity_of : np.ndarray, float32, shape (256,)
        Luma ``0.299 R + 0.587 G + 0.114 B`` of each colormap entry.
    """
    import matplotlib

    rgb = np.asarray(matplotlib.colormaps[colormap].resampled(COLORMAP_SIZE)(np.arange(COLORMAP_SIZE)))[:, :3]
    intensity = rgb @ _LUMA_WEIGHTS
    edges = np.linspace(0, 1, layers + 1)
    layer_of = np.searchsorted(edges, intensity, side="right") - 1
    layer_of = np.where((layer_of >= 0) & (layer_of < layers), layer_of, -1).astype(np.int32)
    for table in (layer_of, intensity):
        table.setflags(write=False)
    return layer_of, intensity.astype(np.float32)


def decode(codes: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Rebuild the exact float32 depth tensor from compact codes (NumPy).

    Parameters
    ----------
    codes : np.ndarray, uint8, shape (..., n_mels, frames)

    Returns
    -------
    np.ndarray, float32, shape (..., layers, n_mels, frames, 1)
        Layer ``i`` holds a pixel's intensity where the pixel falls in bin ``i``, else 0.
    """
    layer_of, intensity_of = depth_tables(config.colormap, config.layers)
    codes = np.asarray(codes)
    pixel_layer = layer_of[codes][..., None, :, :]
    layer_ids = np.arange(config.layers).reshape(config.layers, 1, 1)
    dense = np.where(pixel_layer == layer_ids, intensity_of[codes][..., None, :, :], np.float32(0))
    return dense[..., None]


def decode_tf(codes, config: FeatureConfig):
    """Rebuild the exact float32 depth tensor from compact codes (TensorFlow).

    Usable inside ``tf.data`` maps and Keras layers.

    Parameters
    ----------
    codes : tf.Tensor, uint8 or integer, shape (..., n_mels, frames)

    Returns
    -------
    tf.Tensor, float32, shape (..., layers, n_mels, frames, 1)
    """
    import tensorflow as tf

    layer_of, intensity_of = depth_tables(config.colormap, config.layers)
    index = tf.cast(codes, tf.int32)
    pixel_layer = tf.expand_dims(tf.gather(tf.constant(layer_of), index), axis=-3)
    intensity = tf.expand_dims(tf.gather(tf.constant(intensity_of), index), axis=-3)
    layer_ids = tf.reshape(tf.range(config.layers, dtype=tf.int32), (config.layers, 1, 1))
    dense = tf.where(tf.equal(pixel_layer, layer_ids), intensity, tf.zeros_like(intensity))
    return tf.expand_dims(dense, axis=-1)
