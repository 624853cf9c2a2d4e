"""The run summary, tidy CSVs and ``report.html``: from outputs laid out as ``msc infer`` leaves them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import matplotlib.image as plt_image
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from matplotlib.colors import to_rgb

from jobs.cli import main
from msc_core.config import LABELS, PAPER
from msc_core.labelling import FileLabel, aggregate, class_probs, label_tables
from msc_core.report import (METADATA_KEY, REPORT_FILE, SUMMARY_FILE, RunSummary, csv_table, finish_run,
                             label_colours, model_facts, model_info_lines, read_summary, round_significant,
                             write_report)

HOURS_3 = 3 * 3600.0


def synthetic_label(path: str, seconds: float, *, seed: int, music_share: float) -> FileLabel:
    """A file's label from made-up window probabilities: runs of music and speech, 5-s windows."""
    rng = np.random.default_rng(seed)
    starts = np.arange(0.0, seconds, 5.0)
    runs = np.repeat(rng.random(len(starts) // 20 + 1) < music_share, 20)[: len(starts)]
    p_music = np.clip(np.where(runs, 0.9, 0.1) + rng.normal(0, 0.08, len(starts)), 0.001, 0.999)
    probs = class_probs(np.stack([1 - p_music, p_music], axis=1), LABELS)
    return aggregate(path, start_s=starts, end_s=np.minimum(starts + 5.0, seconds), duration_s=seconds,
                     probs=probs, model_id="trained-test", feature_hash=PAPER.hash)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """An output directory as msc infer leaves it: 3-hour file, short files, failures, a 'silence' label."""
    out = tmp_path_factory.mktemp("labels")
    labels = [synthetic_label("/archive/tapes/three_hours.wav", HOURS_3, seed=1, music_share=0.5)]
    labels += [synthetic_label(f"/archive/{kind}/{kind}_{index:02d}.flac", 30.0 + 17 * index, seed=10 + index,
                               music_share=0.9 if kind == "music" else 0.1)
               for kind in ("music", "speech") for index in range(8)]
    labels += [FileLabel.failed(f"/archive/broken/b{index}.wav", reason, model_id="trained-test",
                                feature_hash=PAPER.hash)
               for index, reason in enumerate(["empty file", "not a decodable audio file (junk)", "empty file"])]
    predictions, windows, segments = label_tables(labels)
    relabelled = segments.to_pandas()
    relabelled.loc[3, "label"] = "silence"  # a segment of the 3-hour file: labels beyond music/speech get a colour
    segments = pa.Table.from_pandas(relabelled, schema=segments.schema, preserve_index=False)
    summary = RunSummary("infer", arguments={"sources": ["/archive"]})
    summary.add(predictions)
    summary.mark("labelling")
    for name, table in (("predictions", predictions), ("windows", windows), ("segments", segments)):
        pq.write_table(table, out / f"{name}.parquet")
    for name, table in (("predictions", predictions), ("segments", segments)):
        pacsv.write_csv(csv_table(table), out / f"{name}.csv")
    return out, summary, predictions


def test_summary_counts_and_names_the_failures(outputs):
    out, summary, predictions = outputs
    facts = summary.to_dict()
    assert facts["files"] == 20 and facts["by_status"] == {"ok": 17, "error": 3}
    assert sum(facts["by_label"].values()) == 17 and set(facts["by_label"]) <= {"music", "speech"}
    assert sum(facts["hours_by_label"].values()) == pytest.approx(
        (HOURS_3 + sum(30.0 + 17 * index for index in range(8)) * 2) / 3600, rel=1e-5)
    assert sum(map(sum, facts["confidence_histogram"].values())) == 17
    assert [row["path"] for row in facts["failed"]] == [f"/archive/broken/b{index}.wav" for index in range(3)]
    assert facts["model_id"] == "trained-test" and facts["feature_hash"] == PAPER.hash
    assert RunSummary.from_dict(json.loads(json.dumps(facts))).to_dict() == facts
    lines = summary.console_lines("/out")
    assert lines[0].startswith("msc infer: 20 files, 17 ok (") and "3 failed" in lines[0]
    assert "  /archive/broken/b1.wav: not a decodable audio file (junk)" in lines
    assert any("predictions" in line and "summary.json" in line for line in lines)


def test_failed_label_does_not_repeat_its_path():
    label = FileLabel.failed("/a/b.wav", "/a/b.wav: empty file", model_id="m", feature_hash="h")
    assert label.error == "empty file"


def test_csv_rounds_and_types_like_the_parquet(outputs):
    out, _, predictions = outputs
    assert round_significant(np.array([0.123456789, 12345678.9, -1.23456789e-9, 0.0, np.nan]))[:4].tolist() == \
        [0.123457, 12345700.0, -1.23457e-9, 0.0]
    text = (out / "predictions.csv").read_text()
    assert "0.1234567" not in text and max(len(value) for value in text.replace("\n", ",").split(",")
                                            if value.strip('"')[:1].isdigit()) <= 12
    from_pandas = pd.read_csv(out / "predictions.csv")
    expected = predictions.to_pandas()
    pd.testing.assert_frame_equal(from_pandas, expected, check_dtype=False, rtol=1e-5)
    for name in ("confidence", "p_music", "duration_s", "windows", "music_fraction"):
        assert from_pandas[name].dtype.kind == expected[name].dtype.kind, name
    types = {row[0]: row[1] for row in
             duckdb.sql(f"DESCRIBE SELECT * FROM read_csv('{out / 'predictions.csv'}')").fetchall()}
    assert {types[name] for name in ("confidence", "p_music", "duration_s", "music_fraction")} == {"DOUBLE"}
    assert types["truncated"] == "BOOLEAN" and types["path"] == "VARCHAR"


def test_report_is_bounded_and_names_what_matters(outputs, tmp_path):
    out, summary, _ = outputs
    page = (tmp_path / "r.html")
    write_report(str(out), summary=summary, html_path=str(page), files="*/tapes/*")
    text = page.read_text()
    for needed in ("Totals per class", "Confidence", "Failed files (3)", "/archive/broken/b1.wav",
                   "not a decodable audio file (junk)", "Least certain files", "Timelines", "silence",
                   "three_hours.wav", "*/tapes/*"):
        assert needed in text, needed
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert len(text) < 2_000_000


def test_report_rebuilds_its_summary_from_the_outputs_alone(outputs, tmp_path):
    out, summary, _ = outputs
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "predictions.parquet").unlink()  # --format csv leaves only the CSV
    rebuilt = read_summary(str(copy))
    assert rebuilt.by_status == summary.by_status and rebuilt.by_label == summary.by_label
    assert main(["report", str(copy), "--sample", "3"]) == 0
    assert (copy / REPORT_FILE).stat().st_size > 10_000


def test_finish_run_writes_summary_and_report(outputs, tmp_path):
    out, summary, _ = outputs
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    lines = finish_run(str(copy), summary)
    facts = json.loads((copy / SUMMARY_FILE).read_text())
    assert facts["by_status"]["error"] == 3 and (copy / REPORT_FILE).is_file()
    assert lines[-1].endswith(REPORT_FILE)
    assert json.loads(summary.parquet_metadata()[METADATA_KEY])["files"] == 20


def test_colours_are_fixed_for_known_labels_and_found_for_others():
    colours = label_colours(["speech", "music", "zebra", "noise", "applause"])
    assert colours["music"] == "tab:blue" and colours["noise"] == "tab:brown"
    assert len({colours["zebra"], colours["applause"]} - {"tab:blue", "tab:orange", "tab:brown"}) == 2


def test_models_info_describes_a_model(model_dir, capsys):
    facts = model_facts(model_dir)
    assert facts["labels"] == list(LABELS) and facts["feature_hash"] == PAPER.hash and facts["widths"] == [4, 8, 16]
    assert main(["models", "info", str(model_dir)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines() == model_info_lines(facts)
    assert "speech, music" in text and PAPER.hash in text and "calibration  none" in text and "purpose tests" in text


# ---------------------------------------------------------------------------------------- in a real browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CONSOLE_LINE = re.compile(r"CONSOLE[(:]|Failed to load resource|Uncaught ", re.IGNORECASE)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is absent (Debian package 'chromium'; scripts/test.sh installs it "
                             "where apt-get is usable)")


def chromium(page: Path, profile: Path, *actions: str) -> subprocess.CompletedProcess:
    """Open ``page`` in headless Chromium with its console logged to stderr; ``actions`` e.g. --dump-dom."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
             "--window-size=1280,4200"]
    return subprocess.run([CHROMIUM, *flags, *actions, page.as_uri()], capture_output=True, text=True, timeout=180)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE_LINE.search(line)]


@needs_chromium
def test_report_renders_in_chromium_without_console_errors(outputs, tmp_path):
    out, summary, _ = outputs
    page = tmp_path / "report.html"
    write_report(str(out), summary=summary, html_path=str(page), files="*/tapes/*")

    # the detector sees what a broken page logs (else a quiet stderr would prove nothing)
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><body><script>console.error("msc-probe")</script>'
                      '<script>undefined_function()</script></body></html>')
    assert console_messages(chromium(broken, tmp_path / "profile0", "--dump-dom").stderr)

    dom = chromium(page, tmp_path / "profile1", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "msc archive report" in dom.stdout and "Failed files (3)" in dom.stdout
    assert not console_messages(dom.stderr), console_messages(dom.stderr)

    screenshot = tmp_path / "report.png"
    shot = chromium(page, tmp_path / "profile2", f"--screenshot={screenshot}")
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    assert not console_messages(shot.stderr), console_messages(shot.stderr)
    pixels = (plt_image.imread(screenshot)[..., :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(colour) for colour in np.unique(pixels, axis=0)}
    for label in ("music", "speech", "silence"):  # the charts' and timelines' colours are on screen
        assert tuple(round(255 * channel) for channel in to_rgb(label_colours([label])[label])) in colours, label
    if os.environ.get("MSC_REPORT_SCREENSHOT"):  # keep it to look at
        shutil.copy(screenshot, os.environ["MSC_REPORT_SCREENSHOT"])
