"""The engine alone (msc_core.engine): listing, deduplication, planning, commits, and random edit sequences.

The sequences drive a tiny job that writes one real Parquet part per chunk
through :class:`msc_core.engine.Run` (no Ray, no audio), so that hundreds of
add / modify / delete / duplicate / kill / rerun steps run in seconds; the
jobs themselves are driven the same way in test_featurize.py and test_infer.py.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from msc_core.engine import (FileRecords, Run, clean_message, list_entries, location_of, plan)
from msc_core.errors import InputError
from msc_core.sources import Item, iter_items

SETTINGS = "settings-1"


def items_of(root: Path, names) -> list[Item]:
    return [Item(str(root / "in" / name), None, str(root / "in" / name)) for name in names]


class Killed(Exception):
    """Stands for a SIGKILL between two chunks."""


def run_job(root: Path, out: Path, names, *, kill_after: int | None = None, files_per_chunk: int = 2) -> None:
    """List ``names`` under root/in, process each chunk into one part (path, content), commit per chunk."""
    listing = list_entries(items_of(root, names))
    run = Run(str(out), listing=listing, settings=SETTINGS, files_per_chunk=files_per_chunk, part_folders=["parts"],
              every_chunks=1)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    for done, chunk in enumerate(run.plan.chunks):
        if kill_after is not None and done == kill_after:
            (out / "parts" / f"{chunk.id}.parquet").write_bytes(b"half a part")  # written, never committed
            raise Killed
        table = pa.table({"path": [e.path for e in chunk.entries],
                          "content": [Path(e.path).read_text() for e in chunk.entries]})
        pq.write_table(table, out / "parts" / f"{chunk.id}.parquet")
        run.done(chunk, parts=[(f"parts/{chunk.id}.parquet", os.path.getsize(out / "parts" / f"{chunk.id}.parquet"))])
    if kill_after is not None:
        raise Killed  # after the last commit, before the clean-up
    run.finish()


def snapshot(out: Path) -> list[tuple[str, str]]:
    """(path, content) of every row the committed records reference, sorted; asserts no row twice."""
    records = FileRecords(str(out)).read()
    rows = []
    for parts in set(records["parts"].to_pylist()):
        import json

        for name, size in json.loads(parts):
            assert os.path.getsize(out / name) == size
            rows += list(zip(*pq.read_table(out / name).to_pydict().values()))
    assert len(rows) == len(set(r[0] for r in rows)), "a file twice in the snapshot"
    assert sorted(records["path"].to_pylist()) == sorted(r[0] for r in rows)
    return sorted(rows)


def expected(root: Path, names) -> list[tuple[str, str]]:
    return sorted({(str(root / "in" / n), (root / "in" / n).read_text()) for n in names})


def test_empty_listing_is_an_error_that_changes_nothing(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.wav").write_text("a")
    run_job(tmp_path, tmp_path / "out", ["a.wav"])
    before = snapshot(tmp_path / "out")
    with pytest.raises(InputError, match="no files listed"):
        run_job(tmp_path, tmp_path / "out", [])
    assert snapshot(tmp_path / "out") == before
    header_only = tmp_path / "in/manifest.csv"
    header_only.write_text("path,label\n")
    with pytest.raises(InputError):
        list_entries(iter_items([str(header_only)]))


def test_duplicates_count_once_and_conflicts_are_refused(tmp_path):
    folder = tmp_path / "music"
    folder.mkdir()
    (folder / "a.wav").write_text("a")
    (tmp_path / "alias").mkdir()
    os.symlink(folder, tmp_path / "alias" / "music")  # the same file by another path, with the same label
    listing = list_entries(iter_items([str(folder), str(folder / "*.wav"), str(tmp_path / "alias")]))
    assert [e.path for e in listing.entries] == [str(folder / "a.wav")] and listing.duplicates == 2
    assert location_of(str(tmp_path / "alias/music/a.wav")) == str(folder / "a.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nmusic/a.wav,music\nmusic/a.wav,speech\n")
    with pytest.raises(InputError, match="listed twice with different metadata"):
        list_entries(iter_items([str(manifest)]))
    split = tmp_path / "s.csv"
    split.write_text("path,label,split\nmusic/a.wav,music,train\nmusic/a.wav,music,test\n")
    with pytest.raises(InputError, match="train"):
        list_entries(iter_items([str(split)]))


def test_plan_counts_new_changed_deleted_and_redoes_damaged_chunks(tmp_path):
    root = tmp_path
    (root / "in").mkdir()
    for name in "abcd":
        (root / "in" / f"{name}.wav").write_text(name)
    out = root / "out"
    run_job(root, out, ["a.wav", "b.wav", "c.wav", "d.wav"])  # chunks {a,b} {c,d}
    (root / "in/b.wav").write_text("b, longer now")
    (root / "in/d.wav").unlink()
    (root / "in/e.wav").write_text("e")
    records = FileRecords(str(out)).read()
    listing = list_entries(items_of(root, ["a.wav", "b.wav", "c.wav", "e.wav"]))
    result = plan(listing, records, settings=SETTINGS, files_per_chunk=2)
    assert result.counts() == {"new": 1, "changed": 1, "deleted": 1, "unchanged": 0, "repaired": 2}
    assert sorted(len(chunk.entries) for chunk in result.chunks) == [1, 1, 2] and not result.kept
    assert plan(listing, records, settings="other", files_per_chunk=2).changed == 3
    run_job(root, out, ["a.wav", "b.wav", "c.wav", "e.wav"])
    assert snapshot(out) == expected(root, ["a.wav", "b.wav", "c.wav", "e.wav"])
    part = next((out / "parts").iterdir())
    part.write_bytes(part.read_bytes()[:-10])  # truncated: found by its size and redone
    run = Run(str(out), listing=list_entries(items_of(root, ["a.wav", "b.wav", "c.wav", "e.wav"])),
              settings=SETTINGS, files_per_chunk=2, part_folders=["parts"])
    assert len(run.damaged) == 1 and run.plan.repaired >= 1
    run_job(root, out, ["a.wav", "b.wav", "c.wav", "e.wav"])
    assert snapshot(out) == expected(root, ["a.wav", "b.wav", "c.wav", "e.wav"])


def random_sequence(tmp_path: Path, seed: int, steps: int) -> None:
    """Random add / modify / delete / duplicate / kill / rerun; every snapshot equals a from-scratch run."""
    rng = random.Random(seed)
    root, out = tmp_path, tmp_path / "out"
    (root / "in").mkdir()
    files: set[str] = set()
    counter = 0
    for step in range(steps):
        for _ in range(rng.randint(0, 3)):
            counter += 1
            files.add(f"f{counter:03d}.wav")
            (root / "in" / f"f{counter:03d}.wav").write_text(f"{counter}")
        for name in rng.sample(sorted(files), k=min(len(files), rng.randint(0, 2))):
            (root / "in" / name).write_text(f"{name} v{step} {rng.random()}")
        for name in rng.sample(sorted(files), k=min(len(files) - 1, rng.randint(0, 1))) if len(files) > 1 else []:
            files.discard(name)
            (root / "in" / name).unlink()
        if not files:
            continue
        names = sorted(files) + rng.sample(sorted(files), k=rng.randint(0, min(2, len(files))))  # duplicates
        before = snapshot(out) if out.exists() else None
        if rng.random() < 0.3:
            with pytest.raises(Killed):
                run_job(root, out, names, kill_after=rng.randint(0, 2), files_per_chunk=rng.randint(1, 3))
            if before is not None:  # what a killed run committed is a mix of old and new, each file once
                got = dict(snapshot(out))
                assert set(got) <= {str(root / "in" / n) for n in files} | {p for p, _ in before}
        run_job(root, out, names, files_per_chunk=rng.randint(1, 3))
        scratch = tmp_path / f"scratch{step}"
        run_job(root, scratch, names)
        assert snapshot(out) == snapshot(scratch) == expected(root, files)
        stray = {p.name for p in (out / "parts").iterdir()} - {Path(n).name for n in _parts(out)}
        assert not stray, "a finished run leaves only committed parts"


def _parts(out: Path) -> set[str]:
    from msc_core.engine import committed_parts

    return committed_parts(FileRecords(str(out)).read())


@pytest.mark.parametrize("seed", range(3))
def test_random_sequences_match_a_from_scratch_run(tmp_path, seed):
    random_sequence(tmp_path, seed, steps=6)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_long_random_sequences_match_a_from_scratch_run(tmp_path, seed):
    random_sequence(tmp_path, 100 + seed, steps=15)


def test_stored_messages_have_no_terminal_escapes():
    assert clean_message("\x1b[31;1mError\x1b[0m: bad\x07 \x1b]0;title\x07file") == "Error: bad file"
