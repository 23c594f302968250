"""The validator's trust boundary (``finetune/checks.py``) against the adversarial zoo (``zoo.py``): a valid
tiny Llama passes; every hostile folder is refused with its reason, and no hostile code ever runs."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pickle
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

from constants.competitions import LOCAL
from finetune.checks import ModelChecker, check_file_name, load_model, read_safetensors_header
from model.storage.hub.protocol import RepoFile, RepoInfo
from tests.finetune.zoo import (
    HOSTILE,
    PROJECTION,
    WEIGHTS,
    build_auto_map_only,
    build_pickle_bomb,
    build_remote_code,
    build_valid,
    edit_config,
    edit_weights,
    marker_path,
    oversize_repo_info,
    pickle_payload,
    repo_info_of,
    tiny_llama,
    traversal_repo_info,
)
from utilities.errors import ModelRejectedError

INDEX = "model.safetensors.index.json"


@pytest.fixture(scope="module")
def checker() -> ModelChecker:
    return ModelChecker()


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    return build_valid(tmp_path / "valid")


def reason_of(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    with pytest.raises(ModelRejectedError) as info:
        call(*args, **kwargs)
    return info.value.reason


def info_with(*paths: str) -> RepoInfo:
    files = tuple(RepoFile(p, 100) for p in ("config.json", WEIGHTS, *paths))
    return RepoInfo(repo_id="miner/m", commit="3" * 40, files=files, private=False)


# --- the valid model ------------------------------------------------------------------------------------


def test_valid_model_passes_and_loads(checker: ModelChecker, valid: Path) -> None:
    checker.check_repo(repo_info_of(valid), LOCAL)
    params = checker.check_folder(valid, LOCAL)
    model = load_model(valid, device="cpu", dtype=torch.float32)
    assert isinstance(model, LlamaForCausalLM)
    assert params == sum(p.numel() for p in model.parameters())
    assert LOCAL.min_params <= params <= LOCAL.max_params
    with torch.no_grad():
        logits = model(torch.tensor([[0, 5, 9]])).logits
    assert logits.shape == (1, 3, 2048) and torch.isfinite(logits).all()


def test_weights_are_scanned_in_small_chunks(valid: Path, tmp_path: Path) -> None:
    tiny = ModelChecker(max_tensor_check_bytes=64)
    assert tiny.check_folder(valid, LOCAL) > 0
    nan = HOSTILE["nan_weights"][0](tmp_path / "nan")
    assert reason_of(tiny.check_folder, nan, LOCAL) == "nan_weights"


# --- the zoo --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", sorted(HOSTILE))
def test_every_hostile_folder_is_rejected(checker: ModelChecker, tmp_path: Path, attack: str) -> None:
    build, reason = HOSTILE[attack]
    folder = build(tmp_path / attack)
    with pytest.raises(ModelRejectedError) as info:
        checker.check_folder(folder, LOCAL)
    assert info.value.reason == reason
    assert str(info.value)
    assert not marker_path(folder).exists()


def test_the_pickle_bomb_is_live(tmp_path: Path) -> None:
    marker = tmp_path / "proof"
    pickle.loads(pickle_payload(marker))
    assert marker.exists()


def test_the_remote_module_is_live(tmp_path: Path) -> None:
    folder = build_remote_code(tmp_path / "live")
    spec = importlib.util.spec_from_file_location("zoo_live_evil", folder / "modeling_evil.py")
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert marker_path(folder).exists()


def test_pickle_bomb_never_runs(checker: ModelChecker, tmp_path: Path) -> None:
    folder = build_pickle_bomb(tmp_path / "bomb")
    assert reason_of(checker.check_repo, repo_info_of(folder), LOCAL) == "forbidden_file"
    assert reason_of(checker.check_folder, folder, LOCAL) == "forbidden_file"
    assert reason_of(load_model, folder, device="cpu", dtype=torch.float32) == "forbidden_file"
    assert not marker_path(folder).exists()


@pytest.mark.parametrize("build", [build_remote_code, build_auto_map_only])
def test_remote_code_never_runs(checker: ModelChecker, tmp_path: Path, build: Callable[[Path], Path]) -> None:
    folder = build(tmp_path / "evil")
    expected = "forbidden_file" if (folder / "modeling_evil.py").exists() else "remote_code"
    if expected == "forbidden_file":
        assert reason_of(checker.check_repo, repo_info_of(folder), LOCAL) == "forbidden_file"
    else:
        checker.check_repo(repo_info_of(folder), LOCAL)  # metadata cannot show what a config says
    assert reason_of(checker.check_folder, folder, LOCAL) == expected
    assert reason_of(load_model, folder, device="cpu", dtype=torch.float32) == expected
    assert not marker_path(folder).exists()
    assert "modeling_evil" not in sys.modules


# --- before download: hub metadata ----------------------------------------------------------------------


def test_oversize_repo_is_rejected_from_metadata(checker: ModelChecker) -> None:
    assert reason_of(checker.check_repo, oversize_repo_info(), LOCAL) == "too_large"
    many = RepoInfo("miner/m", "4" * 40, tuple(RepoFile(f"{i}.json", 1) for i in range(2000)), False)
    assert reason_of(checker.check_repo, many, LOCAL) == "too_large"
    negative = info_with("README.md")
    negative = dataclasses.replace(negative, files=(*negative.files, RepoFile("x.json", -(10**12))))
    assert reason_of(checker.check_repo, negative, LOCAL) == "too_large"


@pytest.mark.parametrize(
    "path",
    ["../../outside.json", "a/../b.json", "/etc/passwd.json", "sub\\x.json", "a//b.json", "./c.json", ""],
)
def test_unsafe_paths_are_rejected(checker: ModelChecker, path: str) -> None:
    assert reason_of(checker.check_repo, traversal_repo_info(path), LOCAL) == "unsafe_path"


@pytest.mark.parametrize(
    "name",
    [
        "pytorch_model.bin", "model.pt", "x.pth", "x.pkl", "x.pickle", "x.ckpt", "modeling.py",
        "m.pyc", "lib.so", "tf_model.h5", "flax.msgpack", "a.npy", "a.npz", "x.joblib", "original/c.PTH",
        "run.sh", "model.gguf", "Makefile", "tokenizer.py", ".env", "adapter_config.json",
    ],
)  # fmt: skip
def test_forbidden_files_are_rejected(checker: ModelChecker, name: str) -> None:
    assert reason_of(checker.check_repo, info_with(name), LOCAL) == "forbidden_file"


@pytest.mark.parametrize(
    "name",
    [
        "README.md", ".gitattributes", "tokenizer.model", "merges.txt", "vocab.json", "LICENSE",
        "special_tokens_map.json", "chat_template.jinja", "original/params.json", INDEX,
    ],
)  # fmt: skip
def test_data_files_are_allowed(name: str) -> None:
    check_file_name(name)


def test_repo_without_safetensors_is_rejected(checker: ModelChecker) -> None:
    info = RepoInfo("miner/m", "5" * 40, (RepoFile("config.json", 10), RepoFile("README.md", 5)), False)
    assert reason_of(checker.check_repo, info, LOCAL) == "no_weights"


def test_traversal_name_in_repo_info(checker: ModelChecker) -> None:
    assert reason_of(checker.check_repo, traversal_repo_info(), LOCAL) == "unsafe_path"


# --- after download: what is on disk --------------------------------------------------------------------


def test_disk_is_checked_even_if_metadata_was_fine(checker: ModelChecker, valid: Path) -> None:
    info = repo_info_of(valid)
    (valid / "notes.pkl").write_bytes(b"\x80\x02N.")
    checker.check_repo(info, LOCAL)
    assert reason_of(checker.check_folder, valid, LOCAL) == "forbidden_file"


def test_folder_too_large_on_disk(checker: ModelChecker, valid: Path) -> None:
    small = dataclasses.replace(LOCAL, max_repo_bytes=10_000)
    assert reason_of(checker.check_folder, valid, small) == "too_large"


def test_missing_weights_on_disk(checker: ModelChecker, valid: Path) -> None:
    (valid / WEIGHTS).rename(valid / "other.safetensors")
    assert reason_of(checker.check_folder, valid, LOCAL) == "no_weights"
    (valid / "other.safetensors").unlink()
    assert reason_of(checker.check_folder, valid, LOCAL) == "no_weights"


def test_symlinks_and_special_files(checker: ModelChecker, valid: Path, tmp_path: Path) -> None:
    (valid / "inside.json").symlink_to(valid / "config.json")
    assert reason_of(checker.check_folder, valid, LOCAL) == "unsafe_path"
    (valid / "inside.json").unlink()
    os.mkfifo(valid / "pipe.json")
    assert reason_of(checker.check_folder, valid, LOCAL) == "unsafe_path"
    assert reason_of(load_model, valid, device="cpu", dtype=torch.float32) == "unsafe_path"
    link = tmp_path / "link"
    link.symlink_to(valid)
    assert reason_of(checker.check_folder, link, LOCAL) == "unsafe_path"


def test_parameter_bounds(checker: ModelChecker, valid: Path) -> None:
    assert reason_of(checker.check_folder, valid, dataclasses.replace(LOCAL, max_params=1000)) == "parameters"
    big_floor = dataclasses.replace(LOCAL, min_params=10**9, max_params=2 * 10**9)
    assert reason_of(checker.check_folder, valid, big_floor) == "parameters"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"architectures": ["LlamaForCausalLM", "GPT2LMHeadModel"]}, "architecture"),
        ({"architectures": "LlamaForCausalLM"}, "architecture"),
        ({"architectures": None}, "architecture"),
        ({"quantization_config": {"quant_method": "mxfp4"}}, "remote_code"),
        ({"attn_implementation": "kernels-community/evil"}, "remote_code"),
        ({"text_config": {"auto_map": {"AutoConfig": "x--y.Z"}}}, "remote_code"),
        ({"vocab_size": "2048"}, "vocabulary"),
    ],
)
def test_config_rules(checker: ModelChecker, valid: Path, changes: dict[str, object], reason: str) -> None:
    edit_config(valid, **changes)
    assert reason_of(checker.check_folder, valid, LOCAL) == reason


def test_bad_config_files(checker: ModelChecker, valid: Path) -> None:
    tokenizer_config = json.loads((valid / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["tok_evil.Tok", None]}
    (valid / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    assert reason_of(checker.check_folder, valid, LOCAL) == "remote_code"
    (valid / "config.json").write_text("{not json")
    assert reason_of(checker.check_folder, valid, LOCAL) == "invalid_config"
    (valid / "config.json").write_text("[" * 100_000)
    assert reason_of(checker.check_folder, valid, LOCAL) == "invalid_config"
    (valid / "config.json").unlink()
    assert reason_of(checker.check_folder, valid, LOCAL) == "invalid_config"


def test_vocabulary_size_is_cached_per_tokenizer(valid: Path) -> None:
    calls: list[str] = []

    def vocab(tokenizer: str) -> int:
        calls.append(tokenizer)
        return 4096

    checker = ModelChecker(vocab_size_of=vocab)
    assert reason_of(checker.check_folder, valid, LOCAL) == "vocabulary"
    assert reason_of(checker.check_folder, valid, LOCAL) == "vocabulary"
    assert calls == [LOCAL.tokenizer]


def test_only_projections_have_a_norm_bound(checker: ModelChecker, valid: Path) -> None:
    def scale_embeddings(tensors: dict[str, torch.Tensor]) -> None:
        tensors["model.embed_tokens.weight"] *= 1000

    checker.check_folder(edit_weights(valid, scale_embeddings), LOCAL)

    def scale_projection(tensors: dict[str, torch.Tensor]) -> None:
        tensors[PROJECTION] *= 100  # RMS 0.02 -> 2

    assert reason_of(checker.check_folder, edit_weights(valid, scale_projection), LOCAL) == "inflated_norms"


# --- safetensors headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"",
        struct.pack("<Q", 2**63),
        struct.pack("<Q", 50) + b"{}",
        struct.pack("<Q", 5) + b"\xff\xfe{}]",
        struct.pack("<Q", 2) + b"[]",
        struct.pack("<Q", 9) + b'{"a": 1}',
    ],
)
def test_malformed_headers_fail_cleanly(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(header)
    assert reason_of(read_safetensors_header, path, max_header_bytes=10**6) == "invalid_weights"


def test_header_entries_must_match_the_data(tmp_path: Path) -> None:
    def write(entries: str, data: bytes) -> Path:
        raw = entries.encode()
        path = tmp_path / "w.safetensors"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
        return path

    good = '{"t": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}'
    assert read_safetensors_header(write(good, bytes(16)), max_header_bytes=1000) == {"t": ("F32", [2, 2])}
    for entries, data in [
        (good, bytes(8)),  # truncated data
        (good.replace("[2, 2]", "[2, 3]"), bytes(16)),  # shape disagrees with offsets
        (good.replace("F32", "X99"), bytes(16)),  # unknown dtype
        (good.replace("[2, 2]", "[2, -2]"), bytes(16)),
        ('{"t": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0]}}', bytes(16)),
        ('{"t": {"dtype": "F32", "shape": [true, 2], "data_offsets": [0, 8]}}', bytes(16)),
        ('{"t": [1, 2]}', bytes(16)),
    ]:
        path = write(entries, data)
        assert reason_of(read_safetensors_header, path, max_header_bytes=1000) == "invalid_weights"
    assert reason_of(lambda: read_safetensors_header(write(good, bytes(16)), max_header_bytes=10)) == (
        "invalid_weights"
    )


def test_truncated_weights_file(checker: ModelChecker, valid: Path) -> None:
    data = (valid / WEIGHTS).read_bytes()
    (valid / WEIGHTS).write_bytes(data[:-100])
    assert reason_of(checker.check_folder, valid, LOCAL) == "invalid_weights"


# --- sharded weights ------------------------------------------------------------------------------------


def test_sharded_model_passes_and_every_shard_is_scanned(checker: ModelChecker, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    build_valid(folder)
    (folder / WEIGHTS).unlink()
    tiny_llama().save_pretrained(folder, max_shard_size="300KB")
    shards = sorted(folder.glob("*.safetensors"))
    assert len(shards) > 1 and (folder / INDEX).exists()
    assert checker.check_folder(folder, LOCAL) == sum(p.numel() for p in tiny_llama().parameters())
    assert isinstance(load_model(folder, device="cpu", dtype=torch.float32), LlamaForCausalLM)
    save_file({"x": torch.full((2, 2), float("nan"))}, folder / "extra.SAFETENSORS")
    assert reason_of(checker.check_folder, folder, LOCAL) == "nan_weights"


@pytest.mark.parametrize(
    ("shard", "reason"),
    [("../other/model.safetensors", "unsafe_path"), ("/abs/model.safetensors", "unsafe_path"),
     ("missing.safetensors", "invalid_weights"), (7, "invalid_weights")],
)  # fmt: skip
def test_index_must_name_files_of_the_folder(
    checker: ModelChecker, valid: Path, shard: object, reason: str
) -> None:
    (valid / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": {"lm_head.weight": shard}}))
    assert reason_of(checker.check_folder, valid, LOCAL) == reason
    assert reason_of(load_model, valid, device="cpu", dtype=torch.float32) == reason
