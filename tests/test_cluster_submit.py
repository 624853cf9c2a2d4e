"""The submission path on a real multi-node Ray cluster (slow; not run by CI: ``pytest -m slow``).

cluster/local/start.sh starts a head and a second node (separate raylets, free ports, token auth
on) in a state dir of this test; featurize -> train -> infer are submitted with ``ray job submit
--working-dir <repo> --runtime-env cluster/runtime_env.yaml`` exactly as a user would, each waited
for with ``ray job status``; their outputs are checked; cluster/local/stop.sh then stops exactly
what start.sh started, and the test checks none of those processes is left.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from scripts.local_cluster import RAY, local_cluster
from tests.conftest import REPO, write_audio

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

RUNTIME_ENV = REPO / "cluster" / "runtime_env.yaml"
FILES_PER_CLASS = 8
SPLIT = "60/20/20"
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@pytest.fixture(scope="module")
def cluster():
    """A head + 1 worker node, 2 logical CPUs each; yields the client environment."""
    if not RAY.exists():
        pytest.skip(f"no ray CLI beside {sys.executable}")
    with local_cluster(head_cpus=2, worker_cpus=2) as running:
        assert len(running.sids) == 2, f"expected a head and a worker session, got {running.sids}"
        client = running.env
        assert client["RAY_AUTH_MODE"] == "token" and Path(client["RAY_AUTH_TOKEN_PATH"]).is_file()
        yield client


def ray_cli(client: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(RAY), *args], env=client, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def job_status(client: dict, job_id: str) -> str:
    """The status `ray job status` prints: final ones as sentences, the others as `Status for job`."""
    out = ray_cli(client, "job", "status", job_id)
    text = out.stdout + out.stderr
    for pattern, status in ((f"Job '{job_id}' succeeded", "SUCCEEDED"), (f"Job '{job_id}' failed", "FAILED"),
                            (f"Job '{job_id}' was stopped", "STOPPED")):
        if pattern in text:
            return status
    match = re.search(rf"Status for job '{re.escape(job_id)}': (\w+)", text)
    return match.group(1) if match else "?"


def submit_and_wait(client: dict, entrypoint: list[str], timeout: float) -> tuple[str, str]:
    """Submit like a user (working dir = the repo, cluster/runtime_env.yaml), wait; (status, logs)."""
    job_id = f"msc-test-{entrypoint[2].split('.')[-1]}-{uuid.uuid4().hex[:8]}"
    submitted = ray_cli(client, "job", "submit", "--no-wait", "--submission-id", job_id,
                        "--working-dir", str(REPO), "--runtime-env", str(RUNTIME_ENV), "--", *entrypoint)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        status = job_status(client, job_id)
        if status in FINAL:
            break
        time.sleep(3)
    logs = ray_cli(client, "job", "logs", job_id)
    if status not in FINAL:
        ray_cli(client, "job", "stop", job_id)
    return status, logs.stdout + logs.stderr


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, int]:
    """Music and speech folders, two 5 s windows per file, and a split seed that gives every class
    at least two train groups and one val and one test group (train needs val windows)."""
    from msc_core.sources import assign_split, iter_items, parse_split

    root = tmp_path_factory.mktemp("archive") / "audio"
    for i in range(FILES_PER_CLASS):
        write_audio(root / "music" / f"m{i:02d}.wav", "music", 10.5, seed=i)
        write_audio(root / "speech" / f"s{i:02d}.wav", "speech", 10.5, seed=100 + i)
    items = [item for item in iter_items([str(root)]) if item.label]
    assert len(items) == 2 * FILES_PER_CLASS
    fractions = parse_split(SPLIT)
    for seed in range(1000):
        counts = {}
        for item in items:
            split = assign_split(item.group, fractions=fractions, seed=seed)
            counts.setdefault((item.label, split), set()).add(item.group)
        if all(len(counts.get((label, split), ())) >= need for label in {i.label for i in items}
               for split, need in (("train", 2), ("val", 1), ("test", 1))):
            return root, seed
    pytest.fail("no split seed gives every class train, val and test groups")


def test_cluster_is_two_nodes_and_needs_the_token(cluster):
    status = ray_cli(cluster, "status", f"--address={cluster['MSC_RAY_GCS_ADDRESS']}")
    assert status.returncode == 0, status.stderr
    assert len(re.findall(r"(?m)^ +1 node_", status.stdout)) == 2, status.stdout
    anonymous = {k: v for k, v in cluster.items() if not k.startswith("RAY_AUTH")}
    refused = ray_cli(anonymous, "job", "list")
    assert refused.returncode != 0 and "uthentication" in refused.stdout + refused.stderr


def test_featurize_train_infer_by_job_submission(cluster, archive, tmp_path):
    features, model, labels = tmp_path / "features", tmp_path / "model", tmp_path / "labels"
    timings = {}

    started = time.monotonic()
    audio, seed = archive
    status, logs = submit_and_wait(cluster, ["python", "-m", "jobs.featurize", str(audio), "--out", str(features),
                                             "--split", SPLIT, "--seed", str(seed), "--files-per-task", "2",
                                             "--quiet"], timeout=600)
    timings["featurize"] = time.monotonic() - started
    assert status == "SUCCEEDED", logs
    manifest = json.loads((features / "manifest.json").read_text())
    assert manifest["files"] == 2 * FILES_PER_CLASS and manifest["errors"] == 0, manifest
    assert list(features.glob("shards/**/*.parquet")), "no shards written"

    started = time.monotonic()
    status, logs = submit_and_wait(cluster, ["python", "-m", "jobs.train", str(features), "--out", str(model),
                                             "--workers", "2", "--epochs", "1", "--widths", "4,8,16",
                                             "--batch-size", "2"], timeout=900)
    timings["train"] = time.monotonic() - started
    assert status == "SUCCEEDED", logs
    assert (model / "evaluation.json").is_file(), sorted(p.name for p in model.iterdir())

    started = time.monotonic()
    status, logs = submit_and_wait(cluster, ["python", "-m", "jobs.infer", str(audio), "--model", str(model),
                                             "--out", str(labels)], timeout=600)
    timings["infer"] = time.monotonic() - started
    assert status == "SUCCEEDED", logs
    import pyarrow.parquet as pq

    predictions = pq.read_table(labels / "predictions.parquet").to_pandas()
    assert len(predictions) == 2 * FILES_PER_CLASS, predictions
    assert (labels / "predictions.csv").is_file()
    print("job wall times (s):", {k: round(v, 1) for k, v in timings.items()})
