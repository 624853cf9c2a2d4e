"""Decoding in a supervised child process: same features, a hard time bound on real hangs, recovery.

The hangs are real: a FIFO opened through an fsspec URI blocks in the kernel's
``open``, and a server that never answers blocks the decoder's first read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from msc_core.audio import DecodeLimits
from msc_core.errors import AudioDecodeError, ChildProcessFailed
from msc_core.isolation import ChildProcess
from msc_core.labelling import featurize_file, warm_up, window_config
from tests.conftest import write_audio
from tests.hostile import hanging_uris, small_then_large_reply

CONFIG = window_config("all")


@pytest.fixture(scope="module")
def child():
    with ChildProcess(warm_up=warm_up) as running:
        running.start()
        yield running


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return write_audio(tmp_path_factory.mktemp("good") / "good.flac", "music", 12.0, sample_rate=44100, channels=2)


def test_isolated_features_equal_in_process_ones_and_reuse_the_child(child, good):
    pid = child.pid
    isolated = featurize_file(good, CONFIG, child=child)
    local = featurize_file(good, CONFIG)
    for name in ("start_s", "end_s", "codes"):
        np.testing.assert_array_equal(getattr(isolated, name), getattr(local, name))
    assert (isolated.duration_s, isolated.sample_rate, isolated.channels, isolated.truncated_at_s) == \
        (local.duration_s, 44100, 2, None)
    featurize_file(good, CONFIG, child=child)
    assert child.pid == pid


def test_decode_errors_come_back_as_themselves(child, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio" * 100)
    with pytest.raises(AudioDecodeError) as caught:
        featurize_file(broken, CONFIG, child=child)
    assert caught.value.path == str(broken) and "not a decodable audio file" in caught.value.reason


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(AudioDecodeError, match="not a regular file"):
        featurize_file(fifo, CONFIG)  # in this process: opening it would block forever
    assert time.monotonic() - started < 5


def test_hung_decoders_are_killed_at_the_limit_and_the_next_file_works(child, good, tmp_path):
    limits = DecodeLimits(max_decode_s=2.0)
    with hanging_uris(tmp_path) as uris:
        for uri in uris:
            started = time.monotonic()
            with pytest.raises(AudioDecodeError) as caught:
                featurize_file(uri, CONFIG, child=child, limits=limits)
            took = time.monotonic() - started
            assert caught.value.path == uri and caught.value.reason == "decoding took longer than 2 s; killed"
            assert 2.0 <= took < 10.0, took
            assert child.pid is None  # killed; the next call starts a new one
            assert len(featurize_file(good, CONFIG, child=child, limits=limits).start_s) == 2


def test_a_child_stopped_part_way_through_a_reply_is_killed_at_the_deadline():
    with ChildProcess() as child:
        replies = child.stream(small_then_large_reply, 64 << 20, timeout_s=3.0)
        assert next(replies) == b"small"
        time.sleep(0.5)  # the child is now blocked writing the large item into the full pipe
        os.kill(child.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(ChildProcessFailed, match="took longer than 3 s") as caught:
            next(replies)
        assert caught.value.timed_out and time.monotonic() - started < 10
        assert child.pid is None
        assert list(child.stream(small_then_large_reply, 10, timeout_s=60)) == [b"small", bytes(10)]


def test_a_child_that_dies_fails_only_its_file(child, good, tmp_path):
    child.start()
    killer = threading.Timer(1.0, os.kill, (child.pid, signal.SIGKILL))
    killer.start()
    with hanging_uris(tmp_path) as uris, pytest.raises(AudioDecodeError) as caught:
        featurize_file(uris[0], CONFIG, child=child, limits=DecodeLimits(max_decode_s=60))
    killer.join()
    assert caught.value.reason == "decoding process died (exit code -9)"
    assert len(featurize_file(good, CONFIG, child=child).start_s) == 2


def test_a_hung_child_exits_when_its_parent_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from tests.hostile import hanging_uris, small_then_large_reply
        from msc_core.isolation import ChildProcess
        from msc_core.labelling import featurize_file
        child = ChildProcess()
        child.start()
        print(child.pid, flush=True)
        with hanging_uris({str(tmp_path)!r}) as uris:
            featurize_file(uris[0], child=child)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        time.sleep(1.0)
        os.kill(child_pid, 0)  # alive, blocked in open()
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child_pid):
        time.sleep(0.2)
    assert not _alive(child_pid)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, reaped by init later, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_truncated_files_say_where_they_were_cut(tmp_path):
    path = write_audio(tmp_path / "thirty.wav", "speech", 30.0)
    features = featurize_file(path, CONFIG, limits=DecodeLimits(max_windows=3))
    assert list(features.start_s) == [0.0, 5.0, 10.0]
    assert features.truncated_at_s == 15.0 and features.duration_s == pytest.approx(30.0)
    whole = featurize_file(path, CONFIG, limits=DecodeLimits(max_windows=6))
    assert whole.truncated_at_s is None and len(whole.start_s) == 6
