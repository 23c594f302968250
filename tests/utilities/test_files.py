from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from utilities.errors import UnsafePathError
from utilities.files import atomic_write_bytes, atomic_write_json, check_contained, safe_join


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    atomic_write_json(target, {"step": 2})
    assert json.loads(target.read_text()) == {"step": 2}
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


@pytest.mark.parametrize("relative", ["../x", "a/../../x", "/etc/passwd"])
def test_safe_join_refuses_escapes(tmp_path: Path, relative: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, relative)


def test_safe_join_refuses_symlink_out(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    os.symlink(tmp_path, base / "up")
    with pytest.raises(UnsafePathError):
        safe_join(base, "up/secret")
    assert safe_join(base, "a/b.json") == (base / "a" / "b.json").resolve()


def test_check_contained(tmp_path: Path) -> None:
    base = tmp_path / "model"
    (base / "sub").mkdir(parents=True)
    (base / "w.safetensors").write_bytes(b"x")
    os.symlink(base / "w.safetensors", base / "sub" / "inside")
    check_contained(base)  # a link inside the folder is fine
    os.symlink("/etc/hostname", base / "sub" / "outside")
    with pytest.raises(UnsafePathError, match="outside"):
        check_contained(base)
    (base / "sub" / "outside").unlink()
    os.symlink(base / "missing", base / "dangling")
    with pytest.raises(UnsafePathError, match="broken"):
        check_contained(base)
