from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model.hashing import digest_folder, hash_directory, hash_file, hash_weights, hash_with_hotkey


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


def _tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "model.embed.weight": torch.randn(16, 8),
        "model.layers.0.q.weight": torch.randn(8, 8).to(torch.bfloat16),
        "lm_head.weight": torch.randn(16, 8),
        "scalar": torch.tensor(3.0),
    }


def _model(root: Path, *, metadata: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(), root / "model.safetensors", metadata=metadata or {"format": "pt"})
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / "README.md").write_text("my model")
    return root


def test_hash_weights_hand_computed(tmp_path: Path) -> None:
    root = _model(tmp_path / "m")
    outer = hashlib.sha256()
    for name, tensor in sorted(_tensors().items()):
        dtype = {torch.float32: "F32", torch.bfloat16: "BF16"}[tensor.dtype]
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        shape = ",".join(map(str, tensor.shape))
        outer.update(f'"{name}"\0{dtype}\0{shape}\0{_b64sha(raw)}\n'.encode())
    assert hash_weights(root) == base64.b64encode(outer.digest()).decode()


def test_hash_weights_ignores_metadata_sharding_file_names_and_other_files(tmp_path: Path) -> None:
    root = _model(tmp_path / "m")
    before, directory = hash_weights(root), hash_directory(root)
    copy = _model(tmp_path / "copy", metadata={"format": "pt", "made_by": "totally me"})
    (copy / "README.md").write_text("my very own model")
    (copy / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "note": 1}')
    assert hash_directory(copy) != directory  # the commitment hash sees the copy as new ...
    assert hash_weights(copy) == before  # ... the weights hash does not
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    tensors = _tensors()
    names = sorted(tensors)
    save_file({k: tensors[k] for k in names[:2]}, sharded / "model-00001-of-00002.safetensors")
    save_file({k: tensors[k] for k in names[2:]}, sharded / "other-name.safetensors")
    assert hash_weights(sharded) == before


def test_hash_weights_changes_with_any_byte_name_dtype_or_shape(tmp_path: Path) -> None:
    before = hash_weights(_model(tmp_path / "m"))

    def variant(folder: str, change: Callable[[dict[str, torch.Tensor]], None]) -> str:
        tensors = _tensors()
        change(tensors)
        (tmp_path / folder).mkdir()
        save_file(tensors, tmp_path / folder / "model.safetensors")
        return hash_weights(tmp_path / folder)

    def flip(t: dict[str, torch.Tensor]) -> None:
        t["lm_head.weight"][3, 4] = t["lm_head.weight"][3, 4].item() + 1e-3

    def rename(t: dict[str, torch.Tensor]) -> None:
        t["lm_head.weight2"] = t.pop("lm_head.weight")

    def reshape(t: dict[str, torch.Tensor]) -> None:  # the same bytes, another shape
        t["lm_head.weight"] = t["lm_head.weight"].reshape(8, 16).contiguous()

    def retype(t: dict[str, torch.Tensor]) -> None:  # the same bytes, another dtype
        t["lm_head.weight"] = t["lm_head.weight"].view(torch.int32)

    def extra(t: dict[str, torch.Tensor]) -> None:
        t["extra"] = torch.zeros(0)

    changes = [("a", flip), ("b", rename), ("c", reshape), ("d", retype), ("e", extra)]
    hashes = [variant(folder, change) for folder, change in changes]
    assert before not in hashes and len(set(hashes)) == 5


def test_digest_folder_reads_each_file_once_for_both_hashes(tmp_path: Path) -> None:
    _make_tree(tmp_path / "t")
    root = _model(tmp_path / "t" / "m")
    big = {"w": torch.randn(3 * 1024 * 1024 // 4 + 5)}  # spans read chunks, ends mid-chunk
    save_file(big, tmp_path / "t" / "z.safetensors")
    digest = digest_folder(tmp_path / "t")
    assert digest.directory_hash == hash_directory(tmp_path / "t")
    assert digest.bytes_read == sum(p.stat().st_size for p in (tmp_path / "t").rglob("*") if p.is_file())
    assert digest.tensors["w"].sha256 == _b64sha(big["w"].numpy().tobytes())
    assert set(digest.tensors) == {*_tensors(), "w"} and root.is_dir()


@pytest.mark.parametrize(
    "header",
    [b"[]", b'{"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 99]}}',
     b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
     b'"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', b"{not json"],
)  # fmt: skip
def test_malformed_safetensors_raise_value_error(tmp_path: Path, header: bytes) -> None:
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(ValueError):
        hash_weights(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x01")
    with pytest.raises(ValueError):
        hash_weights(tmp_path)


def test_a_tensor_in_two_files_raises(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, tmp_path / "a.safetensors")
    save_file({"w": torch.ones(2)}, tmp_path / "b.safetensors")
    with pytest.raises(ValueError):
        hash_weights(tmp_path)


def test_hash_weights_rejects_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        hash_weights(tmp_path / "f")
