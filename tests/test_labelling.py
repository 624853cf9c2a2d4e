"""The pure labelling layer: aggregation, segments, tables and the small Python API."""

from __future__ import annotations

import numpy as np
import pytest

from msc_core import synth
from msc_core.audio import DecodeLimits
from msc_core.config import PAPER
from msc_core.errors import ModelLoadError
from msc_core.labelling import (DEFAULT_MODEL_DIR, FileLabel, Segment, aggregate, class_probs, coarse_to_fine,
                                dominant_label, featurize_file, format_label, iter_pieces, label_array, label_dict,
                                label_file, label_tables, labelling_windows, load_model, segments_of,
                                window_config, window_weights)
from msc_core.model import MscModel, build_model
from tests.conftest import write_audio

RATE = PAPER.sample_rate


@pytest.fixture(scope="module")
def tiny_model() -> MscModel:
    """An untrained small model: enough to check plumbing, not labels."""
    return MscModel(build_model(PAPER, widths=(2, 2, 2), dense=(4, 4), seed=0), PAPER, {"model_id": "tiny", "labels": ["speech", "music"]})


def binary(probs: np.ndarray) -> np.ndarray:
    """[speech, music] window probabilities spread over the content classes."""
    return class_probs(probs, ("speech", "music"))


def test_segments_stand_for_window_centres_and_tile_the_file():
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.1, 0.9], [0.15, 0.85], [0.9, 0.1]])
    start = np.arange(5) * 5.0
    segments = segments_of(start, np.minimum(start + 5, 23.5), binary(probs), 23.5)
    # centres 2.5, 7.5, 12.5, 17.5, 21.75 (the last window holds 3.5 s of audio); the music probability,
    # interpolated between them, crosses 0.5 at 10 s and 19.48 s
    assert [s.label for s in segments] == ["speech", "music", "speech"]
    assert segments[0].start_s == 0.0 and segments[-1].end_s == 23.5
    assert [s.end_s for s in segments[:2]] == pytest.approx([10.0, 19.48], abs=0.3)
    # a weak stretch (0.6-0.7 for 9 s) is not worth two changes of class: smoothing keeps one segment
    weak = segments_of(start, np.minimum(start + 5, 23.5), binary(np.array(
        [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]])), 23.5)
    assert [s.label for s in weak] == ["speech"]
    assert all(s.end_s == round(s.end_s, 2) for s in segments)
    assert all(0.5 < s.confidence < 1 for s in segments)


def test_aggregate_means_windows_and_labels_by_dominant_segment():
    probs = class_probs(np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]), ("speech", "music"))
    label = aggregate("a.wav", start_s=np.array([0.0, 5, 10]), end_s=np.array([5.0, 10, 12]), duration_s=12.0,
                      probs=probs, model_id="m", feature_hash="h")
    assert label.label == "music"
    assert label.probability("music") == pytest.approx(1.6 / 3) and label.probability("speech") == pytest.approx(1.4 / 3)
    assert label.probability("noise") == label.fraction("noise") == label.seconds("noise") == 0
    music = [s for s in label.segments if s.label == "music"]
    assert label.confidence == pytest.approx(music[0].confidence) and len(music) == 1
    assert label.fraction("music") == pytest.approx(2 / 3) and label.fraction("speech") == pytest.approx(1 / 3)
    assert label.windows == 3 and label.status == "ok" and label.error is None
    assert [s.label for s in label.segments] == ["speech", "music"]
    assert label.segments[-1].end_s == 12.0


def test_the_label_is_the_content_class_with_the_most_seconds_or_silence():
    segments = [Segment(0, 6, "speech", 0.9), Segment(6, 10, "silence", 1.0), Segment(10, 13, "music", 0.6),
                Segment(13, 15, "music", 0.8)]
    assert dominant_label(segments) == ("speech", pytest.approx(0.9))
    assert dominant_label(segments[1:]) == ("music", pytest.approx((3 * 0.6 + 2 * 0.8) / 5))
    assert dominant_label([Segment(0, 3.5, "music", 0.7), Segment(3.5, 6, "speech", 0.8)])[0] == "music"
    assert dominant_label([Segment(0, 3, "speech", 0.7), Segment(3, 6, "music", 0.8)])[0] == "speech"  # a tie
    assert dominant_label([Segment(0, 12, "silence", 0.999)]) == ("silence", pytest.approx(0.999))


