"""Decoding any audio file into fixed-length mono windows at the feature rate.

Files are read in blocks, mixed down to mono (mean of channels) and resampled
with soxr "HQ" (the resampler behind ``librosa.load``) in streaming mode, which
gives the same samples as resampling the whole file at once. A 3-hour file is
therefore never held in memory: only the current block, one window and one
batch of windows are.

Decoders: libsndfile through soundfile (WAV 8/16/24/32-bit int and float,
FLAC, OGG/Vorbis, MP3, AIFF, ...), then FFmpeg through PyAV for what
libsndfile cannot open (M4A/AAC, Opus, WMA, ...).

Every failure is an :class:`~msc_core.errors.AudioDecodeError` naming the
file and the reason. A file whose data ends before its header says (a
truncated download or copy) is not an error: the audio that is there is
decoded, as ``librosa.load`` does, and :attr:`AudioStream.decoded_s` tells how
much that was.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import numpy as np
import soxr

from .config import FeatureConfig
from .errors import AudioDecodeError, MscError

BLOCK_FRAMES = 1 << 16
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds that keep one hostile file from stalling a job.

    Attributes
    ----------
    max_duration_s : float
        Files declaring (or decoding to) more seconds than this are refused.
    max_decode_s : float
        Wall-clock seconds allowed for decoding one file.
    max_windows : int
        Most windows taken from one file.
    min_audio_s : float
        Fewest seconds of decoded audio a file must hold to be labelled or featurized; a file with
        less (an empty or near-empty file, or one whose header promises audio that is not there) is
        an error, never a label made mostly of zero padding.
    """

    max_duration_s: float = 12 * 3600.0
    max_decode_s: float = 900.0
    max_windows: int = 50_000  # 13.9 h at labelling's 1-s hop, over max_duration_s
    min_audio_s: float = 1.0


@dataclass(frozen=True)
class AudioInfo:
    """What a file declares about itself.

    Attributes
    ----------
    path : str
    sample_rate : int
        Original rate (Hz).
    channels : int
    duration_s : float or None
        Declared duration (s); None when the container does not say.
    codec : str
        Container/codec as the decoder names it, e.g. ``"WAV/PCM_16"``.
    """

    path: str
    sample_rate: int
    channels: int
    duration_s: float | None
    codec: str


@dataclass(frozen=True)
class WindowBatch:
    """Consecutive windows of one file.

    Attributes
    ----------
    start_s : np.ndarray, float64, shape (B,)
        Start of each window in the file (s).
    audio_s : np.ndarray, float64, shape (B,)
        Seconds of real audio in each window (the rest is zero padding).
    samples : np.ndarray, float32, shape (B, window_samples)
        Mono samples at the feature rate.
    """

    start_s: np.ndarray
    audio_s: np.ndarray
    samples: np.ndarray


