"""A generated corpus of hostile and awkward audio inputs, with what msc must do with each.

:func:`make_hostile_corpus` writes the files into a folder and returns, per
file name, an :class:`Expect`: either a result (how many windows the default
policy gives) or an :class:`~msc_core.errors.AudioDecodeError` whose reason
contains a given phrase. The audio, featurize and infer tests all use it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

PCM_16 = 1
IEEE_FLOAT = 3


@dataclass(frozen=True)
class Expect:
    """What msc must do with one input.

    Attributes
    ----------
    windows : int or None
        Windows under the default policy (every 5 s, last one kept from 2.5 s
        of audio) when the file decodes; None when it must be refused.
    reason : str
        When refused: a phrase (lower case) that ``AudioDecodeError.reason`` contains.
    """

    windows: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.windows is not None


def wav_header(*, sample_rate: int, channels: int, bits: int = 16, format_tag: int = PCM_16,
               data_bytes: int = 0) -> bytes:
    """A canonical 44-byte RIFF/WAVE header, with whatever values it is given (no checks)."""
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", format_tag, channels, sample_rate, (sample_rate * block_align) & 0xFFFFFFFF,
                      block_align & 0xFFFF, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", data_bytes))


def tones(seconds: float, sample_rate: int) -> np.ndarray:
    """Two tones and a little noise, float32, peak below 0.5 (cheap to make at any rate)."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    noise = np.random.default_rng(sample_rate).standard_normal(len(t))
    return (0.25 * np.sin(2 * np.pi * 330 * t) + 0.15 * np.sin(2 * np.pi * 1250 * t) + 0.01 * noise).astype(np.float32)


