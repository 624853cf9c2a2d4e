"""featurize and infer on the engine, on a real local Ray: reruns that follow the archive, snapshots that survive.

Every check compares a rerun's committed snapshot with a from-scratch run of the
same listing: exactly once, nothing stale, the previous snapshot readable.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from msc_core import shards
from msc_core.config import PAPER
from msc_core.engine import FileRecords
from msc_core.errors import CorruptShardError
from tests.conftest import REPO, write_audio


def featurize(*args) -> int:
    return main(["featurize", *map(str, args), "--quiet"])


def rows(out: Path) -> pd.DataFrame:
    """The committed snapshot's windows (through list_shards), sorted by id; asserts each id once."""
    frame = pd.concat([pq.read_table(path, columns=["id", "path", "label", "split", "codes"]).to_pandas()
                       for path in shards.list_shards(str(out))]).sort_values("id").reset_index(drop=True)
    assert frame["id"].is_unique
    return frame


def same_rows(out: Path, scratch: Path) -> None:
    got, want = rows(out), rows(scratch)
    assert list(got["id"]) == list(want["id"]) and list(got["path"]) == list(want["path"])
    assert list(got["label"]) == list(want["label"]) and list(got["split"]) == list(want["split"])
    assert all(a == b for a, b in zip(got["codes"], want["codes"]))


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def write(root: Path, name: str, seed: int, seconds: float = 3.0) -> Path:
    return write_audio(root / name, "music" if "music" in name else "speech", seconds, seed=seed)