def test_silence_is_labelled_silence_not_speech_or_music(tmp_path, tiny_model):
    import soundfile as sf

    silent, half = tmp_path / "silent.wav", tmp_path / "half.wav"
    sf.write(silent, np.zeros(12 * 22050, np.float32), 22050)
    music = synth.music_like(8.0, sample_rate=22050, seed=1)
    sf.write(half, np.concatenate([np.zeros(6 * 22050, np.float32), music, np.zeros(6 * 22050, np.float32)]), 22050)
    label = label_file(silent, tiny_model)
    assert (label.label, label.seconds("silence"), label.segments[-1].end_s) == ("silence", 12.0, 12.0)
    label = label_file(half, tiny_model)
    assert label.seconds("silence") == pytest.approx(12.0, abs=0.1) and label.label in ("speech", "music")
    assert label.confidence == pytest.approx(next(s.confidence for s in label.segments if s.label == label.label))


def test_tables_hold_one_row_per_file_window_and_segment():
    ok = aggregate("a.wav", start_s=np.array([0.0, 5]), end_s=np.array([5.0, 7]), duration_s=7.0,
                   probs=binary(np.array([[0.95, 0.05], [0.05, 0.95]])), model_id="m", feature_hash="h")
    failed = FileLabel.failed("b.wav", "b.wav: empty file (0 bytes)", model_id="m", feature_hash="h")
    predictions, windows, segments = label_tables([ok, failed])
    assert predictions["path"].to_pylist() == ["a.wav", "b.wav"]
    assert predictions["status"].to_pylist() == ["ok", "error"]
    assert predictions["label"].to_pylist() == ["speech", None]  # centres 2.5 and 6 s: speech to 4.25 s, then music
    assert windows["end_s"].to_pylist() == [5.0, 7.0]
    assert segments.num_rows == 2 and segments["path"].to_pylist() == ["a.wav", "a.wav"]


def test_featurize_file_windows_and_duration(tmp_path):
    path = write_audio(tmp_path / "a.wav", "music", 12.0, sample_rate=16000)
    features = featurize_file(path, window_config("all"))
    assert features.codes.shape == (2, *PAPER.encoded_shape) and features.codes.dtype == np.uint8
    np.testing.assert_allclose(features.start_s, [0.0, 5.0])
    np.testing.assert_allclose(features.end_s, [5.0, 10.0])   # the 2-s tail is under min_last_seconds
    assert features.duration_s == pytest.approx(12.0)
    first = featurize_file(path, window_config("first"))
    assert len(first.codes) == 1 and first.duration_s == pytest.approx(12.0)
    np.testing.assert_array_equal(first.codes[0], features.codes[0])


@pytest.mark.parametrize("window, hop_s, max_windows", [("all", 1.0, 50_000), ("all", 5.0, 50_000),
                                                         ("first", None, 50_000), ("all", 1.0, 7)])
def test_lazy_features_keep_the_audio_and_featurize_any_window_exactly(tmp_path, window, hop_s, max_windows):
    """featurize_file(lazy=True) gives the same windows, and window_codes the same codes as featurizing
    every window, at a 1-s hop (one STFT), back to back, the first window only and cut by max_windows."""
    path = write_audio(tmp_path / "a.ogg", "music", 13.3, sample_rate=44100)
    config, limits = window_config(window, hop_s), DecodeLimits(max_windows=max_windows)
    eager = featurize_file(path, config, limits=limits, batch_windows=4)
    lazy = featurize_file(path, config, limits=limits, batch_windows=4, lazy=True)
    assert lazy.codes is None and lazy.signal.dtype == np.float32 and eager.signal is None
    for name in ("start_s", "end_s"):
        np.testing.assert_array_equal(getattr(lazy, name), getattr(eager, name))
    assert (lazy.duration_s, lazy.truncated_at_s) == (eager.duration_s, eager.truncated_at_s)
    every = np.arange(len(eager.start_s))
    for pick in (every, every[::5], every[1::3]):
        np.testing.assert_array_equal(lazy.window_codes(pick, config=config), eager.codes[pick])
        np.testing.assert_array_equal(eager.window_codes(pick, config=config), eager.codes[pick])


def test_pieces_hold_a_files_windows_and_audio_a_piece_at_a_time(tmp_path):
    """iter_pieces: pieces of 4 windows and the next one's first, the whole file's windows and codes between
    them, the final fields on the last piece only."""
    path = write_audio(tmp_path / "a.flac", "speech", 14.5, sample_rate=44100)
    config = window_config("all", 1.0)
    whole = featurize_file(path, config)
    pieces = list(iter_pieces(path, config, windows=4))
    assert len(whole.start_s) == 13 and [len(piece.start_s) for piece in pieces] == [5, 5, 5, 1]  # 4 + 1, ...
    assert all(np.isnan(piece.duration_s) and piece.cues is None for piece in pieces[:-1])
    assert pieces[-1].duration_s == whole.duration_s and pieces[-1].cues is not None
    for number, piece in enumerate(pieces):
        owned = slice(4 * number, 4 * number + len(piece.start_s))
        np.testing.assert_array_equal(piece.start_s, whole.start_s[owned])
        np.testing.assert_array_equal(piece.end_s, whole.end_s[owned])
        every = np.arange(len(piece.start_s))
        np.testing.assert_array_equal(piece.window_codes(every, config=config), whole.codes[owned])
    assert len(pieces[0].signal) == 4 * config.hop_samples + config.window_samples


