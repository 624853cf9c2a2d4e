"""``msc infer`` on a local 2-CPU Ray and ``msc predict``: a mixed archive, broken files, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jobs.cli import main
from msc_core import synth
from msc_core.config import CLASSES, PAPER
from msc_core.engine import FileRecords, committed_parts
from msc_core.labelling import label_file, load_model, window_weights
from tests.conftest import REPO, write_audio

LONG_SECONDS = 610.0


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Mixed lengths and formats, broken files, one over 10 minutes; maps each file to what it is."""
    root = tmp_path_factory.mktemp("archive")
    made = {
        write_audio(root / "a_music.wav", "music", 7.0, sample_rate=44100, channels=2): "ok",
        write_audio(root / "b_speech.flac", "speech", 12.0, sample_rate=16000): "ok",
        write_audio(root / "c_short.ogg", "music", 3.0, sample_rate=22050): "ok",
        write_audio(root / "sub" / "d_speech.mp3", "speech", 9.0, sample_rate=22050): "ok",
        write_audio(root / "sub" / "e_music.wav", "music", 16.0, sample_rate=11025, subtype="PCM_24"): "ok",
    }
    long = root / "sub" / "f_long.wav"
    clip = synth.speech_like(10.0, sample_rate=8000, seed=9)
    sf.write(long, np.tile(clip, int(LONG_SECONDS / 10) + 1)[: int(LONG_SECONDS * 8000)], 8000)
    made[long] = "ok"
    sf.write(root / "j_silence.wav", np.zeros(8 * 22050, np.float32), 22050)   # digital silence: labelled silence
    made[root / "j_silence.wav"] = "ok"
    (root / "g_empty.wav").write_bytes(b"")
    (root / "h_noise.flac").write_bytes(np.random.default_rng(0).bytes(4000))
    (root / "sub" / "i_text.wav").write_text("this is not audio\n" * 20)
    made.update({root / "g_empty.wav": "error", root / "h_noise.flac": "error", root / "sub" / "i_text.wav": "error"})
    return root, {str(path): status for path, status in made.items()}


def read_outputs(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pq.read_table(out / f"{name}.parquet").to_pandas() for name in ("predictions", "windows",
                                                                                 "segments")}