def test_featurize_reruns_follow_the_archive(ray_local, tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        write(data, f"music/m{i}.wav", i)
        write(data, f"speech/s{i}.wav", 10 + i)
    out = tmp_path / "out"
    assert featurize(data, "--out", out, "--files-per-task", 3) == 0
    assert manifest(out)["changes"]["new"] == 8
    first = rows(out)

    write(data, "music/m4.wav", 4)                       # new
    write(data, "speech/s0.wav", 99, seconds=8.0)        # changed: now two windows
    (data / "music/m1.wav").unlink()                     # deleted
    args = [data, str(data / "music" / "*.wav"), "--out", out, "--files-per-task", 3]  # m* listed twice
    assert featurize(*args) == 0
    changes = manifest(out)
    # chunks of 3 in listing order: {m0,m1,m2} {m3,s0,s1} {s2,s3}; m1 and s0 take their chunk-mates along
    assert changes["changes"] == {"new": 1, "changed": 1, "deleted": 1, "unchanged": 2, "repaired": 4}
    assert changes["duplicates"] == 4 and changes["files"] == 8 and changes["windows"] == 9
    scratch = tmp_path / "scratch"
    assert featurize(data, "--out", scratch, "--files-per-task", 3) == 0
    same_rows(out, scratch)
    assert not rows(out)["path"].str.endswith("m1.wav").any()
    assert set(first["id"]) != set(rows(out)["id"])
    kept = {p.name for p in (out / "shards").iterdir()}
    assert kept == {Path(p).name for p in shards.list_shards(str(out))}  # superseded shards are gone

    # the same command from another folder, with a relative source, is the same listing
    os.chdir(tmp_path)
    assert featurize("data", "--out", out, "--files-per-task", 3) == 0
    assert manifest(out)["changes"] == {"new": 0, "changed": 0, "deleted": 0, "unchanged": 8, "repaired": 0}


def test_empty_listing_and_conflicting_labels_change_nothing(ray_local, tmp_path, capsys):
    data = tmp_path / "data"
    write(data, "music/a.wav", 0)
    out = tmp_path / "out"
    assert featurize(data, "--out", out) == 0
    version, before = FileRecords(str(out)).version(), rows(out)
    (tmp_path / "header_only.csv").write_text("path,label\n")
    (tmp_path / "no_header.csv").write_text("data/music/a.wav,music\n")
    (tmp_path / "conflict.csv").write_text("path,label\ndata/music/a.wav,music\ndata/music/a.wav,speech\n")
    for manifest_file, message in (("header_only.csv", "no files listed"), ("no_header.csv", "lacks column"),
                                   ("conflict.csv", "listed twice with different metadata")):
        capsys.readouterr()
        assert featurize(tmp_path / manifest_file, "--out", out) == 2
        assert message in capsys.readouterr().err
        assert FileRecords(str(out)).version() == version
        same = rows(out)
        assert list(same["id"]) == list(before["id"])


def test_damaged_shards_are_named_on_read_and_redone(ray_local, tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        write(data, f"music/m{i}.wav", i)
    out = tmp_path / "out"
    assert featurize(data, "--out", out, "--files-per-task", 1) == 0
    first, second, third = shards.list_shards(str(out))
    raw = bytearray(Path(first).read_bytes())
    raw[len(raw) // 3] ^= 0x10                               # a flipped bit in the codes
    Path(first).write_bytes(bytes(raw))
    Path(second).write_bytes(Path(second).read_bytes()[:-100])  # truncated
    for damaged in (first, second):
        with pytest.raises(CorruptShardError, match=Path(damaged).name):
            list(shards.iter_batches([damaged], PAPER))
    damaged_message = r"CorruptShardError: \S+/part-\w+-000\.parquet: damaged shard"  # as tf.data re-raises it
    with pytest.raises(Exception, match=damaged_message):
        for _ in shards.tf_dataset(str(out), PAPER):
            pass
    assert featurize(data, "--out", out, "--files-per-task", 1) == 0
    assert manifest(out)["changes"]["repaired"] == 1        # the truncated one, found by its size
    assert featurize(data, "--out", out, "--files-per-task", 1, "--verify") == 0
    assert manifest(out)["changes"]["repaired"] == 1        # the flipped bit, found by reading every page
    assert featurize(data, "--out", out, "--files-per-task", 1, "--verify") == 0
    assert manifest(out)["changes"]["repaired"] == 0
    Path(third).unlink()                                     # a missing shard
    assert featurize(data, "--out", out, "--files-per-task", 1) == 0
    assert manifest(out)["changes"]["repaired"] == 1
    scratch = tmp_path / "scratch"
    assert featurize(data, "--out", scratch, "--files-per-task", 1) == 0
    got, want = rows(out), rows(scratch)
    assert list(got["id"]) == list(want["id"])


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (skipped where mounting is not allowed); yields (folder, remount(size))."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")

    def remount(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)

    try:
        yield folder, remount
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_full_disk_is_named_once_and_keeps_the_snapshot(ray_local, tmp_path, small_tmpfs, capsys):
    folder, remount = small_tmpfs
    data = tmp_path / "data"
    for i in range(4):
        write(data, f"music/m{i}.wav", i)
    out = folder / "out"
    assert featurize(data, "--out", out, "--files-per-task", 1) == 0
    before = rows(out)
    for i in range(4, 60):
        write(data, f"music/m{i}.wav", i)                     # about 1.3 MB of new shards: more than is left
    capsys.readouterr()
    assert featurize(data, "--out", out, "--files-per-task", 1) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("msc featurize: error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0], errors
    after = rows(out)                                         # readable, each window once
    assert set(before["id"]) <= set(after["id"])
    remount("64m")
    assert featurize(data, "--out", out, "--files-per-task", 1) == 0
    scratch = tmp_path / "scratch"
    assert featurize(data, "--out", scratch, "--files-per-task", 1) == 0
    same_rows(out, scratch)


def infer(root, out, model_dir, *extra) -> int:
    return main(["infer", str(root), "--model", str(model_dir), "--out", str(out), "--chunk-files", "2", *extra])


def predictions(out: Path) -> pd.DataFrame:
    frame = pq.read_table(out / "predictions.parquet").to_pandas()
    assert frame["path"].is_unique
    return frame.sort_values("path").reset_index(drop=True)


def inside_a_page(path: Path) -> int:
    """The offset of a byte of page data in a Parquet file: the last but one of its largest column chunk.

    (Not in a page header, whose statistics no reader checks: a bit flipped there changes nothing read.)
    """
    row_group = pq.read_metadata(path).row_group(0)
    chunk = max((row_group.column(i) for i in range(row_group.num_columns)), key=lambda c: c.total_compressed_size)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    return start + chunk.total_compressed_size - 2


def test_infer_reruns_follow_the_archive(ray_local, model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    for i in range(5):
        write(data, f"speech/s{i}.wav", i)
    out = tmp_path / "out"
    assert infer(data, out, model_dir) == 0
    write(data, "speech/s5.wav", 5)
    write(data, "speech/s0.wav", 50, seconds=11.0)
    (data / "speech/s3.wav").unlink()
    capsys.readouterr()
    assert infer(data, out, model_dir) == 0
    assert "1 new, 1 changed, 1 deleted" in capsys.readouterr().out
    scratch = tmp_path / "scratch"
    assert infer(data, scratch, model_dir) == 0
    for name in ("predictions", "windows", "segments"):
        got = pq.read_table(out / f"{name}.parquet").to_pandas().sort_values(["path", *(
            ["start_s"] if name != "predictions" else [])]).reset_index(drop=True)
        want = pq.read_table(scratch / f"{name}.parquet").to_pandas().sort_values(["path", *(
            ["start_s"] if name != "predictions" else [])]).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, obj=name)
    assert predictions(out).set_index("path").loc[str(data / "speech/s0.wav"), "duration_s"] == 11.0  # relabelled
    # a truncated part is found by its size and its chunk (two files) labelled again
    records = FileRecords(str(out)).read().to_pandas().set_index("path")
    [part] = [out / name for name, _ in json.loads(records.loc[str(data / "speech/s0.wav"), "parts"])
              if "/windows/" in name]                        # the part of the chunk {s0, s1}
    part.write_bytes(part.read_bytes()[:-50])
    capsys.readouterr()
    assert infer(data, out, model_dir) == 0
    assert "2 repaired" in capsys.readouterr().out
    pd.testing.assert_frame_equal(predictions(out), predictions(scratch))
    # so is a part with a flipped bit, which keeps its size: every infer rerun reads the parts in full
    records = FileRecords(str(out)).read().to_pandas().set_index("path")
    [part] = [out / name for name, _ in json.loads(records.loc[str(data / "speech/s0.wav"), "parts"])
              if "/predictions/" in name]
    raw = bytearray(part.read_bytes())
    raw[inside_a_page(part)] ^= 0x10
    part.write_bytes(bytes(raw))
    capsys.readouterr()
    assert infer(data, out, model_dir) == 0
    assert "2 repaired" in capsys.readouterr().out
    pd.testing.assert_frame_equal(predictions(out), predictions(scratch))
    # an empty listing is refused and changes nothing
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    before = predictions(out)
    assert main(["infer", str(empty), "--model", str(model_dir), "--out", str(out)]) == 2
    pd.testing.assert_frame_equal(predictions(out), before)


def killed_featurize(*args, after_s: float) -> None:
    """Run featurize in a fresh process (its own local Ray) and SIGKILL its whole group after ``after_s``."""
    process = subprocess.Popen([sys.executable, "-m", "jobs.featurize", *map(str, args), "--num-cpus", "2", "--quiet"],
                               cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=after_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have finished first
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def random_featurize_sequence(tmp_path: Path, *, seed: int, steps: int, disk: Path | None = None) -> None:
    """Random add / modify / delete / duplicate-list / rerun steps, each compared with a from-scratch run.

    With ``disk`` (a small tmpfs holding the output), steps may also SIGKILL a
    run at a random moment, or leave too little space for the rerun's shards:
    the committed snapshot stays readable, each window once, holding only
    files listed before or now; the next full rerun matches a from-scratch run.
    """
    rng = random.Random(seed)
    data, out = tmp_path / "data", (disk or tmp_path) / "out"
    names: set[str] = set()
    for step in range(steps):
        for _ in range(rng.randint(1, 2)):
            name = f"{rng.choice(['music', 'speech'])}/f{len(names)}-{step}.wav"
            names.add(name)
            write(data, name, rng.randrange(1000))
        if len(names) > 2 and rng.random() < 0.5:
            write(data, rng.choice(sorted(names)), rng.randrange(1000), seconds=rng.choice([3.0, 6.0]))
        if len(names) > 2 and rng.random() < 0.5:
            gone = rng.choice(sorted(names))
            names.discard(gone)
            (data / gone).unlink()
        music = any(name.startswith("music/") for name in names)
        sources = [data] + ([str(data / "music" / "*.wav")] if music and rng.random() < 0.5 else [])
        files_per_task = rng.randint(1, 3)
        before = set(rows(out)["path"]) if (out / "_files").exists() else set()
        hazard = rng.choice(["kill", "full", None, None]) if disk else None
        if hazard == "kill":
            killed_featurize(*sources, "--out", out, "--files-per-task", 1, after_s=rng.uniform(2.0, 20.0))
        elif hazard == "full":
            ballast = disk / "ballast"
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            ballast.write_bytes(b"\0" * max(0, free - rng.randint(0, 60_000)))
            assert featurize(*sources, "--out", out, "--files-per-task", 1) in (0, 2)
            ballast.unlink()
        if hazard and (out / "_files").exists():  # readable, each window once, only files listed before or now
            assert set(rows(out)["path"]) <= before | {str(data / name) for name in names}
        assert featurize(*sources, "--out", out, "--files-per-task", files_per_task) == 0
        scratch = tmp_path / f"scratch{step}"
        assert featurize(data, "--out", scratch, "--files-per-task", files_per_task) == 0
        same_rows(out, scratch)
        assert sorted(set(rows(out)["path"])) == sorted(str(data / name) for name in names)
        shutil.rmtree(scratch)


def test_random_featurize_sequence(ray_local, tmp_path):
    random_featurize_sequence(tmp_path, seed=0, steps=3)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_long_random_featurize_sequences(ray_local, tmp_path, small_tmpfs, seed):
    folder, remount = small_tmpfs
    remount("16m")
    random_featurize_sequence(tmp_path, seed=10 + seed, steps=12, disk=folder)


def test_codes_survive_reruns_bit_for_bit(ray_local, tmp_path):
    """Rows reused across reruns keep their codes: the snapshot is never rewritten in place."""
    data = tmp_path / "data"
    write(data, "music/a.wav", 1)
    out = tmp_path / "out"
    assert featurize(data, "--out", out) == 0
    first = rows(out)
    write(data, "music/b.wav", 2)
    assert featurize(data, "--out", out) == 0
    again = rows(out).set_index("id")
    for identifier, codes in zip(first["id"], first["codes"]):
        assert np.array_equal(np.frombuffer(again.loc[identifier, "codes"], np.uint8), np.frombuffer(codes, np.uint8))