def test_label_file_and_array_agree(tmp_path, tiny_model):
    samples = synth.speech_like(8.0, sample_rate=22050, seed=3)
    path = write_audio(tmp_path / "s.wav", "speech", 8.0, sample_rate=22050, seed=3, subtype="FLOAT")
    from_file = label_file(path, tiny_model, hop_s=2.5)
    from_array = label_array(samples, 22050, tiny_model, hop_s=2.5)
    assert from_file.windows == from_array.windows == 3
    np.testing.assert_allclose(from_file.window_probs, from_array.window_probs, rtol=1e-5, atol=1e-7)
    assert from_file.segments[0].start_s == 0 and from_file.segments[-1].end_s == pytest.approx(8.0)
    assert set(label_dict(from_file)) >= {"path", "label", "confidence", "segments"}


def test_label_file_reports_a_broken_file(tmp_path, tiny_model):
    broken = tmp_path / "text.wav"
    broken.write_text("not audio")
    label = label_file(broken, tiny_model)
    assert label.status == "error" and label.path == str(broken) and label.label is None
    assert label.error and "text.wav" not in label.error  # the path is in label.path, not repeated


def test_load_model_without_default_is_clear():
    if DEFAULT_MODEL_DIR.is_dir():
        pytest.skip("this msc bundles a default model")
    with pytest.raises(ModelLoadError, match="--model"):
        load_model()


def test_a_truncated_file_is_flagged_and_its_segments_stop_at_the_cut():
    label = aggregate("long.wav", start_s=np.array([0.0, 5.0]), end_s=np.array([5.0, 10.0]), duration_s=40.0,
                      probs=binary(np.array([[0.9, 0.1], [0.2, 0.8]])), model_id="m", feature_hash="h",
                      truncated_at_s=10.0)
    predictions, _, segments = label_tables([label, FileLabel.failed("bad.wav", "broken", model_id="m",
                                                                     feature_hash="h")])
    assert predictions.select(["truncated", "truncated_at_s", "duration_s"]).to_pylist() == [
        {"truncated": True, "truncated_at_s": 10.0, "duration_s": 40.0},
        {"truncated": False, "truncated_at_s": None, "duration_s": None}]
    assert segments["end_s"].to_pylist()[-1] == 10.0
    assert "only the first 2 windows, up to 10.0 s" in format_label(label)


def test_predictions_give_the_seconds_of_each_segment_label():
    label = aggregate("a.wav", start_s=np.array([0.0, 5, 10]), end_s=np.array([5.0, 10, 12]), duration_s=12.0,
                      probs=binary(np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])), model_id="m", feature_hash="h")
    predictions, _, _ = label_tables([label, FileLabel.failed("b.wav", "broken", model_id="m", feature_hash="h")])
    rows = predictions.select(["speech_s", "music_s", "silence_s"]).to_pylist()
    assert rows[0]["speech_s"] + rows[0]["music_s"] == pytest.approx(12.0) and rows[0]["silence_s"] == 0.0
    assert rows[0]["speech_s"] == pytest.approx(label.segments[0].end_s)
    assert rows[1] == {"speech_s": None, "music_s": None, "silence_s": None}


def test_class_probs_spreads_a_models_classes_and_gives_the_binary_view():
    probs = np.array([[0.1, 0.2, 0.6, 0.1], [0.0, 0.0, 0.0, 1.0]])
    classes = ("speech", "music", "speech_over_music", "noise")
    np.testing.assert_array_equal(class_probs(probs, classes), probs)
    binary = class_probs(probs, classes, view="binary")
    np.testing.assert_allclose(binary, [[0.7 / 0.9, 0.2 / 0.9, 0, 0], [0.5, 0.5, 0, 0]])
    np.testing.assert_allclose(class_probs(np.array([[0.3, 0.7]]), ("speech", "music")), [[0.3, 0.7, 0, 0]])
    np.testing.assert_allclose(class_probs(np.array([[0.2, 0.8]]), ("speech", "noise"), view="binary"),
                               [[1, 0, 0, 0]])