def test_infer_labels_a_mixed_archive(ray_local, model_dir, archive, tmp_path, capsys):
    root, expected = archive
    out = tmp_path / "out"
    code = main(["infer", str(root), "--model", str(model_dir), "--out", str(out), "--chunk-files", "3"])
    assert code == 1  # three broken files
    printed = capsys.readouterr()
    assert "10 files, 7 ok" in printed.out and "3 failed" in printed.out
    assert f"{root / 'g_empty.wav'}: empty file" in printed.err and str(out / "report.html") in printed.err
    tables = read_outputs(out)
    predictions, windows, segments = tables["predictions"], tables["windows"], tables["segments"]

    assert sorted(predictions["path"]) == sorted(expected)  # every file exactly once
    by_path = predictions.set_index("path")
    for path, status in expected.items():
        assert by_path.loc[path, "status"] == status
    errors = predictions[predictions.status == "error"]
    assert errors["error"].str.len().gt(0).all() and errors["label"].isna().all()
    assert "empty file" in by_path.loc[str(root / "g_empty.wav"), "error"]

    ok = predictions[predictions.status == "ok"]
    assert set(ok["label"]) <= {"music", "speech", "speech_over_music", "noise", "silence"}
    assert ok["error"].isna().all()
    np.testing.assert_allclose(ok[["p_speech", "p_music", "p_speech_over_music", "p_noise"]].sum(axis=1), 1,
                               atol=1e-5)
    silence = by_path.loc[str(root / "j_silence.wav")]
    assert silence["label"] == "silence" and silence["silence_s"] == silence["duration_s"] == 8.0
    assert (ok["model_id"].str.startswith("trained-")).all() and (ok["feature_hash"] == PAPER.hash).all()
    long = by_path.loc[str(root / "sub" / "f_long.wav")]
    # a 1-s hop: the model on every fifth window first, then in between only where the content changes
    assert long["duration_s"] == pytest.approx(LONG_SECONDS) and LONG_SECONDS // 5 <= long["windows"] < LONG_SECONDS
    # the pipeline's model stage picks the windows msc predict's does, with the same probabilities
    alone = label_file(str(root / "sub" / "f_long.wav"), load_model(model_dir))
    mine = windows[windows["path"] == str(root / "sub" / "f_long.wav")].sort_values("start_s")
    np.testing.assert_allclose(mine["start_s"], alone.window_start_s)
    np.testing.assert_allclose(mine[[f"p_{name}" for name in CLASSES]], alone.window_probs, atol=1e-5)

    # windows.parquet agrees with the per-file rows
    per_file = windows.groupby("path")
    assert per_file.size().to_dict() == ok.set_index("path")["windows"].to_dict()
    for column in ("p_music", "p_noise"):  # each window weighs the stretch it stands for
        weighted = per_file.apply(lambda rows: np.average(rows[column], weights=window_weights(rows["start_s"])))
        np.testing.assert_allclose(weighted.sort_index(), ok.set_index("path")[column].sort_index(),
                                   rtol=1e-6, atol=1e-9)
    assert (windows["end_s"] > windows["start_s"]).all()

    # segments tile every ok file end to end
    assert set(segments["path"]) == set(ok["path"])
    for path, group in segments.groupby("path", sort=False):
        starts, ends = group["start_s"].to_numpy(), group["end_s"].to_numpy()
        assert starts[0] == 0 and np.array_equal(starts[1:], ends[:-1])
        assert ends[-1] == pytest.approx(by_path.loc[path, "duration_s"])
        assert (group["label"].to_numpy()[1:] != group["label"].to_numpy()[:-1]).all()
        # the file's label is its dominant content class, its confidence that class's segments' (by seconds)
        mine = group[group["label"] == by_path.loc[path, "label"]]
        lengths = mine["end_s"] - mine["start_s"]
        assert by_path.loc[path, "confidence"] == pytest.approx((mine["confidence"] * lengths).sum() / lengths.sum())

    # summary.json, the Parquet metadata and report.html name the broken files; errors do not repeat the path
    broken = sorted(path for path, status in expected.items() if status == "error")
    facts = json.loads((out / "summary.json").read_text())
    assert sorted(row["path"] for row in facts["failed"]) == broken and facts["by_status"] == {"ok": 7, "error": 3}
    assert facts["arguments"]["chunk_files"] == 3 and facts["model_id"].startswith("trained-")
    assert set(facts["timings_s"]) >= {"labelling", "assembling", "total"}
    for name in ("predictions", "windows", "segments"):
        metadata = json.loads(pq.read_metadata(out / f"{name}.parquet").metadata[b"msc.summary"])
        assert metadata["files"] == 10 and metadata["by_status"] == facts["by_status"], name
    report = (out / "report.html").read_text()
    assert all(path in report for path in broken) and "Failed files (3)" in report
    assert not any(path in message for path, message in zip(errors["path"], errors["error"]))

    # CSV and Parquet agree (the CSV to 6 significant digits)
    for name in ("predictions", "segments"):
        csv = pd.read_csv(out / f"{name}.csv")
        pd.testing.assert_frame_equal(csv, tables[name], check_dtype=False)

    # a rerun into the same DIR finds everything done and rewrites the same results
    assert main(["infer", str(root), "--model", str(model_dir), "--out", str(out), "--chunk-files", "3"]) == 1
    pd.testing.assert_frame_equal(read_outputs(out)["predictions"], predictions)


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["SIGKILL", "SIGTERM"])
def test_interrupted_run_resumes_to_the_uninterrupted_result(ray_local, model_dir, tmp_path, signal_number):
    root = tmp_path / "files"
    paths = [write_audio(root / f"{index:02d}.wav", ("music", "speech")[index % 2], 6.0 + index, seed=index)
             for index in range(10)]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "jobs.infer", str(root), "--model", str(model_dir), "--out", str(out),
               "--chunk-files", "1", "--num-cpus", "2"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    process = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / "parts" / "predictions"
    try:
        deadline = time.monotonic() + 420  # the first commit can take minutes on 2 busy cores
        while (not list((out / "_files" / "_delta_log").glob("0*.json")) and process.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal_number)
        process.wait()
    committed = {Path(name).name for name in committed_parts(FileRecords(str(out)).read()) if "predictions" in name}
    before = {name: (parts / name).stat().st_mtime_ns for name in committed}
    assert 1 <= len(before) < len(paths), "the job must be killed midway"
    assert not (out / "predictions.parquet").exists()

    assert main(["infer", str(root), "--model", str(model_dir), "--out", str(out), "--chunk-files", "1"]) == 0
    after = {path.name: path.stat().st_mtime_ns for path in parts.glob("*.parquet")}
    assert len(after) == len(paths)
    assert all(after[name] == mtime for name, mtime in before.items())  # committed chunks were skipped
    predictions = pq.read_table(out / "predictions.parquet").to_pandas()
    assert sorted(predictions["path"]) == sorted(map(str, paths))
    assert (predictions["status"] == "ok").all()
    clean = tmp_path / "clean"
    assert main(["infer", str(root), "--model", str(model_dir), "--out", str(clean), "--chunk-files", "1"]) == 0
    for name, table in read_outputs(out).items():
        pd.testing.assert_frame_equal(table, read_outputs(clean)[name], obj=name)


