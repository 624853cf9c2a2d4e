"""Faults on a real 2-node local cluster (slow; ``pytest -m slow tests/test_cluster_faults.py``).

Each test starts head + worker node with cluster/local/start.sh (2 logical CPUs each), runs a job's
driver against it (``--address``; the driver attaches to the head's raylet), and while the job runs:

- featurize / infer: SIGKILLs every process of the worker node (raylet, Ray workers, agents), so
  the node is lost with whatever tasks, actors and objects it held; the job must still finish on
  the head alone with every file exactly once in its outputs;
- train: SIGKILLs one Ray Train worker process after the first checkpoint; training must resume
  from that checkpoint and finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from test_training import SMALL_WIDTHS, write_synthetic_shards

from jobs.train import finished_checkpoints
from scripts.local_cluster import RAY, local_cluster
from tests.conftest import REPO, write_audio

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

FILES = 16
WINDOWS = 47  # per file: 120 s with --hop 2.5, rounded to 108 STFT frames (2.508 s): starts 0 ... 115.4 s


@pytest.fixture
def cluster():
    if not RAY.exists():
        pytest.skip(f"no ray CLI beside {sys.executable}")
    with local_cluster(head_cpus=2, worker_cpus=2) as running:
        yield running


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """FILES files of 120 s, half music, half speech (WINDOWS windows each with --hop 2.5)."""
    root = tmp_path_factory.mktemp("faults") / "audio"
    for index in range(FILES):
        kind = ("music", "speech")[index % 2]
        write_audio(root / kind / f"{index:02d}.wav", kind, 120.0, seed=index)
    return root


def start_driver(cluster, *args: str) -> subprocess.Popen:
    """``python -m <job> ARGS --address <cluster>``, its output going to a temporary file (``process.log``)."""
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, "-m", *args, "--address", cluster.address], cwd=REPO,
                               env=cluster.env, stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log = log
    return process


def output_of(process: subprocess.Popen) -> str:
    """Everything the driver printed so far."""
    process.log.seek(0)
    return process.log.read()


def wait_then(process: subprocess.Popen, ready, action, *, timeout: float = 400) -> None:
    """Poll ``ready()`` while the job runs, then call ``action()``; fails if the job ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"the job ended before the fault:\n{output_of(process)[-5000:]}"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.2)
    action()


def finish(process: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    """Wait for the driver; (exit code, the end of its output)."""
    try:
        process.wait(timeout=timeout)
    finally:
        process.kill()
        process.wait()
    return process.returncode, output_of(process)


def busy_on_worker_node(cluster, marker: str) -> list[str]:
    """Titles of the worker node's Ray processes running ``marker`` (e.g. a task or actor name)."""
    return [command for _, command in cluster.processes(1) if command.startswith("ray::") and marker in command]


def remove_worker_node(cluster) -> None:
    busy = [command for _, command in cluster.processes(1) if command.startswith("ray::")]
    killed = cluster.kill_node(1)
    print(f"worker node killed at {time.strftime('%X')}: {killed} processes, Ray workers {busy}")


def test_featurize_survives_losing_a_node(cluster, audio, tmp_path):
    out = tmp_path / "features"
    started = time.monotonic()
    process = start_driver(cluster, "jobs.featurize", str(audio), "--out", str(out), "--files-per-task", "1",
                           "--hop", "2.5", "--quiet")
    wait_then(process, lambda: (len(list((out / "_files" / "_delta_log").glob("0*.json"))) >= 1
                                and busy_on_worker_node(cluster, "featurize_chunk")),
              lambda: remove_worker_node(cluster))
    assert not (out / "manifest.json").exists()
    code, output = finish(process)
    print(f"featurize with a node lost: {time.monotonic() - started:.1f} s")
    assert code == 0, output[-5000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == FILES and manifest["errors"] == 0 and manifest["windows"] == FILES * WINDOWS
    per_file = duckdb.sql(f"SELECT path, count(*) AS n, count(DISTINCT id) AS ids FROM '{out}/shards/*.parquet' "
                          "GROUP BY path").df()
    assert len(per_file) == FILES and (per_file["n"] == WINDOWS).all() and (per_file["ids"] == WINDOWS).all()


def test_infer_survives_losing_a_node(cluster, audio, model_dir, tmp_path):
    out = tmp_path / "labels"
    parts = out / "parts" / "predictions"
    started = time.monotonic()
    process = start_driver(cluster, "jobs.infer", str(audio), "--model", str(model_dir), "--out", str(out),
                           "--chunk-files", "1", "--hop", "2.5")
    wait_then(process, lambda: len(list(parts.glob("*.parquet"))) >= 2 and busy_on_worker_node(cluster, "Map"),
              lambda: remove_worker_node(cluster))
    code, output = finish(process)
    print(f"infer with a node lost: {time.monotonic() - started:.1f} s")
    print("\n".join(line for line in output.splitlines() if "msc.infer" in line and "chunks labelled" not in line))
    assert code == 0, output[-5000:]
    predictions = pq.read_table(out / "predictions.parquet").to_pandas()
    expected = sorted(str(path) for path in audio.rglob("*.wav"))
    assert sorted(predictions["path"]) == expected  # every file exactly once
    assert (predictions["status"] == "ok").all() and (predictions["windows"] == WINDOWS).all()
    windows = pq.read_table(out / "windows.parquet").to_pandas()
    assert len(windows) == FILES * WINDOWS and not windows.duplicated(["path", "start_s"]).any()


def test_training_resumes_after_a_worker_is_killed(cluster, tmp_path):
    data = write_synthetic_shards(tmp_path / "data", files=2, splits={"train": 16, "val": 4, "test": 4},
                                  train_repeats=6)
    out, storage = tmp_path / "model", tmp_path / "model.ray"
    started = time.monotonic()
    process = start_driver(cluster, "jobs.train", str(data), "--out", str(out), "--workers", "2", "--epochs", "4",
                           "--widths", ",".join(map(str, SMALL_WIDTHS)), "--max-failures", "2")

    def kill_a_train_worker() -> None:
        workers = [(pid, command) for pid, command in cluster.processes()
                   if command.startswith("ray::") and "RayTrainWorker" in command]
        assert workers, cluster.processes()
        os.kill(workers[-1][0], signal.SIGKILL)
        print(f"train worker {workers[-1]} killed at {time.strftime('%X')}")

    wait_then(process, lambda: finished_checkpoints(str(storage)), kill_a_train_worker)
    code, output = finish(process)
    print(f"training with a worker killed: {time.monotonic() - started:.1f} s")
    assert code == 0, output[-5000:]
    extra = json.loads((out / "model.json").read_text())["extra"]
    assert extra["epochs_run"] == 4 and extra["resumed_at"], extra
    assert (out / "evaluation.json").is_file()
