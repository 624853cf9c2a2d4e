"""The paper's depth layers against the authors' own outputs (../shared/reference/golden),
and the lossless one-byte-per-pixel encoding rebuilt in NumPy and in TensorFlow."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from msc_core import audio, depth
from msc_core.config import PAPER

FIRST = PAPER.with_window(mode="first")


@pytest.fixture(scope="module")
def golden(golden_dir):
    """Per golden input: its path, the authors' arrays and its summary.json entry."""
    summary = json.loads((golden_dir / "summary.json").read_text())
    cases = {}
    for name, entry in summary.items():
        path = golden_dir / "inputs" / name
        with np.load(golden_dir / f"{path.stem}.npz") as arrays:
            cases[name] = dict(path=path, summary=entry, normalized=arrays["normalized"], depth=arrays["depth"])
    assert len(cases) == 5
    return cases


@pytest.fixture(scope="module")
def ours(golden):
    """Per golden input: msc's first window, normalized spectrogram, codes and depth tensor."""
    result = {}
    for name, case in golden.items():
        batches = list(audio.read_windows(case["path"], FIRST))
        assert len(batches) == 1 and batches[0].samples.shape == (1, FIRST.window_samples)
        window = batches[0].samples[0]
        normalized = depth.normalized_spectrograms(window, FIRST)
        codes = depth.encode(normalized)
        result[name] = dict(window=window, normalized=normalized, codes=codes, depth=depth.decode(codes, FIRST))
    return result


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def test_golden_inputs_are_the_summarized_files(golden):
    for case in golden.values():
        assert hashlib.sha256(case["path"].read_bytes()).hexdigest() == case["summary"]["sha256"]


def test_normalized_spectrogram_matches_golden(golden, ours):
    for name, case in golden.items():
        mine = ours[name]["normalized"]
        assert mine.dtype == np.float32 and mine.shape == (128, 215)
        np.testing.assert_allclose(mine, case["normalized"], rtol=0, atol=1e-5, err_msg=name)


def test_depth_tensor_matches_golden_pixel_for_pixel(golden, ours):
    for name, case in golden.items():
        mine = ours[name]["depth"]
        assert mine.dtype == np.float32 and mine.shape == PAPER.tensor_shape
        same_cell = depth.encode(case["normalized"]) == ours[name]["codes"]
        pixel_differs = (mine != case["depth"]).any(axis=(0, 3))
        print(f"{name}: {int(pixel_differs.sum())} of {pixel_differs.size} pixels differ, "
              f"{int((~same_cell).sum())} in another colormap cell")
        assert not (pixel_differs & same_cell).any(), name
        assert not pixel_differs.any(), name  # measured: exact on every golden file


def test_nonzero_per_layer_matches_summary(golden, ours):
    for name, case in golden.items():
        counts = np.count_nonzero(ours[name]["depth"], axis=(1, 2, 3))
        assert counts.tolist() == case["summary"]["nonzero_per_layer"], name
        assert list(ours[name]["depth"].shape) == case["summary"]["depth_shape"]


def test_decode_of_golden_codes_is_bit_exact(golden, tf):
    for name, case in golden.items():
        codes = depth.encode(case["normalized"])
        np.testing.assert_array_equal(depth.decode(codes, PAPER), case["depth"], err_msg=name)
        np.testing.assert_array_equal(depth.decode_tf(codes, PAPER).numpy(), case["depth"], err_msg=name)


def test_numpy_and_tensorflow_decoders_agree_on_every_code(tf):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, size=(3, 128, 215), dtype=np.uint8)
    codes.reshape(-1)[:256] = np.arange(256)  # every value at least once
    dense = depth.decode(codes, PAPER)
    assert dense.shape == (3, *PAPER.tensor_shape) and dense.dtype == np.float32
    np.testing.assert_array_equal(dense, depth.decode_tf(codes, PAPER).numpy())
    # each pixel lives in exactly one layer, with its colour's intensity
    layer_of, intensity_of = depth.depth_tables(PAPER.colormap, PAPER.layers)
    assert (layer_of >= 0).all()
    np.testing.assert_array_equal(dense.sum(axis=(1, 4)), intensity_of[codes])
    np.testing.assert_array_equal(np.count_nonzero(dense, axis=(1, 4)), 1)