def test_infer_refuses_other_features(ray_local, model_dir, archive, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("model.keras", "model.json"):
        (other / name).write_bytes((model_dir / name).read_bytes())
    config = PAPER.__class__(n_mels=64)
    metadata = json.loads((model_dir / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**metadata, "feature_hash": config.hash}))
    (other / "feature_config.json").write_text(config.to_json())
    code = main(["infer", str(archive[0]), "--model", str(other), "--out", str(tmp_path / "out")])
    assert code == 2 and "feature config" in capsys.readouterr().err


def test_predict_prints_labels_and_json(model_dir, archive):
    root, _ = archive
    files = [str(root / "a_music.wav"), str(root / "g_empty.wav")]
    script = ("import sys; from jobs.cli import main; code = main(sys.argv[1:]); "
              "assert 'ray' not in sys.modules, 'msc predict imported ray'; sys.exit(code)")
    command = [sys.executable, "-c", script, "predict", *files, "--model", str(model_dir)]
    text = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert text.returncode == 1, text.stderr
    assert "a_music.wav: " in text.stdout and "confidence" in text.stdout and "empty file" in text.stdout
    scripted = subprocess.run([*command, "--json"], cwd=REPO, capture_output=True, text=True)
    assert scripted.returncode == 1, scripted.stderr
    rows = json.loads(scripted.stdout)
    assert [row["status"] for row in rows] == ["ok", "error"]
    assert rows[0]["segments"][0]["start_s"] == 0 and rows[0]["segments"][-1]["end_s"] == pytest.approx(7.0)


def test_model_pool_grows_with_nodes_and_never_oversubscribes():
    from jobs.infer import WRITER_CPUS, plan_resources

    laptop = plan_resources(node_cpus=[2], gpus=0, gpus_per_actor=0)
    assert (laptop.actors, laptop.threads) == (1, 2)
    one, two = (plan_resources(node_cpus=[1] * nodes, gpus=0, gpus_per_actor=0) for nodes in (1, 2))
    assert (one.actors, two.actors, one.threads, two.threads) == (1, 2, 1, 1)
    big = plan_resources(node_cpus=[64, 64, 0], gpus=0, gpus_per_actor=0)
    assert big.actors == 16 and big.threads <= big.actor_cpus + 0.5
    for plan, cpus in ((laptop, 2), (one, 1), (big, 64)):  # an actor, a task and the writer fit on the node
        assert plan.actor_cpus + plan.task_cpus + WRITER_CPUS <= cpus
    gpu = plan_resources(node_cpus=[8], gpus=2, gpus_per_actor=1)
    assert (gpu.actors, gpu.actor_gpus, gpu.task_cpus) == (2, 1, 1.0)


