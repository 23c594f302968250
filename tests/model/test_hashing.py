from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from model.hashing import hash_directory, hash_file, hash_weights, hash_with_hotkey


def _b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "b.txt": b"bravo",
        "a.txt": b"alpha",
        "z/inner.bin": b"\x00\x01\x02" * 1000,
        "m/y.json": b"{}",
        "m/deeper/x.json": b'{"k": 1}',
        "m/A.json": b"upper",
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_hash_directory_matches_hand_computed_order(tmp_path: Path) -> None:
    files = _make_tree(tmp_path)
    # top-down: files of a level (sorted) before its sub-folders (sorted), each sub-folder fully
    order = ["a.txt", "b.txt", "m/A.json", "m/y.json", "m/deeper/x.json", "z/inner.bin"]
    outer = hashlib.sha256()
    for relative in order:
        outer.update(_b64sha(files[relative]).encode("utf-8"))
    assert hash_directory(tmp_path) == base64.b64encode(outer.digest()).decode()


def test_hash_changes_with_content_and_names(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    before = hash_directory(tmp_path)
    (tmp_path / "a.txt").write_bytes(b"alphA")
    changed = hash_directory(tmp_path)
    assert changed != before
    (tmp_path / "a.txt").write_bytes(b"alpha")
    assert hash_directory(tmp_path) == before


def test_hash_follows_symlinked_files(tmp_path: Path) -> None:
    real = tmp_path / "real"
    linked = tmp_path / "linked"
    real.mkdir()
    linked.mkdir()
    (real / "w.safetensors").write_bytes(b"weights")
    blob = tmp_path / "blob"
    blob.write_bytes(b"weights")
    os.symlink(blob, linked / "w.safetensors")
    assert hash_directory(linked) == hash_directory(real)


def test_hash_file_streams_large_files(tmp_path: Path) -> None:
    data = os.urandom(9 * 1024 * 1024 + 7)  # spans several read chunks
    path = tmp_path / "big"
    path.write_bytes(data)
    assert hash_file(path) == _b64sha(data)


def test_hash_with_hotkey_known_value() -> None:
    expected = base64.b64encode(hashlib.sha256(b"abc=" + b"5Hotkey").digest()).decode()
    assert hash_with_hotkey("abc=", "5Hotkey") == expected
    assert hash_with_hotkey("abc=", "5Other") != expected


def test_hash_directory_rejects_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        hash_directory(tmp_path / "f")


def _model(root: Path) -> Path:
    (root / "shards").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"\x01" * 3000)
    (root / "shards" / "b.safetensors").write_bytes(b"bravo weights")
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / "README.md").write_text("my model")
    return root


def test_hash_weights_hand_computed(tmp_path: Path) -> None:
    root = _model(tmp_path)
    outer = hashlib.sha256()
    for relative in ("model.safetensors", "shards/b.safetensors"):
        outer.update(f"{relative}\0{_b64sha((root / relative).read_bytes())}\n".encode())
    assert hash_weights(root) == base64.b64encode(outer.digest()).decode()


def test_hash_weights_ignores_everything_but_the_weights(tmp_path: Path) -> None:
    root = _model(tmp_path)
    before, directory = hash_weights(root), hash_directory(root)
    (root / "README.md").write_text("my very own model")
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "note": 1}')
    (root / "extra").mkdir()
    (root / "extra" / "generation_config.json").write_text("{}")
    assert hash_directory(root) != directory  # the commitment hash sees the copy as new ...
    assert hash_weights(root) == before  # ... the weights hash does not


def test_hash_weights_changes_with_any_weight_byte_or_name(tmp_path: Path) -> None:
    root = _model(tmp_path)
    before = hash_weights(root)
    data = bytearray((root / "model.safetensors").read_bytes())
    data[1234] ^= 1
    (root / "model.safetensors").write_bytes(bytes(data))
    assert hash_weights(root) != before
    data[1234] ^= 1
    (root / "model.safetensors").write_bytes(bytes(data))
    assert hash_weights(root) == before
    (root / "shards" / "b.safetensors").rename(root / "shards" / "c.safetensors")
    assert hash_weights(root) != before
    (root / "shards" / "c.safetensors").rename(root / "shards" / "b.safetensors")
    (root / "shards" / "more.safetensors").write_bytes(b"")
    assert hash_weights(root) != before


def test_hash_weights_rejects_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        hash_weights(tmp_path / "f")