class AudioStream:
    """An open audio file that yields windows block by block.

    Use :meth:`open` as a context manager; read :attr:`info`, iterate
    :meth:`windows`; then :attr:`decoded_s` holds the decoded duration (s) and
    :attr:`truncated` says whether ``DecodeLimits.max_windows`` cut the file short.
    """

    def __init__(self, path: str, info: AudioInfo, blocks: Iterator[np.ndarray], closer: contextlib.ExitStack,
                 limits: DecodeLimits):
        self.path = path
        self.info = info
        self.decoded_s = 0.0
        self.truncated = False
        self._blocks = blocks
        self._closer = closer
        self._limits = limits

    @classmethod
    def open(cls, source: str | os.PathLike | BinaryIO, *, name: str | None = None,
             limits: DecodeLimits = DecodeLimits()) -> "AudioStream":
        """Open ``source`` (path, fsspec URI or binary file object) for reading.

        Raises
        ------
        AudioDecodeError
            Missing, unreadable, empty, non-audio, unsupported or absurd files.
        """
        path = name or _source_name(source)
        closer = contextlib.ExitStack()
        try:
            handle = closer.enter_context(_open_binary(source, path))
            info, blocks = _open_decoder(handle, path, closer)
            _check_declared(info, limits)
        except MscError:
            closer.close()
            raise
        except Exception as error:  # decoders raise many types; all mean "cannot decode"
            closer.close()
            raise AudioDecodeError(path, f"{type(error).__name__}: {error}") from error
        return cls(path, info, blocks, closer, limits)

    def __enter__(self) -> "AudioStream":
        return self

    def __exit__(self, *exc) -> None:
        self._closer.close()

    def mono(self, sample_rate: int) -> Iterator[np.ndarray]:
        """Mono float32 blocks resampled to ``sample_rate``, validated as they come."""
        resampler = None
        if self.info.sample_rate != sample_rate:
            resampler = soxr.ResampleStream(self.info.sample_rate, sample_rate, 1, dtype="float32", quality="HQ")
        started = time.monotonic()
        total_frames = 0
        try:
            for block in self._blocks:
                total_frames += len(block)
                seconds = total_frames / self.info.sample_rate
                mono = _mix_to_mono(block)
                if not np.isfinite(mono).all():  # a NaN or inf in any channel reaches the mean
                    raise AudioDecodeError(self.path, f"NaN or infinite samples near {seconds:.2f} s")
                if seconds > self._limits.max_duration_s:
                    raise AudioDecodeError(self.path, f"longer than the limit of {self._limits.max_duration_s:.0f} s")
                if time.monotonic() - started > self._limits.max_decode_s:
                    raise AudioDecodeError(self.path, f"decoding took over {self._limits.max_decode_s:.0f} s")
                self.decoded_s = seconds
                yield resampler.resample_chunk(mono) if resampler else mono
        except MscError:
            raise
        except Exception as error:
            raise AudioDecodeError(self.path, f"decoding failed after {total_frames} frames: "
                                              f"{type(error).__name__}: {error}") from error
        if total_frames == 0:
            raise AudioDecodeError(self.path, "no audio samples (zero-length audio)")
        if resampler:
            yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)

    def windows(self, config: FeatureConfig, *, batch_windows: int = 16,
                on_audio: Callable[[np.ndarray], object] | None = None) -> Iterator[WindowBatch]:
        """Cut the file into windows under ``config.window`` (see :class:`~msc_core.config.WindowPolicy`).

        ``mode="first"``: one window, the first ``window_seconds`` (zero-padded).
        ``mode="all"``: a window starts every ``hop`` seconds while the start lies
        inside the audio; every window holding at least ``min_last_seconds`` of
        audio is kept and zero-padded at its end; a file shorter than that still
        gives its one first window.

        After the last batch, :attr:`truncated` says whether ``max_windows``
        stopped a window from being taken: the audio after the last window
        taken is read only as far as needed to know (``min_last_seconds``).

        Parameters
        ----------
        config : FeatureConfig
            Sample rate, window length and window policy.
        batch_windows : int
            Most windows per batch.
        on_audio : callable or None
            Called with every mono block read at ``config.sample_rate``
            (np.ndarray, float32, shape (N,)), in order, before the windows it
            completes; the blocks hold all the audio read, a tail too short to
            make a window included (:class:`msc_core.segmentation.CueTracker`).

        Yields
        ------
        WindowBatch
            At most ``batch_windows`` windows each, in time order.
        """
        size, hop, rate = config.window_samples, config.hop_samples, config.sample_rate
        first_only = config.window.mode == "first"
        min_audio = int(round(config.window.min_last_seconds * rate))
        buffer = np.zeros(0, np.float32)
        buffer_start = 0   # absolute index of buffer[0] at the feature rate
        next_start = 0
        pending: list[tuple[int, int, np.ndarray]] = []
        emitted = 0

        def flush() -> Iterator[WindowBatch]:
            nonlocal pending
            if pending:
                starts, audio, rows = zip(*pending)
                yield WindowBatch(np.asarray(starts, np.float64) / rate, np.asarray(audio, np.float64) / rate,
                                  np.stack(rows))
                pending = []

        limit = self._limits.max_windows
        blocks = self.mono(rate)
        for block in blocks:
            if on_audio is not None:
                on_audio(block)
            buffer = np.concatenate([buffer, block])
            while next_start + size <= buffer_start + len(buffer) and emitted < limit:
                offset = next_start - buffer_start
                pending.append((next_start, size, buffer[offset:offset + size].copy()))
                emitted += 1
                next_start += hop
                if first_only:
                    yield from flush()
                    return
                if len(pending) >= batch_windows:
                    yield from flush()
            drop = min(next_start - buffer_start, len(buffer))
            buffer, buffer_start = buffer[drop:], buffer_start + drop
            if emitted >= limit and buffer_start + len(buffer) - next_start >= max(min_audio, 1):
                break  # at the limit, and the audio after it would give another window
        end = buffer_start + len(buffer)
        if emitted == 0 and self.decoded_s < self._limits.min_audio_s:
            declared = (f" (its header declares {self.info.duration_s:.2f} s)"
                        if (self.info.duration_s or 0) > self.decoded_s + 0.01 else "")
            raise AudioDecodeError(self.path, f"only {self.decoded_s:.2f} s of audio{declared}; "
                                              f"msc needs at least {self._limits.min_audio_s:g} s")
        while next_start < end and emitted < limit:
            audio = end - next_start
            if first_only or emitted == 0 or audio >= min_audio:
                row = np.zeros(size, np.float32)
                row[:audio] = buffer[next_start - buffer_start:]
                pending.append((next_start, audio, row))
                emitted += 1
                if len(pending) >= batch_windows:
                    yield from flush()
            if first_only:
                break
            next_start += hop
        self.truncated = not first_only and emitted >= limit and end - next_start >= max(min_audio, 1)
        yield from flush()