def test_speech_over_music_and_noise_get_segments_seconds_and_fractions():
    probs = np.repeat(np.eye(4)[[2, 3, 1]], 4, axis=0) * 0.9 + 0.025   # 4 windows each: over music, noise, music
    start = np.arange(12) * 5.0
    label = aggregate("show.wav", start_s=start, end_s=start + 5, duration_s=60.0, probs=probs, model_id="m",
                      feature_hash="h")
    assert [s.label for s in label.segments] == ["speech_over_music", "noise", "music"]
    assert [s.end_s for s in label.segments[:2]] == pytest.approx([20.0, 40.0], abs=0.05)
    assert label.label == "music"   # a tie of seconds goes to the first class in CLASSES order
    row = label.row()
    assert row["speech_over_music_s"] == pytest.approx(20, abs=0.05) and row["noise_s"] == pytest.approx(20, abs=0.05)
    assert row["noise_fraction"] == row["music_fraction"] == pytest.approx(1 / 3) and row["speech_fraction"] == 0
    assert row["p_noise"] == pytest.approx(0.925 / 3 + 0.025 * 2 / 3)
    _, windows, _ = label_tables([label])
    np.testing.assert_allclose(windows["p_speech_over_music"].to_numpy()[:4], 0.925)


def test_coarse_to_fine_runs_the_model_only_where_the_content_changes():
    hop = window_config("all", 1.0).hop_samples / PAPER.sample_rate
    group = np.repeat([0, 1], [30, 12])
    start_s = np.concatenate([np.arange(30), np.arange(12)]) * hop
    truth = np.where(np.concatenate([np.arange(30) < 13, np.zeros(12, bool)]), 0, 1)  # file 0 changes at window 13
    asked = []

    def predict(positions):
        asked.append(positions)
        return np.eye(2)[truth[positions]]

    probs = coarse_to_fine(group, start_s, predict, coarse_s=5 * hop)
    first, second = asked
    # every fifth window and each file's first and last, then only the windows between 10 and 15
    assert list(first) == [0, 5, 10, 15, 20, 25, 29, 30, 35, 40, 41]
    assert list(second) == [11, 12, 13, 14]
    run = ~np.isnan(probs[:, 0])
    assert np.flatnonzero(run).tolist() == sorted([*first, *second])
    np.testing.assert_array_equal(probs[run], np.eye(2)[truth[run]])
    full = coarse_to_fine(group, start_s, predict, coarse_s=None)
    assert not np.isnan(full).any() and len(asked[-1]) == 42


def test_windows_weigh_the_stretch_they_stand_for():
    np.testing.assert_allclose(window_weights(np.arange(4) * 5.0), [5, 5, 5, 5])
    np.testing.assert_allclose(window_weights(np.array([0.0, 5, 6, 7, 12])), [5, 3, 1, 3, 5])
    np.testing.assert_allclose(window_weights(np.array([3.0])), [1])
    label = aggregate("a", start_s=np.array([0.0, 5, 6, 7, 12]), end_s=np.array([5.0, 10, 11, 12, 17]),
                      duration_s=17, probs=binary(np.array([[1.0, 0], [1, 0], [0, 1], [0, 1], [0, 1]])),
                      model_id="m", feature_hash="h")
    assert label.probability("speech") == pytest.approx(8 / 17) and label.fraction("music") == pytest.approx(9 / 17)


def test_labelling_defaults_to_a_1_s_hop_with_a_5_s_first_pass():
    config, coarse_s = labelling_windows()
    assert config.hop_samples == 43 * 512 and coarse_s == pytest.approx(5 * 43 * 512 / PAPER.sample_rate)
    assert labelling_windows(hop_s=5.0)[1] is None and labelling_windows(coarse_s=0)[1] is None
    assert labelling_windows(hop_s=3.0)[1] is None  # the default 5 s is under two hops
    assert labelling_windows("first") == (window_config("first"), None)
    assert labelling_windows(hop_s=0.5, coarse_s=2)[1] == pytest.approx(4 * 22 * 512 / PAPER.sample_rate)
    for bad in ({"hop_s": 5.0, "coarse_s": 10}, {"hop_s": 1.0, "coarse_s": 1.2}, {"window": "first", "hop_s": 1.0}):
        with pytest.raises(ValueError):
            labelling_windows(**bad)


@pytest.mark.skipif(not DEFAULT_MODEL_DIR.is_dir(), reason="this msc bundles no default model")
def test_a_first_pass_finds_the_boundaries_of_every_window_for_less():
    music, speech = synth.music_like(31, sample_rate=RATE, seed=4), synth.speech_like(27, sample_rate=RATE, seed=5)
    signal = np.concatenate([music, speech, music[:22 * RATE]])
    model = load_model()
    every = label_array(signal, RATE, model, view="binary", coarse_s=0)
    first_pass = label_array(signal, RATE, model, view="binary")
    assert [s.label for s in first_pass.segments] == [s.label for s in every.segments] == ["music", "speech", "music"]
    np.testing.assert_allclose([s.end_s for s in first_pass.segments], [s.end_s for s in every.segments], atol=0.05)
    assert first_pass.windows < 0.6 * every.windows
