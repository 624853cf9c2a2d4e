"""infer, train and predict with their inputs and outputs in S3 (a real moto server on 127.0.0.1).

The jobs run as subprocesses (``python -m jobs.<job>``) with ``AWS_ENDPOINT_URL`` in their
environment, each with its own local Ray (``--num-cpus 2``), as a user would run them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_training import SMALL_WIDTHS, write_synthetic_shards

from tests.conftest import REPO, write_audio

KINDS = ("music", "speech")


@pytest.fixture
def s3_env_here(s3_server, monkeypatch) -> None:
    """``s3_server``'s AWS_* settings in this process's environment too, for library calls made in the test."""
    for key, value in s3_server.env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)


def run_job(s3_server, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=s3_server.env, capture_output=True,
                          text=True, timeout=timeout)


def read_table(bucket, key: str) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(bucket.cat(key))).to_pandas()


def part_versions(bucket, prefix: str) -> dict[str, str]:
    """key -> LastModified of every Parquet object under ``prefix`` (one-second resolution on moto)."""
    bucket.invalidate_cache()
    return {key: str(info["LastModified"]) for key, info in bucket.find(prefix, detail=True).items()
            if key.endswith(".parquet")}


def test_infer_and_predict_from_and_to_s3(s3_server, model_dir, tmp_path):
    from msc_core.labelling import label_file, load_model

    bucket = s3_server.bucket
    bucket.mkdir("labels")
    local = {}
    for index in range(5):
        kind = KINDS[index % 2]
        path = write_audio(tmp_path / kind / f"{index}.wav", kind, 6.0 + 2 * index, seed=index)
        local[f"s3://labels/in/{kind}/{index}.wav"] = path
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    bucket.put(str(tmp_path / "music"), "labels/in/music", recursive=True)
    bucket.put(str(tmp_path / "speech"), "labels/in/speech", recursive=True)
    bucket.put(str(tmp_path / "broken.wav"), "labels/in/broken.wav")
    bucket.put(str(model_dir), "labels/models/small", recursive=True)

    command = ["jobs.infer", "s3://labels/in", "--model", "s3://labels/models/small", "--out", "s3://labels/out",
               "--chunk-files", "2", "--num-cpus", "2"]
    first = run_job(s3_server, *command)
    assert first.returncode == 1, first.stderr[-3000:]  # the broken file
    assert "6 files, 5 ok" in first.stdout
    predictions = read_table(bucket, "labels/out/predictions.parquet")
    assert sorted(predictions["path"]) == sorted([*local, "s3://labels/in/broken.wav"])  # each file once
    by_path = predictions.set_index("path")
    assert by_path.loc["s3://labels/in/broken.wav", "status"] == "error"
    model = load_model(model_dir)
    for uri, path in local.items():  # the same numbers as labelling the local copy in-process
        expected = label_file(str(path), model)
        assert by_path.loc[uri, "status"] == "ok" and by_path.loc[uri, "windows"] == expected.windows
        assert by_path.loc[uri, "p_music"] == pytest.approx(expected.probability("music"), abs=1e-5)
    windows = read_table(bucket, "labels/out/windows.parquet")
    assert windows.groupby("path").size().to_dict() == by_path["windows"][by_path["status"] == "ok"].to_dict()
    segments = read_table(bucket, "labels/out/segments.parquet")
    assert set(segments["path"]) == set(local)
    for name, table in (("predictions", predictions), ("segments", segments)):
        csv = pd.read_csv(io.BytesIO(bucket.cat(f"labels/out/{name}.csv")))
        pd.testing.assert_frame_equal(csv, table, check_dtype=False, check_exact=False, rtol=1e-5)  # CSVs: 6 digits

    # A rerun against the bucket finds every chunk done: no part is rewritten, the outputs are the same.
    parts = part_versions(bucket, "labels/out/parts")
    assert len([key for key in parts if "/predictions/" in key]) == 3
    second = run_job(s3_server, *command)
    assert second.returncode == 1, second.stderr[-3000:]
    assert "(0 new, 0 changed, 0 deleted, 6 unchanged, 0 repaired)" in second.stdout
    assert part_versions(bucket, "labels/out/parts") == parts
    pd.testing.assert_frame_equal(read_table(bucket, "labels/out/predictions.parquet"), predictions)

    # msc predict takes the model from the bucket too.
    predicted = run_job(s3_server, "jobs.cli", "predict", str(local["s3://labels/in/music/0.wav"]),
                        "--model", "s3://labels/models/small", "--json")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    [row] = json.loads(predicted.stdout)
    assert row["p_music"] == pytest.approx(by_path.loc["s3://labels/in/music/0.wav", "p_music"], abs=1e-5)


@pytest.mark.slow  # 1.5-2 min on 2 cores; featurize and infer on S3 stay in the default suite
@pytest.mark.usefixtures("s3_env_here")
def test_train_from_and_to_s3_with_resume(s3_server, tmp_path):
    from jobs.train import finished_checkpoints, train
    from msc_core.errors import InputError, OutputExistsError
    from msc_core.training import TrainSettings

    bucket = s3_server.bucket
    bucket.mkdir("training")
    data = write_synthetic_shards(tmp_path / "data", files=2, splits={"train": 16, "val": 4, "test": 4},
                                  train_repeats=2)
    bucket.put(str(data / "shards"), "training/data/shards", recursive=True)
    command = [sys.executable, "-m", "jobs.train", "s3://training/data", "--out", "s3://training/model",
               "--workers", "1", "--epochs", "3", "--widths", ",".join(map(str, SMALL_WIDTHS)), "--num-cpus", "2"]

    # Killed once its first checkpoint is finished in the bucket ...
    process = subprocess.Popen(command, cwd=REPO, env=s3_server.env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not finished_checkpoints("s3://training/model.ray"):  # listed, so a resume starts from it
            assert process.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not bucket.exists("training/model/model.json")
    with pytest.raises(InputError, match="--resume"):  # refused before Ray starts
        train("s3://training/data", "s3://training/model", TrainSettings())

    # ... and resumed from the bucket's checkpoint.
    resumed = run_job(s3_server, *command[2:], "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "test accuracy" in resumed.stdout
    bucket.invalidate_cache()
    names = {key.rsplit("/", 1)[-1] for key in bucket.find("training/model")}
    assert {"model.keras", "model.json", "feature_config.json", "history.csv", "training_curves.png",
            "evaluation.json", "confusion_matrix.json", "confusion_matrix.png", "misclassified.csv"} <= names
    extra = json.loads(bucket.cat("training/model/model.json"))["extra"]
    assert extra["epochs_run"] == 3 and extra["resumed_at"] and extra["resumed_at"][0] >= 1
    history = pd.read_csv(io.BytesIO(bucket.cat("training/model/history.csv")))
    assert list(history["epoch"]) == [1, 2, 3]
    evaluation = json.loads(bucket.cat("training/model/evaluation.json"))
    assert evaluation["windows"] == 2 * 4 and 0 <= evaluation["accuracy"] <= 1
    assert np.isfinite(history["val_loss"]).all()
    with pytest.raises(OutputExistsError, match="already exists"):  # a finished model URI is never overwritten
        train("s3://training/data", "s3://training/model", TrainSettings())


@pytest.mark.usefixtures("s3_env_here")
def test_a_model_uploaded_to_s3_is_loadable_only_once_whole(s3_server, model_dir, tmp_path):
    from msc_core.errors import ModelLoadError
    from msc_core.model import METADATA_FILE, load_model_dir
    from msc_core.storage import output_dir

    s3_server.bucket.mkdir("uploads")
    # An upload that fails part-way (a file vanishes) leaves model.json out, so the prefix is no model ...
    with pytest.raises(OSError):
        with output_dir("s3://uploads/broken", last=METADATA_FILE) as local:
            shutil.copytree(model_dir, local)
            os.symlink(tmp_path / "gone", os.path.join(local, "zz-vanished"))
    s3_server.bucket.invalidate_cache()
    assert s3_server.bucket.exists("uploads/broken/model.keras")
    assert not s3_server.bucket.exists(f"uploads/broken/{METADATA_FILE}")
    with pytest.raises(ModelLoadError, match=f"missing {METADATA_FILE}"):
        load_model_dir("s3://uploads/broken")
    # ... and a whole one loads.
    with output_dir("s3://uploads/whole", last=METADATA_FILE) as local:
        shutil.copytree(model_dir, local)
    assert load_model_dir("s3://uploads/whole").model_id == load_model_dir(model_dir).model_id