def _mix_to_mono(block: np.ndarray) -> np.ndarray:
    """Mean over the channels of a (frames, channels) float32 block, bit-equal to ``librosa.to_mono``.

    NumPy's mean adds fewer than 8 channels one after the other, which a loop
    over the channels does in the same order, many times faster; from 8
    channels on it adds pairwise, so its own mean is used.
    """
    channels = block.shape[1]
    if channels == 1:
        return block[:, 0]
    if channels >= 8:
        return block.mean(axis=1, dtype=np.float32)
    mono = block[:, 0].copy()
    for channel in range(1, channels):
        mono += block[:, channel]
    mono /= np.float32(channels)
    return mono


def _source_name(source: str | os.PathLike | BinaryIO) -> str:
    """The full path or URI of ``source``; for a file object, its ``name`` if it has one."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<file object>"))


def _open_binary(source: str | os.PathLike | BinaryIO, path: str):
    """A binary file object for a path, an fsspec URI or an already open file."""
    if hasattr(source, "read"):
        return contextlib.nullcontext(source)
    from .storage import is_uri, local_path

    text = os.fspath(source)
    if is_uri(text):
        import fsspec

        return fsspec.open(text, "rb").open()
    text = local_path(text)
    try:
        mode = os.stat(text).st_mode
    except OSError as error:
        raise AudioDecodeError(path, error.strerror or str(error)) from error
    if stat.S_ISDIR(mode):
        raise AudioDecodeError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(mode):
        raise AudioDecodeError(path, "is not a regular file")
    try:
        return open(text, "rb")
    except OSError as error:
        raise AudioDecodeError(path, error.strerror or str(error)) from error


def _open_decoder(handle: BinaryIO, path: str, closer: contextlib.ExitStack) -> tuple[AudioInfo, Iterator[np.ndarray]]:
    """Try libsndfile, then FFmpeg; return the file's info and its (frames, channels) float32 blocks."""
    if not handle.read(1):
        raise AudioDecodeError(path, "empty file (0 bytes)")
    handle.seek(0)
    import soundfile

    try:
        sound = closer.enter_context(soundfile.SoundFile(handle))
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as sndfile_error:
        handle.seek(0)
        try:
            return _open_with_ffmpeg(handle, path, closer)
        except AudioDecodeError:
            raise
        except Exception as ffmpeg_error:
            raise AudioDecodeError(path, f"not a decodable audio file (libsndfile: {_message(sndfile_error)}; "
                                         f"FFmpeg: {_message(ffmpeg_error)})") from ffmpeg_error
    duration = sound.frames / sound.samplerate if sound.samplerate > 0 else None
    info = AudioInfo(path, int(sound.samplerate), int(sound.channels), duration, f"{sound.format}/{sound.subtype}")

    def blocks() -> Iterator[np.ndarray]:
        while True:
            block = sound.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            if not len(block):
                return
            yield block

    return info, blocks()


