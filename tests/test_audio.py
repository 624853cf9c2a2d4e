"""Decoding real audio files into windows: formats, rates, channels, window policies,
bounded memory on long files, limits, and one typed error for every hostile input."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
from pathlib import Path

import av
import librosa
import numpy as np
import pytest
import soundfile as sf

from hostile import Expect, make_hostile_corpus, write_long_wav
from msc_core import synth
from msc_core.audio import AudioStream, DecodeLimits, load_audio, probe, read_windows
from msc_core.config import PAPER
from msc_core.errors import AudioDecodeError, MscError

RATE = PAPER.sample_rate


def stereo_source(seconds: float, sample_rate: int, channels: int) -> np.ndarray:
    """(frames, channels) float32 with different content per channel, so that mixing matters."""
    speech = synth.speech_like(seconds, sample_rate=sample_rate, seed=1)
    music = synth.music_like(seconds, sample_rate=sample_rate, seed=2)
    return np.stack([speech if c % 2 == 0 else music * (1 - 0.1 * c) for c in range(channels)], axis=1)


def write_source(path: Path, seconds: float, *, sample_rate: int = RATE) -> Path:
    """Noise as float WAV/FLAC; at 22,050 Hz the decoded samples are exactly these."""
    samples = np.random.default_rng(5).uniform(-0.5, 0.5, int(round(seconds * sample_rate))).astype(np.float32)
    sf.write(path, samples, sample_rate, subtype="FLOAT" if path.suffix == ".wav" else None)
    return path


def all_samples(path: Path) -> np.ndarray:
    """The samples of every window of ``path`` (back to back, none dropped), padding removed."""
    config = PAPER.with_window(mode="all", hop_seconds=None, min_last_seconds=0.0)
    parts = [row[: int(round(seconds * RATE))]
             for batch in read_windows(path, config) for row, seconds in zip(batch.samples, batch.audio_s)]
    return np.concatenate(parts)


def assert_same_as_librosa(path: Path) -> None:
    """Whole-file and windowed decoding give exactly ``librosa.load(path, sr=22050)`` (measured: bit-equal)."""
    expected, _ = librosa.load(path, sr=RATE)
    got = load_audio(path)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(all_samples(path), expected)


# ---------------------------------------------------------------- formats, rates, channels
FORMATS = [("wav", "PCM_U8"), ("wav", "PCM_16"), ("wav", "PCM_24"), ("wav", "PCM_32"), ("wav", "FLOAT"),
           ("wav", "DOUBLE"), ("flac", "PCM_16"), ("flac", "PCM_24"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")]


@pytest.mark.parametrize("extension, subtype", FORMATS, ids=[f"{e}-{s}" for e, s in FORMATS])
def test_format_decodes_like_librosa(tmp_path, extension, subtype):
    path = tmp_path / f"clip.{extension}"
    sf.write(path, stereo_source(3.2, 44100, 2), 44100, subtype=subtype)
    info = probe(path)
    assert (info.sample_rate, info.channels) == (44100, 2)
    assert info.duration_s == pytest.approx(3.2, abs=0.1)
    assert_same_as_librosa(path)


@pytest.mark.parametrize("channels", [1, 2, 6, 8])
@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100, 48000, 96000])
def test_any_rate_and_channel_count_becomes_mono_at_22050(tmp_path, sample_rate, channels):
    path = tmp_path / f"clip_{sample_rate}_{channels}.wav"
    sf.write(path, stereo_source(2.3, sample_rate, channels), sample_rate, subtype="PCM_16")
    assert_same_as_librosa(path)
    assert len(load_audio(path)) == round(2.3 * RATE)


def write_m4a(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Encode mono float samples as AAC in an MP4 (.m4a) container with PyAV."""
    with av.open(str(path), "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        step = 1024
        for start in range(0, len(samples), step):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + step], format="flt", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_m4a_aac_goes_through_ffmpeg(tmp_path):
    sample_rate, seconds, pitch = 44100, 6.0, 440.0
    tone = (0.5 * np.sin(2 * np.pi * pitch * np.arange(int(seconds * sample_rate)) / sample_rate)).astype(np.float32)
    path = tmp_path / "tone.m4a"
    write_m4a(path, tone, sample_rate)
    with pytest.raises(sf.LibsndfileError):
        sf.info(path)  # libsndfile cannot read it: the FFmpeg fallback must
    info = probe(path)
    assert "aac" in info.codec and (info.sample_rate, info.channels) == (sample_rate, 1)
    samples = load_audio(path)
    assert abs(len(samples) / RATE - seconds) < 0.05
    spectrum = np.abs(np.fft.rfft(samples[RATE:4 * RATE]))
    assert np.argmax(spectrum) * RATE / (3 * RATE) == pytest.approx(pitch, abs=1)
    assert np.sqrt(np.mean(samples[RATE:-RATE] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    batches = list(read_windows(path, PAPER))
    np.testing.assert_allclose(np.concatenate([b.start_s for b in batches]), [0.0])  # 1 s tail < 2.5 s: dropped


def test_binary_file_object_reads_like_a_path(tmp_path):
    path = write_source(tmp_path / "clip.flac", 7.0, sample_rate=16000)
    with open(path, "rb") as handle:
        from_handle = [b.samples for b in read_windows(handle, PAPER, name="clip")]
    from_path = [b.samples for b in read_windows(path, PAPER)]
    np.testing.assert_array_equal(np.concatenate(from_handle), np.concatenate(from_path))


# ---------------------------------------------------------------- window policies
POLICIES = {  # on a 12.3 s file: policy -> (window starts, seconds of audio in each)
    "first": (dict(mode="first"), [0.0], [5.0]),
    "all": (dict(mode="all"), [0.0, 5.0], [5.0, 5.0]),
    "all-keep-last": (dict(mode="all", min_last_seconds=2.0), [0.0, 5.0, 10.0], [5.0, 5.0, 2.3]),
    "hop-2.5": (dict(mode="all", hop_seconds=2.5), [0.0, 2.5, 5.0, 7.5], [5.0, 5.0, 5.0, 4.8]),
    "hop-2.5-keep-last": (dict(mode="all", hop_seconds=2.5, min_last_seconds=0.0),
                          [0.0, 2.5, 5.0, 7.5, 10.0], [5.0, 5.0, 5.0, 4.8, 2.3]),
}


@pytest.fixture(scope="module")
def long_noise(tmp_path_factory) -> tuple[Path, np.ndarray]:
    path = write_source(tmp_path_factory.mktemp("policy") / "noise.wav", 12.3)
    return path, sf.read(path, dtype="float32")[0]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_window_policy_starts_audio_and_samples(long_noise, name):
    path, source = long_noise
    policy, starts, audio = POLICIES[name]
    config = PAPER.with_window(**policy)
    batches = list(read_windows(path, config, batch_windows=2))
    assert all(len(b.start_s) <= 2 for b in batches)
    start_s = np.concatenate([b.start_s for b in batches])
    audio_s = np.concatenate([b.audio_s for b in batches])
    samples = np.concatenate([b.samples for b in batches])
    np.testing.assert_allclose(start_s, starts)
    np.testing.assert_allclose(audio_s, audio, atol=1e-9)
    assert samples.shape == (len(starts), config.window_samples) and samples.dtype == np.float32
    for row, start, seconds in zip(samples, start_s, audio_s):
        have = int(round(seconds * RATE))
        begin = int(round(start * RATE))
        np.testing.assert_array_equal(row[:have], source[begin:begin + have])
        assert not row[have:].any()  # zero padding at the end


@pytest.mark.parametrize("mode", ["first", "all"])
def test_short_file_gives_one_padded_window(tmp_path, mode):
    path = write_source(tmp_path / "short.wav", 1.0)
    with AudioStream.open(path) as stream:
        batches = list(stream.windows(PAPER.with_window(mode=mode)))
        assert not stream.truncated
    assert len(batches) == 1 and batches[0].samples.shape == (1, PAPER.window_samples)
    assert batches[0].start_s.tolist() == [0.0] and batches[0].audio_s.tolist() == [1.0]
    assert not batches[0].samples[0, RATE:].any()


def test_truncated_data_chunk_decodes_what_is_there(hostile):
    directory, corpus = hostile
    assert corpus["truncated_data.wav"] == Expect(windows=1)
    (batch,) = read_windows(directory / "truncated_data.wav", PAPER)
    assert batch.audio_s[0] == pytest.approx(1.0)  # the header declares 2 s; 1 s of data is there


# ---------------------------------------------------------------- long files and limits
def test_long_file_is_read_in_blocks(tmp_path):
    seconds = 20 * 60
    path = write_long_wav(tmp_path / "twenty_minutes.wav", seconds)
    whole_at_feature_rate = seconds * RATE * 4
    tracemalloc.start()
    try:
        starts = [start for batch in read_windows(path, PAPER, batch_windows=4) for start in batch.start_s]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(starts) == seconds // 5 and starts[-1] == seconds - 5
    print(f"20-minute file: peak traced memory {peak / 1e6:.1f} MB, whole file would be "
          f"{whole_at_feature_rate / 1e6:.0f} MB")
    assert peak < whole_at_feature_rate / 10


@pytest.mark.slow
def test_three_hour_file_keeps_memory_bounded(tmp_path):
    seconds = 3 * 3600
    path = write_long_wav(tmp_path / "three_hours.wav", seconds)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so it would report this
    # (pytest) process's size when that is larger; VmHWM belongs to the new program's memory only.
    script = textwrap.dedent(f"""
        import re
        from msc_core.audio import read_windows
        from msc_core.config import PAPER
        windows = sum(len(batch.start_s) for batch in read_windows({str(path)!r}, PAPER))
        status = open("/proc/self/status").read()
        print(windows, re.search(r"VmHWM:\\s*(\\d+) kB", status).group(1))
    """)
    output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    windows, max_rss_kb = map(int, output.split())
    assert windows == seconds // 5
    print(f"3-hour file: peak RSS {max_rss_kb / 1e3:.0f} MB, whole file would be {seconds * RATE * 4 / 1e6:.0f} MB")
    assert max_rss_kb * 1e3 < 400e6


def test_max_windows_truncates_and_says_so(tmp_path):
    path = write_source(tmp_path / "thirty.flac", 30.0, sample_rate=16000)
    with AudioStream.open(path, limits=DecodeLimits(max_windows=3)) as stream:
        starts = [s for batch in stream.windows(PAPER) for s in batch.start_s]
        assert starts == [0.0, 5.0, 10.0] and stream.truncated
    with AudioStream.open(path) as stream:
        assert sum(len(batch.start_s) for batch in stream.windows(PAPER)) == 6
        assert not stream.truncated and stream.decoded_s == pytest.approx(30.0)


def test_max_duration_refuses_long_files(tmp_path):
    path = write_source(tmp_path / "thirty.wav", 30.0, sample_rate=8000)
    with pytest.raises(AudioDecodeError, match="over the limit"):
        list(read_windows(path, PAPER, limits=DecodeLimits(max_duration_s=10)))


def test_max_decode_seconds_stops_a_slow_decode(tmp_path):
    path = write_source(tmp_path / "thirty.wav", 30.0, sample_rate=8000)
    with pytest.raises(AudioDecodeError, match="decoding took"):
        list(read_windows(path, PAPER, limits=DecodeLimits(max_decode_s=0)))


# ---------------------------------------------------------------- hostile inputs
@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, dict[str, Expect]]:
    directory = tmp_path_factory.mktemp("hostile")
    return directory, make_hostile_corpus(directory)


def pytest_generate_tests(metafunc):
    """One test per hostile input: the names come from a scratch copy of the corpus."""
    if "hostile_name" in metafunc.fixturenames:
        with tempfile.TemporaryDirectory() as scratch:
            metafunc.parametrize("hostile_name", sorted(make_hostile_corpus(Path(scratch))))


def test_hostile_input(hostile, hostile_name):
    directory, corpus = hostile
    path = directory / hostile_name
    expect = corpus[hostile_name]
    if hostile_name == "unreadable.wav" and os.access(path, os.R_OK):
        pytest.skip("running as root: chmod 000 does not stop this process from reading")
    if expect.ok:
        batches = list(read_windows(path, PAPER))
        assert sum(len(b.start_s) for b in batches) == expect.windows
        assert all(np.isfinite(b.samples).all() for b in batches)
        return
    with pytest.raises(AudioDecodeError) as caught:
        list(read_windows(path, PAPER))
    error = caught.value
    assert isinstance(error, MscError)
    assert error.path == str(path)
    assert expect.reason in error.reason.lower(), error.reason
    assert str(path) in str(error)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.wav"
    with pytest.raises(AudioDecodeError) as caught:
        probe(path)
    assert caught.value.path == str(path) and "no such file" in caught.value.reason.lower()


def test_unicode_and_spaces_keep_their_name_in_errors(tmp_path):
    path = tmp_path / "ünï cödé.wav"
    path.write_bytes(b"not audio at all")
    with pytest.raises(AudioDecodeError) as caught:
        probe(path)
    assert caught.value.path == str(path)
