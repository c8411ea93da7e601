"""Atomic writes: all-or-nothing, and files as readable as a plain write would make them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vitdistill.utils.io import atomic_write_json, atomic_write_text, atomic_write_with


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_new_files_get_the_umask_mode_not_mkstemps_private_one(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "b.json", {"a": 1})
    atomic_write_with(tmp_path / "c.bin", lambda name: Path(name).write_bytes(b"x"))
    for name in ("a.txt", "b.json", "c.bin"):
        assert mode(tmp_path / name) == mode(plain), name


def test_existing_files_keep_their_mode(tmp_path):
    p = tmp_path / "r.txt"
    p.write_text("old")
    os.chmod(p, 0o640)
    atomic_write_text(p, "new")
    assert p.read_text() == "new" and mode(p) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "keep.json"
    atomic_write_json(p, {"v": 1})

    def broken(name):
        Path(name).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_with(p, broken)
    assert p.read_text().strip().startswith("{") and '"v": 1' in p.read_text()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.json"]