def test_tensorflow_decoder_inside_a_tf_data_map(tf):
    codes = np.random.default_rng(1).integers(0, 256, size=(4, 128, 215), dtype=np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices(codes).batch(2).map(lambda c: depth.decode_tf(c, PAPER))
    rebuilt = np.concatenate([batch.numpy() for batch in dataset])
    np.testing.assert_array_equal(rebuilt, depth.decode(codes, PAPER))


def test_encoding_is_one_byte_per_pixel(ours):
    codes = next(iter(ours.values()))["codes"]
    assert codes.dtype == np.uint8 and codes.nbytes == 27_520
    assert np.prod(PAPER.tensor_shape) * 4 == 880_640  # the dense tensor it stands for: 32x larger


def test_encode_takes_the_colormap_cell():
    values = np.array([0.0, 0.5 / 256, 1 / 256, 0.5, 255.5 / 256, 1.0], np.float32)
    np.testing.assert_array_equal(depth.encode(values), [0, 0, 1, 128, 255, 255])


def test_batch_api_equals_window_by_window(ours):
    windows = np.stack([case["window"] for case in ours.values()])
    batch_normalized = depth.normalized_spectrograms(windows, FIRST)
    batch_codes = depth.featurize(windows, FIRST)
    assert batch_codes.shape == (len(windows), 128, 215) and batch_codes.dtype == np.uint8
    for row, case in enumerate(ours.values()):
        np.testing.assert_array_equal(batch_normalized[row], case["normalized"])
        np.testing.assert_array_equal(batch_codes[row], case["codes"])
    np.testing.assert_array_equal(depth.decode(batch_codes, FIRST), np.stack([c["depth"] for c in ours.values()]))


def test_silent_window_gives_zeros_in_layer_zero():
    codes = depth.featurize(np.zeros((2, PAPER.window_samples), np.float32), PAPER)
    assert not codes.any()
    dense = depth.decode(codes, PAPER)
    assert np.count_nonzero(dense[:, 0]) == 2 * 27_520 and not dense[:, 1:].any()


def test_windows_sharing_one_stft_give_the_exact_codes(golden, ours):
    """featurize_hopped is featurize, bit for bit, on the golden files' overlapping windows (padded tails too)."""
    config = PAPER.with_window(hop_seconds=43 * PAPER.hop_length / PAPER.sample_rate, min_last_seconds=0)
    assert depth.shares_stft(config.hop_samples, config) and not depth.shares_stft(22050, config)
    for name, case in golden.items():
        rows = np.concatenate([batch.samples for batch in audio.read_windows(case["path"], config)])
        assert len(rows) >= 2, name
        shared = depth.featurize_hopped(rows, hop_samples=config.hop_samples, config=config)
        np.testing.assert_array_equal(shared, depth.featurize(rows, config), err_msg=name)
        np.testing.assert_array_equal(depth.decode(shared[0], config), case["depth"], err_msg=name)


def test_hops_off_the_frame_grid_fall_back_to_one_stft_per_window():
    rows = np.random.default_rng(2).standard_normal((3, PAPER.window_samples)).astype(np.float32)
    np.testing.assert_array_equal(depth.featurize_hopped(rows, hop_samples=22050, config=PAPER),
                                  depth.featurize(rows, PAPER))


def test_windows_featurized_where_read_give_the_exact_codes(golden):
    """featurize_at of any windows of a signal is featurize of those windows, bit for bit: every window,
    every fifth (one STFT for windows 4.99 s apart), scattered ones and runs, the padded tail included."""
    config = PAPER.with_window(hop_seconds=43 * PAPER.hop_length / PAPER.sample_rate, min_last_seconds=0)
    for name, case in golden.items():
        signal = audio.load_audio(case["path"], sample_rate=config.sample_rate)
        starts = np.arange(0, len(signal), config.hop_samples)
        rows = np.zeros((len(starts), config.window_samples), np.float32)
        for row, start in zip(rows, starts):
            row[:len(signal[start:start + config.window_samples])] = signal[start:start + config.window_samples]
        every = depth.featurize(rows, config)
        scattered = np.unique(np.minimum([0, 2, 3, 4, len(starts) - 1], len(starts) - 1))
        picks = [np.arange(len(starts)), np.arange(0, len(starts), 5), scattered]
        for pick in picks:
            np.testing.assert_array_equal(depth.featurize_at(signal, starts[pick], config=config, batch_windows=3),
                                          every[pick], err_msg=name)