def _open_with_ffmpeg(handle: BinaryIO, path: str, closer: contextlib.ExitStack) -> tuple[AudioInfo, Iterator[np.ndarray]]:
    """Open with PyAV; blocks are float32 (frames, channels) at the stream's rate."""
    import av

    container = closer.enter_context(av.open(handle, mode="r"))
    if not container.streams.audio:
        raise AudioDecodeError(path, "no audio stream in the container")
    stream = container.streams.audio[0]
    if stream.codec_context is None:
        raise AudioDecodeError(path, "unsupported codec (FFmpeg has no decoder for its audio stream)")
    if not stream.codec_context.sample_rate or not stream.codec_context.channels:
        raise AudioDecodeError(path, "not a decodable audio file (FFmpeg: audio stream without rate or channels)")
    duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    if duration is None and container.duration:
        duration = container.duration / 1_000_000
    info = AudioInfo(path, int(stream.codec_context.sample_rate or 0), int(stream.codec_context.channels or 0),
                     duration, f"{container.format.name}/{stream.codec_context.name}")
    to_float = av.AudioResampler(format="fltp")

    def blocks() -> Iterator[np.ndarray]:
        for frame in container.decode(stream):
            for planar in to_float.resample(frame):
                yield np.ascontiguousarray(planar.to_ndarray().T, dtype=np.float32)

    return info, blocks()


def _message(error: Exception) -> str:
    """A decoder's own words for ``error``, without the repr of the file object it was given."""
    return getattr(error, "error_string", None) or getattr(error, "strerror", None) or str(error)


def _check_declared(info: AudioInfo, limits: DecodeLimits) -> None:
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(info.path, f"unsupported sample rate {info.sample_rate} Hz "
                                          f"(msc reads {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioDecodeError(info.path, f"unsupported channel count {info.channels} (msc reads 1-{MAX_CHANNELS})")
    if info.duration_s == 0:
        raise AudioDecodeError(info.path, "no audio samples (zero-length audio)")
    if info.duration_s is not None and info.duration_s > limits.max_duration_s:
        raise AudioDecodeError(info.path, f"declares {info.duration_s:.0f} s, over the limit of "
                                          f"{limits.max_duration_s:.0f} s")


def probe(source: str | os.PathLike | BinaryIO, *, name: str | None = None) -> AudioInfo:
    """Open a file only to read its declared rate, channels, duration and codec."""
    with AudioStream.open(source, name=name) as stream:
        return stream.info


def read_windows(source: str | os.PathLike | BinaryIO, config: FeatureConfig, *, name: str | None = None,
                 batch_windows: int = 16, limits: DecodeLimits = DecodeLimits()) -> Iterator[WindowBatch]:
    """Windows of one file under ``config`` (see :meth:`AudioStream.windows`)."""
    with AudioStream.open(source, name=name, limits=limits) as stream:
        yield from stream.windows(config, batch_windows=batch_windows)


def load_audio(source: str | os.PathLike | BinaryIO, *, sample_rate: int = 22050,
               max_seconds: float | None = None) -> np.ndarray:
    """The whole file (or its first ``max_seconds``) as mono float32 at ``sample_rate``.

    Equivalent to ``librosa.load(path, sr=sample_rate)``; for long files prefer
    :func:`read_windows`, which never holds the whole file.

    Returns
    -------
    np.ndarray, float32, shape (n,)
    """
    with AudioStream.open(source) as stream:
        parts, have = [], 0
        for block in stream.mono(sample_rate):
            parts.append(block)
            have += len(block)
            if max_seconds is not None and have >= max_seconds * sample_rate:
                break
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return samples if max_seconds is None else samples[: int(round(max_seconds * sample_rate))]
