"""What the ``msc`` command prints and returns: one line per expected error with a documented exit
code, Ctrl-C as exit 130 with nothing half-written, and quiet output by default (real processes,
real Ray)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobs.cli import EXIT_ERROR, EXIT_INTERRUPTED, main
from tests.conftest import write_audio

REPO = Path(__file__).resolve().parents[1]


def msc(*args: str, **options) -> subprocess.Popen:
    """``msc ARGS`` in a fresh process (as a user runs it), stdout and stderr captured."""
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **options)


@pytest.mark.parametrize("argv, expected", [
    (["models", "calibrate", "MODEL", "--temperature", "-1"], "a temperature must be a finite number above 0"),
    (["models", "calibrate", "MODEL", "--temperature", "inf"], "a temperature must be a finite number above 0"),
    (["models", "calibrate", "MODEL"], "give SHARDS to fit on, or --temperature"),
])
def test_bad_values_are_one_line_and_exit_2(argv, expected, model_dir, tmp_path, capsys):
    copy = tmp_path / "model"
    copy.mkdir()
    for item in model_dir.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    argv = [str(copy) if part == "MODEL" else part for part in argv]
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"msc models: error: {expected}"), err


@pytest.mark.parametrize("job", ["infer", "featurize"])
def test_out_naming_a_file_is_one_line_and_exit_2(job, tmp_path, capsys):
    write_audio(tmp_path / "audio" / "a.wav", "music", 2.0)
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    assert main([job, str(tmp_path / "audio"), "--out", str(taken)]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"msc {job}: error: {taken} is a file; the output must be a directory (new, or msc's own)"]
    assert taken.read_text() == "mine"


def test_errors_are_one_family():
    from msc_core.errors import MscError, OutputExistsError, ParameterError

    assert issubclass(ParameterError, MscError) and issubclass(ParameterError, ValueError)
    assert issubclass(OutputExistsError, MscError) and issubclass(OutputExistsError, FileExistsError)


def test_verbosity_flags_before_or_after_the_command():
    from jobs.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["infer", "x", "--out", "o"]).verbosity == 0
    assert parser.parse_args(["-q", "infer", "x", "--out", "o"]).verbosity == -1
    assert parser.parse_args(["infer", "x", "--out", "o", "-v"]).verbosity == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["infer", "x", "--out", "o", "-v", "-q"])


def test_infer_is_quiet_and_ctrl_c_exits_130_with_nothing_half_written(tmp_path):
    """A small folder: progress and the summary only; then Ctrl-C part-way through a larger one."""
    audio = tmp_path / "audio"
    for i in range(3):
        write_audio(audio / f"m{i}.wav", "music", 6.0)
        write_audio(audio / f"s{i}.flac", "speech", 6.0)
    (audio / "broken.wav").write_bytes(b"RIFF\x00\x00not audio")
    run = msc("infer", str(audio), "--out", str(tmp_path / "labels"), "--num-cpus", "2")
    out, err = run.communicate(timeout=600)
    assert run.returncode == 1, err
    assert out.strip().splitlines() == [f"msc infer: 7 files, 6 ok (3 music, 3 speech), 1 failed; "
                                        f"results in {tmp_path / 'labels'}"]
    assert len(err.splitlines()) < 20, err
    assert "Traceback" not in err and "core_worker" not in err and "WARNING" not in err, err

    for i in range(40):
        write_audio(audio / f"more{i}.wav", "music", 30.0)
    out_dir = tmp_path / "interrupted"
    run = msc("infer", str(audio), "--out", str(out_dir), "--num-cpus", "2", "--chunk-files", "2")
    progress = []
    reader = threading.Thread(target=lambda: progress.extend(iter(lambda: run.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while "infer:" not in "".join(progress) and time.monotonic() < deadline:  # labelling has begun
        time.sleep(0.5)
    time.sleep(3)
    run.send_signal(signal.SIGINT)
    run.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(progress)
    assert run.returncode == EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1] == "msc infer: error: interrupted; rerun the same command to resume", err
    assert "Traceback" not in err, err
    leftovers = [p for p in out_dir.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers
    assert not (out_dir / "predictions.parquet").exists()