def _write(path: Path, *, seconds: float = 0.0, sample_rate: int = 22050, channels: int = 1,
           subtype: str | None = None, data: np.ndarray | None = None) -> None:
    """``seconds`` of tones (or ``data``) repeated over ``channels``; format from the extension."""
    mono = tones(seconds, sample_rate) if data is None else data
    sf.write(path, np.repeat(mono[:, None], channels, axis=1), sample_rate, subtype=subtype)


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def make_hostile_corpus(directory: Path, *, long_seconds: float | None = None) -> dict[str, Expect]:
    """Write the hostile corpus into ``directory`` (created if needed).

    Parameters
    ----------
    directory : Path
    long_seconds : float, optional
        Also write ``long_8k.wav``, that many seconds of 8 kHz mono 16-bit
        audio (10,800 for the 3-hour case; written in blocks).

    Returns
    -------
    dict[str, Expect]
        Per entry name in ``directory``: what reading it must give.
        ``unreadable.wav`` is expected to fail only where permissions hold
        (not for root).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(8)
    one_second = tones(1.0, 8000)
    expect: dict[str, Expect] = {}

    def raw(name: str, content: bytes, outcome: Expect) -> None:
        (directory / name).write_bytes(content)
        expect[name] = outcome

    def audio(name: str, outcome: Expect, **options) -> None:
        _write(directory / name, **options)
        expect[name] = outcome

    # broken containers
    raw("zero_bytes.wav", b"", Expect(reason="empty file"))
    raw("header_only.wav", wav_header(sample_rate=8000, channels=1), Expect(reason="zero-length"))
    audio("zero_frames_stereo_float.wav", Expect(reason="zero-length"), channels=2, subtype="FLOAT",
          data=np.zeros(0, np.float32))
    raw("truncated_header.wav", wav_header(sample_rate=8000, channels=1, data_bytes=16000)[:22],
        Expect(reason="not a decodable audio file"))
    # a header declaring 2 s with only 1 s of data: what is there is decoded (see audio.py)
    raw("truncated_data.wav", wav_header(sample_rate=8000, channels=1, data_bytes=32000) + _pcm16(one_second),
        Expect(windows=1))
    for suffix in ("wav", "flac", "mp3"):
        raw(f"random_bytes.{suffix}", rng.integers(0, 256, 64_000, dtype=np.uint8).tobytes(),
            Expect(reason="not a decodable audio file"))
    raw("text.wav", b"This is not audio.\n" * 500, Expect(reason="not a decodable audio file"))
    for name, rate, channels, reason in [("absurd_rate.wav", 3_000_000, 1, "sample rate"),
                                         ("tiny_rate.wav", 1, 1, "sample rate"),
                                         ("zero_rate.wav", 0, 1, "not a decodable audio file"),
                                         ("overflowing_rate.wav", 4_000_000_000, 1, "not a decodable audio file"),
                                         ("absurd_channels.wav", 8000, 500, "channel count"),
                                         ("overflowing_channels.wav", 8000, 60_000, "not a decodable audio file")]:
        raw(name, wav_header(sample_rate=rate, channels=channels, data_bytes=16000) + _pcm16(one_second),
            Expect(reason=reason))
    raw("unsupported_codec.wav", wav_header(sample_rate=8000, channels=1, format_tag=0x7A7A, data_bytes=16000)
        + _pcm16(one_second), Expect(reason="unsupported codec"))
    raw("nan.wav", wav_header(sample_rate=8000, channels=1, bits=32, format_tag=IEEE_FLOAT, data_bytes=32000)
        + np.where(np.arange(8000) == 4000, np.nan, one_second).astype("<f4").tobytes(), Expect(reason="nan"))
    raw("inf.wav", wav_header(sample_rate=8000, channels=1, bits=32, format_tag=IEEE_FLOAT, data_bytes=32000)
        + np.where(np.arange(8000) == 10, np.inf, one_second).astype("<f4").tobytes(), Expect(reason="infinite"))

    # odd but valid audio
    sf.write(directory / "wrong_extension.mp3", one_second, 8000, format="FLAC")
    expect["wrong_extension.mp3"] = Expect(windows=1)
    # too little real audio to label (DecodeLimits.min_audio_s): an error, never a label of zero padding
    audio("one_sample.wav", Expect(reason="only 0.00 s of audio"), data=np.array([0.5], np.float32))
    raw("eight_samples.wav", wav_header(sample_rate=8000, channels=1, data_bytes=16) + _pcm16(one_second[:8]),
        Expect(reason="only 0.00 s of audio"))
    raw("short_of_header.wav", wav_header(sample_rate=8000, channels=1, data_bytes=32000) + _pcm16(one_second[:4000]),
        Expect(reason="only 0.50 s of audio"))
    audio("dc_only.wav", Expect(windows=1), data=np.full(22050 * 3, 0.25, np.float32))
    audio("digital_silence.wav", Expect(windows=1), data=np.zeros(22050 * 3, np.float32))
    square = np.sign(np.sin(2 * np.pi * 220 * np.arange(22050 * 3) / 22050)).astype(np.float32)
    audio("clipped_square.wav", Expect(windows=1), data=np.clip(1.5 * square, -1, 1))
    audio("hires_96k_24bit.wav", Expect(windows=2), seconds=8.0, sample_rate=96000, subtype="PCM_24")
    audio("six_channels.wav", Expect(windows=1), seconds=3.0, channels=6)
    audio("mono_8k.wav", Expect(windows=1), seconds=3.0, sample_rate=8000)
    audio("ünïcödé nämé with spaces.wav", Expect(windows=1), seconds=3.0, sample_rate=16000)
    audio("  leading and trailing spaces .flac", Expect(windows=1), seconds=3.0, sample_rate=16000)

    # things that are not plain files
    (directory / "directory.wav").mkdir(exist_ok=True)
    expect["directory.wav"] = Expect(reason="directory")
    loop = directory / "symlink_loop.wav"
    if not loop.is_symlink():
        loop.symlink_to(loop.name)
    expect["symlink_loop.wav"] = Expect(reason="symbolic links")
    fifo = directory / "fifo.wav"  # opening it for reading would block until a writer comes
    if not fifo.exists():
        os.mkfifo(fifo)
    expect["fifo.wav"] = Expect(reason="not a regular file")
    unreadable = directory / "unreadable.wav"
    _write(unreadable, seconds=3.0)
    unreadable.chmod(0)
    expect["unreadable.wav"] = Expect(reason="permission") if not os.access(unreadable, os.R_OK) else Expect(windows=1)

    if long_seconds is not None:
        write_long_wav(directory / "long_8k.wav", long_seconds)
        expect["long_8k.wav"] = Expect(windows=_default_windows(long_seconds))
    return expect


@contextlib.contextmanager
def hanging_uris(directory: Path) -> Iterator[list[str]]:
    """Two inputs on which a decoder really blocks, for as long as this context is open.

    - ``local://.../hang_fifo.wav``: a FIFO reached through an fsspec URI, which
      opens it without msc's regular-file check: ``open`` blocks in the kernel;
    - ``http://127.0.0.1:PORT/stalled.wav``: a server that accepts connections
      (the kernel's backlog does) and never answers: the read blocks (aiohttp
      gives up only after 5 minutes).
    """
    fifo = Path(directory) / "hang_fifo.wav"
    os.mkfifo(fifo)
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield [f"local://{fifo}", f"http://127.0.0.1:{server.getsockname()[1]}/stalled.wav"]


def _default_windows(seconds: float) -> int:
    """Windows the default policy gives for ``seconds`` of audio (5 s hop, last kept from 2.5 s)."""
    full, rest = divmod(seconds, 5.0)
    return max(1, int(full) + (rest >= 2.5))


def write_long_wav(path: Path, seconds: float, *, sample_rate: int = 8000, block_seconds: float = 60.0) -> Path:
    """A long mono 16-bit WAV of tones and noise, written block by block (never whole in memory)."""
    rng = np.random.default_rng(3)
    total = int(round(seconds * sample_rate))
    block = int(block_seconds * sample_rate)
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as sink:
        for start in range(0, total, block):
            t = np.arange(start, min(total, start + block)) / sample_rate
            tone = 0.3 * np.sin(2 * np.pi * (220 + 20 * (start // block % 12)) * t)
            sink.write(tone + 0.01 * rng.standard_normal(len(t)))
    return path


def small_then_large_reply(size: int) -> Iterator[bytes]:
    """Work for a :class:`~msc_core.isolation.ChildProcess`: yields ``b"small"``, then ``size`` zero bytes.

    A parent that pauses after the first item leaves the child blocked part-way
    through writing the second into the full pipe.
    """
    yield b"small"
    yield bytes(size)