def test_a_precision_asked_for_is_a_setting():
    from jobs.infer import settings_of
    from msc_core.labelling import labelling_windows

    config, coarse_s = labelling_windows()
    common = {"model_id": "m", "config": config, "coarse_s": coarse_s, "max_windows": 0, "view": "all"}
    assert settings_of(**common, precision="fp32") == settings_of(**common)  # earlier outputs stay valid
    assert "precision" not in json.loads(settings_of(**common))
    for precision in ("bf16", "auto"):
        assert json.loads(settings_of(**common, precision=precision))["precision"] == precision


def test_the_writer_waits_for_the_count_and_fails_a_file_that_broke_after_a_piece(tmp_path):
    """WriteChunks: the chunk's row count rides on its last piece, whichever order rows come in; a file
    whose decoding failed after some of its pieces is one error row, its windows dropped."""
    import pyarrow as pa

    from jobs.infer import WriteChunks

    def rows(file, row, chunk_rows, start_s, error="", duration_s=np.nan):
        count = len(start_s)
        return {"chunk_id": ["c"] * count, "chunk_rows": [chunk_rows] * count, "row": row + np.arange(count),
                "file": [file] * count, "path": [f"f{file}.wav"] * count, "start_s": start_s,
                "end_s": np.asarray(start_s) + 5.0, "duration_s": [duration_s] * count,
                "truncated_at_s": [np.nan] * count, "error": [error] * count, "cues": [b""] * count,
                **{f"p_{name}": [1.0 if name == "music" else 0.0] * count for name in CLASSES}}

    writer = WriteChunks(str(tmp_path), "model", PAPER.hash)
    last = pa.table(rows(1, 5, 6, [0.0], error="decoding took longer than 9 s; killed"))
    assert writer(last).num_rows == 0  # the count is here, the rows before it are not
    first = pa.table(rows(0, 0, -1, [0.0, 1.0, 2.0], duration_s=7.5))
    broken = pa.table(rows(1, 3, -1, [0.0, 1.0]))
    assert writer(broken).num_rows == 0
    written = writer(pa.concat_tables([first, broken])).to_pylist()  # a retried task's rows again, and the rest
    assert [(row["files"], row["errors"]) for row in written] == [(2, 1)]
    predictions = pq.read_table(tmp_path / "parts" / "predictions" / "c.parquet").to_pandas().set_index("path")
    assert predictions.loc["f0.wav", "status"] == "ok" and predictions.loc["f0.wav", "duration_s"] == 7.5
    assert predictions.loc["f1.wav", "status"] == "error" and "killed" in predictions.loc["f1.wav", "error"]
    windows = pq.read_table(tmp_path / "parts" / "windows" / "c.parquet").to_pandas()
    assert windows["path"].tolist() == ["f0.wav"] * 3


def test_the_stages_label_pieces_as_predict_labels_the_file_whether_codes_or_audio_travel(model_dir, tmp_path):
    """decode_chunk -> LabelWindows in this process, pieces of 20 windows: the windows and probabilities
    of label_file, with the audio sent (CPU actors featurize) or every window's codes (GPU actors)."""
    import pyarrow as pa

    from jobs.infer import LabelWindows, decode_chunk
    from msc_core.audio import DecodeLimits
    from msc_core.labelling import labelling_windows

    path = str(write_audio(tmp_path / "a.flac", "speech", 61.0, sample_rate=16000))
    config, coarse_s = labelling_windows()
    alone = label_file(path, load_model(model_dir))
    model = LabelWindows(str(model_dir), 32, "all", None, coarse_s, "fp32")  # threads: as TensorFlow has them
    for featurize in (False, True):
        pieces = list(decode_chunk({"chunk_id": ["c"], "paths": [[path]]}, config=config, limits=DecodeLimits(),
                                   isolate=False, piece_windows=20, featurize=featurize))
        assert len(pieces) == 3 and [piece["chunk_rows"][0].as_py() for piece in pieces][:2] == [-1, -1]
        windows = pd.DataFrame(model(pa.concat_tables(pieces)))
        windows = windows[windows["p_speech"].notna()]
        np.testing.assert_array_equal(windows["start_s"], alone.window_start_s)
        np.testing.assert_allclose(windows[[f"p_{name}" for name in CLASSES]], alone.window_probs, atol=1e-6)
