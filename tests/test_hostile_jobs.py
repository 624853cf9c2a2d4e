"""The hostile-input corpus (tests/hostile.py) through ``msc featurize`` and ``msc infer`` on a local Ray.

Every listed file ends as exactly one outcome: rows with the expected window
count, or one error row whose reason names the problem. The job finishes,
reports the failures in its exit code, and writes no duplicate rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from jobs.cli import main
from tests.hostile import make_hostile_corpus

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
    assert main(["infer", str(root), "--model", str(model_dir), "--out", str(out)]) == 1
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
