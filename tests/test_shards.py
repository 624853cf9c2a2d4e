"""Atomic output: a final name holds only complete files, and a failed write leaves nothing behind."""

from __future__ import annotations

import pytest

from msc_core.shards import atomic_output


def test_atomic_output_appears_only_when_complete(tmp_path):
    target = tmp_path / "out.json"
    with atomic_output(str(target)) as sink:
        sink.write(b"half")
        assert not target.exists()
        sink.write(b" and half")
    assert target.read_bytes() == b"half and half"


def test_failed_write_leaves_neither_final_nor_temporary_file(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic_output(str(target)) as sink:
            sink.write(b"partial")
            raise RuntimeError("disk gone")
    assert list(tmp_path.iterdir()) == []
