"""The hostile-input corpus (tests/hostile.py) through ``msc featurize`` and ``msc infer`` on a local Ray.

Every listed file ends as exactly one outcome: rows with the expected window
count, or one error row whose reason names the problem. The job finishes,
reports the failures in its exit code, and writes no duplicate rows. Files on
which the decoder hangs are killed at ``--file-timeout``; files cut by
``--max-windows`` are flagged in the outputs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from jobs.cli import main
from tests.conftest import write_audio
from tests.hostile import hanging_uris, make_hostile_corpus

TIMEOUT_S = 3
KILLED = f"decoding took longer than {TIMEOUT_S} s; killed"

#: Not plain files: a directory is walked into, not read; a symlink loop is skipped or refused when listed.
NOT_LISTED_OR_REFUSED = {"directory.wav", "symlink_loop.wav"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("hostile")
    return root, make_hostile_corpus(root)


def check_outcomes(expect: dict, windows_by_name: dict[str, int], reasons_by_name: dict[str, str]) -> None:
    """Each input is either labelled with the expected window count or refused for the expected reason."""
    assert not set(windows_by_name) & set(reasons_by_name), "a file both succeeded and failed"
    for name, outcome in expect.items():
        if name in NOT_LISTED_OR_REFUSED and name not in reasons_by_name:
            continue
        if outcome.ok:
            assert windows_by_name.get(name) == outcome.windows, (name, windows_by_name.get(name))
        else:
            assert outcome.reason in reasons_by_name.get(name, "<no error row>").lower(), (name, reasons_by_name.get(name))


def test_featurize_gives_rows_or_explained_errors(ray_local, hostile, tmp_path):
    root, expect = hostile
    out = tmp_path / "features"
    assert main(["featurize", str(root), "--out", str(out), "--quiet", "--files-per-task", "8"]) == 1
    rows = pd.read_parquet(out / "shards", columns=["id", "path"])
    assert rows["id"].is_unique
    errors = pd.read_parquet(out / "errors.parquet")
    assert errors["path"].is_unique
    check_outcomes(expect, rows.groupby(rows["path"].map(os.path.basename)).size().to_dict(),
                   dict(zip(errors["path"].map(os.path.basename), errors["message"])))


def test_infer_gives_one_row_per_file(ray_local, hostile, model_dir, tmp_path):
    root, expect = hostile
    out = tmp_path / "labels"
    # 5-s windows back to back, as featurize cuts them: the counts expected do not depend on what the model says
    assert main(["infer", str(root), "--model", str(model_dir), "--out", str(out), "--hop", "5"]) == 1
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert predictions["path"].is_unique
    names = predictions["path"].map(os.path.basename)
    ok = predictions["status"] == "ok"
    assert predictions.loc[ok, "error"].isna().all() and predictions.loc[~ok, "error"].str.len().min() > 10
    check_outcomes(expect, dict(zip(names[ok], predictions.loc[ok, "windows"])),
                   dict(zip(names[~ok], predictions.loc[~ok, "error"])))
    windows = pd.read_parquet(out / "windows.parquet")
    assert windows.groupby("path").size().to_dict() == dict(zip(predictions.loc[ok, "path"],
                                                                predictions.loc[ok, "windows"]))


@pytest.fixture
def hanging_archive(tmp_path):
    """Short and long good files, a FIFO named directly, and two inputs that hang: {path: expected outcome}."""
    short = write_audio(tmp_path / "short.wav", "music", 6.0)
    long = write_audio(tmp_path / "long.flac", "speech", 31.0, sample_rate=16000)
    fifo = tmp_path / "named_fifo.wav"
    os.mkfifo(fifo)
    with hanging_uris(tmp_path) as uris:
        yield {str(short): 1, str(long): 3, str(fifo): "not a regular file", uris[0]: KILLED, uris[1]: KILLED}


def limited(command: list[str]) -> tuple[int, float]:
    """Run ``msc`` with a short --file-timeout and --max-windows 3; (exit code, seconds)."""
    started = time.monotonic()
    code = main([*command, "--file-timeout", str(TIMEOUT_S), "--max-windows", "3"])
    return code, time.monotonic() - started


def test_featurize_kills_hung_files_and_reports_truncation(ray_local, hanging_archive, tmp_path):
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": list(hanging_archive), "label": "music"}).to_csv(manifest, index=False)
    out = tmp_path / "features"
    code, seconds = limited(["featurize", str(manifest), "--allow-outside", "--out", str(out), "--quiet"])
    assert code == 1 and seconds < 120  # each hang alone would take 5 min (HTTP) or forever (FIFO)
    rows = pd.read_parquet(out / "shards", columns=["id", "path"])
    assert rows["id"].is_unique
    errors = pd.read_parquet(out / "errors.parquet").set_index("path")["message"]
    for path, expected in hanging_archive.items():
        if isinstance(expected, int):
            assert (rows["path"] == path).sum() == expected and path not in errors
        else:
            assert expected in errors[path] and path not in set(rows["path"])
    truncated = pd.read_parquet(out / "truncated.parquet")
    assert truncated.to_dict("records") == [{"path": str(tmp_path / "long.flac"), "windows": 3,
                                             "truncated_at_s": 15.0, "duration_s": 31.0}]
    assert json.loads((out / "manifest.json").read_text())["truncated"] == 1


def test_infer_kills_hung_files_and_flags_truncation(ray_local, hanging_archive, model_dir, tmp_path):
    listing = tmp_path / "files.txt"
    listing.write_text("".join(f"{path}\n" for path in hanging_archive))
    out = tmp_path / "labels"
    code, seconds = limited(["infer", str(listing), "--model", str(model_dir), "--out", str(out), "--hop", "5"])
    assert code == 1 and seconds < 120
    for table in (pd.read_parquet(out / "predictions.parquet"), pd.read_csv(out / "predictions.csv")):
        by_path = table.set_index("path")
        assert sorted(by_path.index) == sorted(hanging_archive)
        for path, expected in hanging_archive.items():
            row = by_path.loc[path]
            if isinstance(expected, int):
                assert row["status"] == "ok" and row["windows"] == expected
            else:
                assert row["status"] == "error" and expected in row["error"] and not row["truncated"]
        long, short = by_path.loc[str(tmp_path / "long.flac")], by_path.loc[str(tmp_path / "short.wav")]
        assert long["truncated"] and long["truncated_at_s"] == 15.0 and long["duration_s"] == 31.0
        assert not short["truncated"] and pd.isna(short["truncated_at_s"])
    segments = pd.read_parquet(out / "segments.parquet")
    assert segments.loc[segments["path"] == str(tmp_path / "long.flac"), "end_s"].max() == 15.0
