"""Segments from window probabilities and frame cues: centres, silence by energy, smoothing, refinement."""

from __future__ import annotations

import numpy as np
import pytest

from msc_core import synth
from msc_core.labelling import DEFAULT_MODEL_DIR, class_probs, featurize_file, label_array, load_model, window_config
from msc_core.segmentation import (FRAME_S, CueTracker, FrameCues, SegmentParams, segment_timeline, silence_mask,
                                   smooth, frame_probabilities)

RATE = 22050


def cues_of(signal: np.ndarray, *, block: int = 22016) -> FrameCues:
    """Cues of ``signal`` pushed in blocks of ``block`` samples, as AudioStream reads it."""
    tracker = CueTracker(sample_rate=RATE)
    for first in range(0, len(signal), block):
        tracker.push(signal[first:first + block])
    return tracker.finish()


def test_cues_are_levels_every_10_ms_however_the_blocks_come():
    seconds = 12.34
    t = np.arange(int(seconds * RATE)) / RATE
    signal = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    signal[int(4 * RATE):int(6 * RATE)] = 0
    cues = cues_of(signal)
    assert cues.frames == int(np.ceil(seconds / FRAME_S)) and cues.bands.shape == (cues.frames, 8)
    assert cues.level_db[:390] == pytest.approx(10 * np.log10(0.125), abs=0.2)   # sine of amplitude 0.5, 4.4 periods
    assert (cues.level_db[401:599] < -100).all()
    for block in (110250, 1000, 221, len(signal)):
        other = cues_of(signal, block=block)
        np.testing.assert_allclose(other.level_db, cues.level_db, atol=1e-4)
        np.testing.assert_allclose(other.bands, cues.bands, atol=1e-3)
    # the 440-Hz band is the loudest
    assert np.argmax(cues.bands[100]) == np.searchsorted(np.geomspace(50, RATE / 2, 9), 440) - 1


def test_silence_is_absolute_or_relative_and_lasts():
    level = np.full(500, -20.0)
    level[100:200] = -70.0      # under the absolute threshold
    level[300:380] = -50.0      # 30 dB down: not silent
    level[400:420] = -90.0      # silent but 0.2 s: a pause
    silent = silence_mask(level)
    assert silent[100:200].all() and not silent[:100].any() and not silent[200:].any()
    loud = np.full(500, 0.0)
    loud[100:200] = -50.0       # 50 dB under the file's loud level
    assert silence_mask(loud)[100:200].all()
    assert not silence_mask(loud, SegmentParams(relative_db=60))[100:200].any()


def binary(probs: np.ndarray) -> np.ndarray:
    """[speech, music] window probabilities spread over the content classes."""
    return class_probs(probs, ("speech", "music"))


def test_windows_stand_for_their_centres_and_segments_tile_on_a_10_ms_grid():
    start = np.arange(0, 30, 1.0)
    centre = start + 2.5
    probs = np.where(centre[:, None] < 14.0, [0.9, 0.1], [0.1, 0.9])
    segments = segment_timeline(centre, binary(probs), 34.567)
    assert [label for *_, label, _ in segments] == ["speech", "music"]
    assert segments[0][0] == 0 and segments[-1][1] == 34.567
    assert segments[0][1] == pytest.approx(14.0, abs=0.6)    # at its start the change would land 2.5 s early
    assert segments[0][1] == round(segments[0][1], 2)
    assert segments[0][3] > 0.8


def test_minimum_durations_remove_short_runs():
    centre = np.arange(0.5, 30, 1.0)
    probs = np.tile([0.9, 0.1], (30, 1))
    probs[10] = [0.05, 0.95]    # one window of music: 1 s
    assert [label for *_, label, _ in segment_timeline(centre, binary(probs), 30.0)] == ["speech"]
    frames = frame_probabilities(centre, binary(probs), 3000)
    frames[:, 2000:2030] = [[0], [0], [0], [0], [1]]   # 0.3 s of silence, under min_silence_s
    runs = smooth(frames, SegmentParams(expected_s=0.05))
    assert [run.state for run in runs] == [0]


def test_boundaries_move_to_the_cut_and_silence_is_its_own_segment():
    music, speech = synth.music_like(20, sample_rate=RATE, seed=1), synth.speech_like(20, sample_rate=RATE, seed=2)
    signal = np.concatenate([music, speech, np.zeros(3 * RATE, np.float32), music[:10 * RATE]])
    cues = cues_of(signal, block=110250)
    centre = np.arange(0, 53, 5.0) + 2.5
    truth = np.select([centre < 20, centre < 40, centre < 43], [1.0, 0.0, 0.5], 1.0)   # windows 5 s apart
    probs = np.stack([1 - truth, truth], axis=1)
    segments = segment_timeline(centre, binary(probs), len(signal) / RATE, cues=cues)
    assert [label for *_, label, _ in segments] == ["music", "speech", "silence", "music"]
    edges = [end for _, end, *_ in segments[:-1]]
    assert edges[0] == pytest.approx(20.0, abs=0.25)
    assert edges[1] == pytest.approx(40.0, abs=0.25) and edges[2] == pytest.approx(43.0, abs=0.05)


def test_featurize_file_carries_cues_over_all_the_audio(tmp_path):
    from tests.conftest import write_audio

    path = write_audio(tmp_path / "m.wav", "music", 12.0, sample_rate=16000)
    for hop in (None, 1.0, 7.0):   # 5-s windows leave a 2-s tail out; 7-s hops leave gaps
        features = featurize_file(path, window_config("all", hop))
        assert features.cues is not None and abs(features.cues.frames - 1200) <= 1
    assert featurize_file(path, window_config("all", None)).end_s[-1] == 10.0
    assert window_config("all", 1.0).hop_samples == 43 * 512


@pytest.mark.skipif(not DEFAULT_MODEL_DIR.is_dir(), reason="this msc bundles no default model")
def test_default_model_gives_sub_second_boundaries_and_silence():
    music, speech = synth.music_like(25, sample_rate=RATE, seed=4), synth.speech_like(25, sample_rate=RATE, seed=5)
    signal = np.concatenate([music, np.zeros(3 * RATE, np.float32), speech, music[:15 * RATE]])
    # the binary view: the default model, trained on recordings, may call synthetic speech-like sound noise
    label = label_array(signal, RATE, load_model(), view="binary")
    assert [s.label for s in label.segments] == ["music", "silence", "speech", "music"]
    edges = [s.end_s for s in label.segments[:-1]]
    np.testing.assert_allclose(edges, [25.0, 28.0, 53.0], atol=0.25)
