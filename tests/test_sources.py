"""Listing, layouts, manifests and group splits (pure: no audio is decoded)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import os
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from msc_core import sources
from msc_core.errors import InputError


def touch(root: Path, *names: str) -> list[str]:
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        paths.append(str(path))
    return paths


def test_folder_listing_is_recursive_sorted_and_audio_only(tmp_path):
    touch(tmp_path, "b/2.wav", "b/1.FLAC", "a.mp3", "notes.txt", "c/d/e.ogg", "c/readme.md")
    assert list(sources.iter_audio_paths([str(tmp_path)])) == [
        str(tmp_path / "a.mp3"), str(tmp_path / "b/1.FLAC"), str(tmp_path / "b/2.wav"), str(tmp_path / "c/d/e.ogg")]


def test_globs_file_lists_file_uris_and_explicit_files(tmp_path, monkeypatch):
    touch(tmp_path, "x/1.wav", "x/2.wav", "x/y/3.wav", "x/odd.bin")
    (tmp_path / "list.txt").write_text("# a comment\nx/2.wav\n\n" + str(tmp_path / "x/odd.bin") + "\n")
    monkeypatch.chdir(tmp_path)
    assert list(sources.iter_audio_paths(["x/*.wav"])) == [str(tmp_path / "x/1.wav"), str(tmp_path / "x/2.wav")]
    assert len(list(sources.iter_audio_paths(["x/**/*.wav"]))) == 3
    assert list(sources.iter_audio_paths([str(tmp_path / "list.txt")])) == [
        str(tmp_path / "x/2.wav"), str(tmp_path / "x/odd.bin")]
    assert list(sources.iter_audio_paths([f"file://{tmp_path}/x/y"])) == [str(tmp_path / "x/y/3.wav")]
    assert list(sources.iter_audio_paths(["x/odd.bin"])) == [str(tmp_path / "x/odd.bin")]


def test_fsspec_uris_are_listed_with_find():
    memory = fsspec.filesystem("memory")
    for name in ("b/2.wav", "a/1.flac", "a/skip.json"):
        memory.pipe(f"/bucket/{name}", b"x")
    memory.pipe("/bucket/list.txt", b"a/1.flac\n")
    assert list(sources.iter_audio_paths(["memory://bucket"])) == ["memory:///bucket/a/1.flac",
                                                                    "memory:///bucket/b/2.wav"]
    assert list(sources.iter_audio_paths(["memory://bucket/*/*.wav"])) == ["memory:///bucket/b/2.wav"]
    assert list(sources.iter_audio_paths(["memory://bucket/list.txt"])) == ["memory://bucket/a/1.flac"]


def test_missing_or_empty_sources_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(sources.iter_audio_paths([str(tmp_path / "nope")]))
    with pytest.raises(InputError, match="no audio files"):
        list(sources.iter_audio_paths([str(tmp_path)]))


@pytest.mark.parametrize("path, label, group, genre", [
    ("/d/GTZAN/genres_original/jazz/jazz.00054.wav", "music", "gtzan:jazz.00054", "jazz"),
    ("/d/LibriSpeech/dev-clean/84/121123/84-121123-0003.flac", "speech", "librispeech:84", None),
    ("/d/mine/Speech/talks/t1.mp3", "speech", "/d/mine/Speech/talks/t1.mp3", None),
    ("/d/mine/music/t2.mp3", "music", "/d/mine/music/t2.mp3", None),
    ("/d/mine/other/t3.mp3", None, "/d/mine/other/t3.mp3", None),
    ("/d/LibriSpeech/dev-clean/84/121123/85-121123-0003.flac", None,
     "/d/LibriSpeech/dev-clean/84/121123/85-121123-0003.flac", None),
])
def test_auto_layout_per_path(path, label, group, genre):
    assert sources.label_path(path) == sources.Item(path, label, group, genre)


def test_explicit_layout_refuses_paths_that_do_not_fit():
    with pytest.raises(InputError, match="gtzan layout"):
        sources.label_path("/d/music/a.wav", layout="gtzan")
    assert sources.label_path("/d/music/a.wav", layout="unlabelled").label is None
    with pytest.raises(InputError, match="unknown layout"):
        list(sources.iter_items(["/d"], layout="nope"))


def test_csv_and_parquet_manifests(tmp_path):
    (tmp_path / "m.csv").write_text("path,label,group,genre\nclips/a.wav,Music,album,jazz\nb.wav,,,\n")
    pq.write_table(pa.table({"path": ["clips/c.wav"], "label": ["speech"]}), tmp_path / "m.parquet")
    items = list(sources.iter_items([str(tmp_path / "m.csv"), str(tmp_path / "m.parquet")]))
    assert items == [
        sources.Item(str(tmp_path / "clips/a.wav"), "music", "album", "jazz"),
        sources.Item(str(tmp_path / "b.wav"), None, str(tmp_path / "b.wav")),
        sources.Item(str(tmp_path / "clips/c.wav"), "speech", str(tmp_path / "clips/c.wav")),
    ]


def test_manifest_split_column_fixes_splits(tmp_path):
    (tmp_path / "m.csv").write_text("path,label,group,split\na.wav,music,g,Val\nb.wav,speech,h,\nc.wav,,,test\n")
    items = list(sources.iter_items([str(tmp_path / "m.csv")]))
    assert [item.split for item in items] == ["val", None, None]  # unlabelled rows get no split


@pytest.mark.parametrize("row", ["../secret.wav", "clips/../../secret.wav", "/etc/passwd", "s3://b/k.wav"])
def test_manifest_may_not_escape_its_folder_unless_allowed(tmp_path, row):
    manifest = tmp_path / "sub" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text(f"path,label\n{row},music\n")
    with pytest.raises(InputError, match="row 2"):
        list(sources.iter_items([str(manifest)]))
    assert len(list(sources.iter_items([str(manifest)], allow_outside=True))) == 1


@pytest.mark.parametrize("text, match", [("path,group\na.wav,g\n", "lacks column"),
                                         ("", "not a readable manifest"),
                                         ("a.wav,music\n", "lacks column"),
                                         ("path,label\na.wav,1\n", "not one of"),
                                         ("path,label\na.wav,laughter\n", "not one of"),
                                         ("path,label\n,music\n", "empty path"),
                                         ("path,label,split\na.wav,music,holdout\n", "not one of")])
def test_malformed_manifests(tmp_path, text, match):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(InputError, match=match):
        list(sources.iter_items([str(tmp_path / "m.csv")]))


def test_numeric_and_nan_cells_in_parquet_manifests(tmp_path):
    pq.write_table(pa.table({"path": ["a.wav", "b.wav", "c.wav", "d.wav"], "label": ["music"] * 4,
                             "group": [0.0, 1.0, float("nan"), 0.0], "split": [None, None, None, None]}),
                   tmp_path / "m.parquet")
    items = list(sources.iter_items([str(tmp_path / "m.parquet")]))
    assert [item.group for item in items] == ["0", "1", str(tmp_path / "c.wav"), "0"]  # 0 is a group, NaN none
    pq.write_table(pa.table({"path": ["a.wav"], "label": [1]}), tmp_path / "n.parquet")
    with pytest.raises(InputError, match="label '1' is not one of"):
        list(sources.iter_items([str(tmp_path / "n.parquet")]))


def test_manifest_folder_check_resolves_links(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret.wav").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "sub" / "link")
    (tmp_path / "sub/m.csv").write_text("path,label\nlink/secret.wav,music\n")
    with pytest.raises(InputError, match="leaves the manifest's folder"):
        list(sources.iter_items([str(tmp_path / "sub/m.csv")]))
    assert len(list(sources.iter_items([str(tmp_path / "sub/m.csv")], allow_outside=True))) == 1


def test_manifest_layout_needs_manifests(tmp_path):
    with pytest.raises(InputError, match="not a manifest"):
        list(sources.iter_items([str(tmp_path)], layout="manifest"))


def test_splits_are_seeded_grouped_stable_and_proportional():
    groups = [f"speaker-{i}" for i in range(20000)]
    first = [sources.assign_split(g, seed=3) for g in groups]
    assert first == [sources.assign_split(g, seed=3) for g in groups]
    assert first != [sources.assign_split(g, seed=4) for g in groups]
    counts = Counter(first)
    assert abs(counts["train"] / 20000 - 0.70) < 0.02 and abs(counts["val"] / 20000 - 0.15) < 0.02
    assert {sources.assign_split(g, fractions=(0, 0, 1)) for g in groups[:100]} == {"test"}


def test_parse_split():
    assert sources.parse_split("70/15/15") == pytest.approx((0.7, 0.15, 0.15))
    assert sources.parse_split("8/1/1") == pytest.approx((0.8, 0.1, 0.1))
    for bad in ("70/30", "a/b/c", "0/0/0", "-1/1/1"):
        with pytest.raises(InputError):
            sources.parse_split(bad)


def test_walk_survives_link_loops_and_lists_unreadable_audio(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.wav").write_bytes(b"x")
    (tmp_path / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)  # a cycle through a folder link
    (tmp_path / "loop.wav").symlink_to("loop.wav")                              # a link to itself
    (tmp_path / "gone.flac").symlink_to(tmp_path / "missing.flac")              # dangling
    os.mkfifo(tmp_path / "pipe.wav")                                            # not a regular file
    listed = list(sources.iter_audio_paths([str(tmp_path)]))
    assert sorted(os.path.basename(path) for path in listed) == ["a.wav", "gone.flac", "loop.wav", "pipe.wav"]
    monkeypatch.chdir(tmp_path)
    assert list(sources.iter_audio_paths(["*.wav"])) == [str(tmp_path / "loop.wav"), str(tmp_path / "pipe.wav")]
    assert list(sources.iter_audio_paths(["pipe.wav"])) == [str(tmp_path / "pipe.wav")]
