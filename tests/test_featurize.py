"""The featurize job on a real local Ray over a generated archive holding every layout and broken files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from msc_core import depth, shards
from msc_core.config import PAPER
from tests.conftest import REPO, write_audio

BROKEN = ("unlabelled/empty.wav", "unlabelled/random.wav", "unlabelled/text.mp3")


def build_archive(root: Path) -> dict[str, int]:
    """Every supported layout plus broken files; returns the expected good files per label."""
    data = root / "data"
    for i, genre in enumerate(("jazz", "rock", "jazz", "rock")):
        write_audio(data / f"GTZAN/genres_original/{genre}/{genre}.{i:05d}.wav", "music", 3, seed=i)
    for i, (speaker, chapter) in enumerate([(84, 121), (84, 122), (174, 50), (251, 7)]):
        write_audio(data / f"LibriSpeech/dev-clean/{speaker}/{chapter}/{speaker}-{chapter}-{i:04d}.flac",
                    "speech", 8 if i == 0 else 3, sample_rate=16000, seed=10 + i)  # 8 s: two windows
    write_audio(data / "mine/music/live.wav", "music", 4, sample_rate=44100, channels=2, seed=20)
    write_audio(data / "mine/speech/talk.ogg", "speech", 3, seed=21)
    write_audio(data / "unlabelled/field.wav", "speech", 3, seed=22)
    (data / BROKEN[0]).write_bytes(b"")
    (data / BROKEN[1]).write_bytes(np.random.default_rng(0).bytes(3000))
    (data / BROKEN[2]).write_text("not audio at all")
    listed = root / "listed"
    for i in range(3):
        write_audio(listed / f"clips/c{i}.wav", "music" if i else "speech", 3, seed=30 + i)
    (listed / "manifest.csv").write_text("path,label,group\nclips/c0.wav,speech,show-1\nclips/c1.wav,music,album\n"
                                         "clips/c2.wav,music,album\n")
    return {"music": 4 + 1 + 2, "speech": 4 + 1 + 1, "unlabelled": 1}


def featurize(*args: str) -> int:
    return main(["featurize", *map(str, args), "--quiet"])


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    expected = build_archive(root)
    return root, expected


@pytest.fixture(scope="module")
def finished(ray_local, archive, tmp_path_factory):
    root, expected = archive
    out = tmp_path_factory.mktemp("out") / "features"
    code = featurize(root / "data", root / "listed/manifest.csv", "--out", out, "--files-per-task", 3,
                     "--shard-mb", 0.06)  # at most two windows of codes per shard
    return out, code, expected


def test_counts_manifest_and_exit_code(finished):
    out, code, expected = finished
    assert code == 1  # broken files failed
    manifest = json.loads((out / "manifest.json").read_text())
    files = {label: sum(by_split.values()) for label, by_split in manifest["counts"]["files"].items()}
    assert files == expected
    assert manifest["files"] == sum(expected.values()) and manifest["errors"] == len(BROKEN)
    assert manifest["windows"] == manifest["files"] + 1  # the 8 s file gives two windows
    assert manifest["chunks"] == 6 and manifest["shards"] == len(list((out / "shards").glob("part-*.parquet"))) > 6
    assert manifest["config"]["hash"] == PAPER.hash and manifest["config"]["window"]["mode"] == "all"
    assert set(manifest["counts"]["files"]["unlabelled"]) == {"none"}
    assert {"msc", "ray", "pyarrow"} <= set(manifest["versions"]) and manifest["timings"]["seconds"] > 0


def test_error_table(finished):
    out, _, _ = finished
    errors = pd.read_parquet(out / "errors.parquet")
    assert list(errors.columns) == ["path", "stage", "error_type", "message"]
    assert {Path(p).name for p in errors["path"]} == {Path(name).name for name in BROKEN}
    assert set(errors["error_type"]) == {"AudioDecodeError"}
    assert errors["message"].str.len().min() > 10


def test_rows_labels_groups_and_leak_free_splits(finished):
    out, _, _ = finished
    glob = f"{out}/shards/*.parquet"
    leaks = duckdb.sql(f"SELECT \"group\" FROM '{glob}' GROUP BY 1 HAVING count(DISTINCT split) > 1").fetchall()
    assert leaks == []
    rows = duckdb.sql(f"SELECT path, label, \"group\", genre, split, \"window\", start_s, sample_rate, channels "
                      f"FROM '{glob}' ORDER BY path, \"window\"").df()
    assert rows["path"].str.contains("/empty.wav|/random.wav|/text.mp3").sum() == 0
    gtzan = rows[rows["path"].str.contains("genres_original")]
    assert set(gtzan["genre"]) == {"jazz", "rock"} and set(gtzan["label"]) == {"music"}
    assert set(rows[rows["path"].str.contains("LibriSpeech")]["group"]) == {
        "librispeech:84", "librispeech:174", "librispeech:251"}
    assert set(rows[rows["path"].str.contains("/clips/")]["group"]) == {"show-1", "album"}
    live = rows[rows["path"].str.endswith("live.wav")].iloc[0]
    assert (live["sample_rate"], live["channels"], live["label"]) == (44100, 2, "music")
    assert rows["split"].isna().equals(rows["label"].isna())
    two = rows[rows["path"].str.endswith("-0000.flac")]
    assert list(two["window"]) == [0, 1] and list(two["start_s"]) == [0.0, 5.0]


def test_shards_open_in_pyarrow_pandas_and_keep_the_config(finished):
    out, _, _ = finished
    paths = shards.list_shards(str(out))
    assert paths and all(Path(p).name.startswith("part-") for p in paths)
    assert shards.read_feature_config(paths[0]) == PAPER
    table = pq.read_table(paths[0])
    assert table.schema.field("codes").type.byte_width == 128 * 215
    frame = pd.read_parquet(out / "shards")
    assert frame["id"].is_unique and set(frame["feature_hash"]) == {PAPER.hash}


def test_ray_and_tf_readers(finished, ray_local):
    from jobs.featurize import read_shards_ray

    out, _, _ = finished
    dataset = read_shards_ray(str(out))
    labels = dataset.select_columns(["label"]).to_pandas()["label"]
    assert len(labels) == dataset.count() and labels.isna().sum() == 1
    train = shards.tf_dataset(str(out), PAPER, split="train", batch_size=4, dense=True)
    got_dense = np.concatenate([features.numpy() for features, _ in train])
    codes = np.concatenate([c.numpy() for c, _ in shards.tf_dataset(str(out), PAPER, split="train", batch_size=4)])
    labels = np.concatenate([label.numpy() for _, label in train])
    expected = duckdb.sql(f"SELECT count(*) FROM '{out}/shards/*.parquet' WHERE split = 'train'").fetchall()[0][0]
    assert len(got_dense) == len(labels) == expected and set(labels) <= {0, 1}
    np.testing.assert_array_equal(got_dense, depth.decode(codes, PAPER))


def test_usage_errors_exit_2(tmp_path, ray_local):
    assert featurize(tmp_path / "missing", "--out", tmp_path / "o") == 2
    assert featurize(tmp_path, "--out", tmp_path / "o", "--split", "1/2") == 2
    with pytest.raises(SystemExit) as exit_info:
        featurize(tmp_path, "--out", tmp_path / "o", "--window", "middle")
    assert exit_info.value.code == 2


def read_rows(out: Path) -> pd.DataFrame:
    return duckdb.sql(f"SELECT id, codes FROM '{out}/shards/*.parquet' ORDER BY id").df()


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_exactly_the_uninterrupted_result(ray_local, tmp_path, signal_number):
    for i in range(16):
        write_audio(tmp_path / f"in/{'music' if i % 2 else 'speech'}/f{i:02d}.wav",
                    "music" if i % 2 else "speech", 12, seed=i)
    args = [tmp_path / "in", "--files-per-task", 1, "--window", "all", "--hop", 2.5]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "jobs.featurize", *map(str, args), "--out", str(killed),
                                "--num-cpus", "2", "--quiet"], cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((killed / "_files" / "_delta_log").glob("0*.json")):  # a first batch committed
            assert process.poll() is None and time.monotonic() < deadline, "job ended before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal_number)
        process.wait()
    assert not (killed / "manifest.json").exists()
    (killed / "shards/part-0123456789abcdef-000.parquet.tmp-deadbeef").write_bytes(b"half a shard")
    assert featurize(*args, "--out", killed) == 0
    resumed = json.loads((killed / "manifest.json").read_text())
    assert 1 <= resumed["chunks_reused"] < resumed["chunks"] == 16
    assert not list(killed.rglob("*.tmp-*"))

    clean = tmp_path / "clean"
    assert featurize(*args, "--out", clean) == 0
    got, want = read_rows(killed), read_rows(clean)
    assert got["id"].is_unique and len(got) == resumed["windows"] == 16 * 4
    assert list(got["id"]) == list(want["id"])
    assert all(a == b for a, b in zip(got["codes"], want["codes"]))
    assert featurize(*args, "--out", clean) == 0  # a rerun of a finished job does nothing new
    assert json.loads((clean / "manifest.json").read_text())["chunks_reused"] == 16
    assert len(read_rows(clean)) == len(want)


def test_s3_sources_and_output(s3_server):
    """Reads s3:// sources and writes s3:// output (a local moto S3 server), then resumes from it."""
    import io

    import soundfile as sf

    bucket = s3_server.bucket
    bucket.mkdir("archive")
    for i, kind in enumerate(("music", "speech")):
        wav = io.BytesIO()
        sf.write(wav, np.zeros(22050, np.float32) + 0.01 * i, 22050, format="WAV")
        bucket.pipe(f"archive/in/{kind}/f{i}.wav", wav.getvalue())
    bucket.pipe("archive/in/music/broken.wav", b"RIFF broken")
    command = [sys.executable, "-m", "jobs.featurize", "s3://archive/in", "--out", "s3://archive/out",
               "--num-cpus", "1", "--quiet"]
    for _ in range(2):
        result = subprocess.run(command, cwd=REPO, env=s3_server.env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 1, result.stderr[-2000:]
    manifest = json.loads(bucket.cat("archive/out/manifest.json"))
    assert (manifest["files"], manifest["windows"], manifest["errors"]) == (2, 2, 1)
    assert manifest["chunks_reused"] == manifest["chunks"] == 1
    [shard] = [key for key in bucket.find("archive/out/shards") if key.endswith(".parquet")]
    table = pq.read_table(io.BytesIO(bucket.cat(shard)))
    assert sorted(table.column("path").to_pylist()) == ["s3://archive/in/music/f0.wav",
                                                        "s3://archive/in/speech/f1.wav"]
