"""The validator's trust boundary (``finetune/checks.py``) against the adversarial zoo (``zoo.py``): a valid
tiny Llama passes; every hostile folder is refused with its reason, and no hostile code ever runs."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import pickle
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaForCausalLM

import finetune.checks as checks
import finetune.safetensors_scan as scan
from constants.competitions import LOCAL
from finetune.checks import ModelChecker, check_file_name, load_model, read_safetensors_header
from finetune.safetensors_scan import chunk_slices, scan_weights
from model.storage.hub.protocol import RepoFile, RepoInfo
from tests.finetune.zoo import (
    HOSTILE,
    PROJECTION,
    WEIGHTS,
    build_auto_map_only,
    build_more_layers,
    build_pickle_bomb,
    build_remote_code,
    build_tied_embeddings,
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
    checker.check_repo(repo_info_of(folder), LOCAL)  # the .bin is outside the model file set: never fetched
    assert reason_of(checker.check_folder, folder, LOCAL) == "forbidden_file"
    assert reason_of(load_model, folder, device="cpu", dtype=torch.float32) == "forbidden_file"
    assert not marker_path(folder).exists()


@pytest.mark.parametrize("build", [build_remote_code, build_auto_map_only])
def test_remote_code_never_runs(checker: ModelChecker, tmp_path: Path, build: Callable[[Path], Path]) -> None:
    folder = build(tmp_path / "evil")
    expected = "forbidden_file" if (folder / "modeling_evil.py").exists() else "remote_code"
    checker.check_repo(repo_info_of(folder), LOCAL)  # the .py is never fetched; the config is read later
    assert reason_of(checker.check_folder, folder, LOCAL) == expected
    assert reason_of(load_model, folder, device="cpu", dtype=torch.float32) == expected
    assert not marker_path(folder).exists()
    assert "modeling_evil" not in sys.modules


# --- before download: hub metadata ----------------------------------------------------------------------


def test_oversize_repo_is_rejected_from_metadata(checker: ModelChecker) -> None:
    assert reason_of(checker.check_repo, oversize_repo_info(), LOCAL) == "too_large"
    many = RepoInfo("miner/m", "4" * 40, tuple(RepoFile(f"{i}.safetensors", 1) for i in range(2000)), False)
    assert reason_of(checker.check_repo, many, LOCAL) == "too_large"
    negative = info_with("README.md")
    negative = dataclasses.replace(negative, files=(*negative.files, RepoFile("x.safetensors", -(10**12))))
    assert reason_of(checker.check_repo, negative, LOCAL) == "too_large"


def test_only_the_model_file_set_is_sized(checker: ModelChecker) -> None:
    """Files a validator never downloads (a README, a pickled ``training_args.bin``, images) count for
    nothing: a repository is judged by its model file set."""
    big = dataclasses.replace(info_with(), files=(*info_with().files, RepoFile("training_args.bin", 10**12)))
    checker.check_repo(big, LOCAL)
    many = dataclasses.replace(big, files=(*big.files, *(RepoFile(f"img/{i}.png", 1) for i in range(5000))))
    checker.check_repo(many, LOCAL)


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
        "tokenizer.sh", "tokenizer.exe", "tokenizer",
    ],
)  # fmt: skip
def test_forbidden_files_are_rejected(checker: ModelChecker, name: str, valid: Path) -> None:
    """On disk (a miner's own folder) a file that is not model data is refused; in a repository it is
    outside the model file set, so a validator never downloads it and accepts the repository."""
    assert reason_of(check_file_name, name) == "forbidden_file"
    checker.check_repo(info_with(name), LOCAL)
    target = valid / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"#!/bin/sh\n")
    assert reason_of(checker.check_folder, valid, LOCAL) == "forbidden_file"


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
    pickled = dataclasses.replace(info, files=(*info.files, RepoFile("pytorch_model.bin", 10)))
    with pytest.raises(ModelRejectedError) as refused:
        checker.check_repo(pickled, LOCAL)
    assert refused.value.reason == "no_weights" and "pytorch_model.bin" in str(refused.value)
    nested = dataclasses.replace(info, files=(*info.files, RepoFile("sub/model.safetensors", 10)))
    assert reason_of(checker.check_repo, nested, LOCAL) == "no_weights"  # from_pretrained reads the top level


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
    assert reason_of(checker.check_folder, folder, LOCAL) == "invalid_weights"  # not a shard of the index
    (folder / "extra.SAFETENSORS").unlink()
    index = json.loads((folder / INDEX).read_text())
    name, shard = next(iter(index["weight_map"].items()))
    other = next(s.name for s in shards if s.name != shard)
    (folder / INDEX).write_text(json.dumps({**index, "weight_map": {**index["weight_map"], name: other}}))
    assert reason_of(checker.check_folder, folder, LOCAL) == "invalid_weights"  # the map misplaces a tensor
    del index["weight_map"][name]
    (folder / INDEX).write_text(json.dumps(index))
    assert reason_of(checker.check_folder, folder, LOCAL) == "invalid_weights"  # the map omits a tensor
    (folder / INDEX).write_text(json.dumps({**index, "weight_map": {**index["weight_map"], name: shard}}))
    tensors = load_file(shards[-1])
    next(iter(tensors.values())).view(-1)[-1] = float("nan")
    save_file(tensors, shards[-1], metadata={"format": "pt"})
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


# --- the config's architecture against the weight files ---------------------------------------------------


def test_tied_embeddings_pass_and_load(checker: ModelChecker, tmp_path: Path) -> None:
    folder = build_tied_embeddings(tmp_path / "tied")
    assert "lm_head.weight" not in read_safetensors_header(folder / WEIGHTS, max_header_bytes=10**6)
    params = checker.check_folder(folder, LOCAL)
    model = load_model(folder, device="cpu", dtype=torch.float32)
    assert params == sum(p.numel() for p in model.parameters())
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_tied_lm_head_may_also_be_stored(checker: ModelChecker, tmp_path: Path) -> None:
    folder = build_tied_embeddings(tmp_path / "tied")

    def store_head(tensors: dict[str, torch.Tensor]) -> None:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()

    assert checker.check_folder(edit_weights(folder, store_head), LOCAL) > 0

    def wrong_head(tensors: dict[str, torch.Tensor]) -> None:
        tensors["lm_head.weight"] = torch.zeros(2048, 64)

    assert reason_of(checker.check_folder, edit_weights(folder, wrong_head), LOCAL) == "weights_mismatch"


def test_config_cannot_declare_more_than_the_weights_hold(checker: ModelChecker, tmp_path: Path) -> None:
    """The review's reproduction: 40x the layers passed with 918,144 parameters and loaded 16,273,536."""
    folder = build_more_layers(tmp_path / "more")
    with pytest.raises(ModelRejectedError, match="num_hidden_layers=80") as info:
        checker.check_folder(folder, LOCAL)
    assert info.value.reason == "weights_mismatch"
    edit_config(folder, num_hidden_layers=3)  # fewer layers than tensors: caught by the name comparison
    with pytest.raises(ModelRejectedError, match=r"missing tensor 'model\.layers\.2\.") as info:
        checker.check_folder(folder, LOCAL)
    assert info.value.reason == "weights_mismatch"
    edit_config(folder, num_hidden_layers=1)
    with pytest.raises(ModelRejectedError, match=r"unexpected tensor 'model\.layers\.1\.") as info:
        checker.check_folder(folder, LOCAL)
    assert info.value.reason == "weights_mismatch"


def test_parameters_are_counted_from_the_config(checker: ModelChecker, valid: Path) -> None:
    edit_config(valid, intermediate_size=1_000_000)
    with pytest.raises(ModelRejectedError, match=r"has 768\d{6} parameters, outside") as info:
        checker.check_folder(valid, LOCAL)
    assert info.value.reason == "parameters"


@pytest.mark.parametrize(
    ("attack", "message"),
    [("missing_tensor", "missing tensor 'model.layers.1.mlp.up_proj.weight'"),
     ("wrong_shape", f"tensor '{PROJECTION}' has shape [128, 64], not [128, 128]"),
     ("extra_tensor", "unexpected tensor 'model.layers.2.mlp.up_proj.weight'")],
)  # fmt: skip
def test_mismatches_name_the_tensor(checker: ModelChecker, tmp_path: Path, attack: str, message: str) -> None:
    folder = HOSTILE[attack][0](tmp_path / attack)
    with pytest.raises(ModelRejectedError) as info:
        checker.check_folder(folder, LOCAL)
    assert info.value.reason == "weights_mismatch" and message in str(info.value)


@pytest.mark.parametrize(
    "changes", [{"num_key_value_heads": 0}, {"hidden_size": "wide"}, {"rope_parameters": [1, 2]}]
)
def test_config_that_cannot_be_built(checker: ModelChecker, valid: Path, changes: dict[str, object]) -> None:
    edit_config(valid, **changes)
    assert reason_of(checker.check_folder, valid, LOCAL) == "invalid_config"


def test_layer_count_is_capped(checker: ModelChecker, valid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "MAX_LAYERS", 1)
    assert reason_of(checker.check_folder, valid, LOCAL) == "invalid_config"


def test_meta_build_leaves_torch_defaults_alone(checker: ModelChecker, valid: Path) -> None:
    edit_config(valid, dtype="bfloat16")
    checker.check_folder(valid, LOCAL)
    assert torch.get_default_dtype() == torch.float32
    assert torch.empty(1).device.type == "cpu"


# --- bounded walks and scans --------------------------------------------------------------------------------


def test_deep_config_is_rejected_not_crashing(checker: ModelChecker, tmp_path: Path) -> None:
    folder = HOSTILE["deep_config"][0](tmp_path / "deep")
    json.loads((folder / "config.json").read_text())  # valid JSON: the walk, not the parser, must refuse it
    assert reason_of(checker.check_folder, folder, LOCAL) == "invalid_config"
    assert reason_of(load_model, folder, device="cpu", dtype=torch.float32) == "invalid_config"
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["x"] = json.loads("[" * 700 + "]" * 700)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    edit_config(folder, deep=None)
    assert reason_of(checker.check_folder, folder, LOCAL) == "invalid_config"


def test_config_with_too_many_values(
    checker: ModelChecker, valid: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checker.check_folder(valid, LOCAL)
    monkeypatch.setattr(checks, "MAX_JSON_VALUES", 20)
    assert reason_of(checker.check_folder, valid, LOCAL) == "invalid_config"


@pytest.mark.parametrize("shape", [[7], [1, 1000], [3, 5, 7], [1, 1, 99], [2, 300, 1], [4, 4], [1]])
@pytest.mark.parametrize("max_elements", [1, 6, 16, 64, 10_000])
def test_chunks_cover_every_element_once_within_the_bound(shape: list[int], max_elements: int) -> None:
    seen = torch.zeros(shape, dtype=torch.int32)
    chunks = list(chunk_slices(shape, max_elements))
    for index in chunks:
        assert 0 < seen[index].numel() <= max_elements
        seen[index] += 1
    assert bool((seen == 1).all())
    assert len(chunks) <= 3 * math.ceil(math.prod(shape) / max_elements)


class _RecordingOpen:
    """Wraps ``safe_open`` so that every slice read records its element count and bytes."""

    def __init__(self, reads: list[tuple[int, int]]) -> None:
        self.reads = reads
        self.real = scan.safe_open

    def __call__(self, *args: object, **kwargs: object) -> _RecordingOpen:
        self.handle = self.real(*args, **kwargs)
        return self

    def __enter__(self) -> _RecordingOpen:
        self.inner = self.handle.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.__exit__(*exc)

    def get_slice(self, name: str) -> _RecordingOpen:
        self.piece = self.inner.get_slice(name)
        return self

    def __getitem__(self, index: object) -> torch.Tensor:
        chunk = self.piece[index]
        self.reads.append((chunk.numel(), chunk.numel() * chunk.element_size()))
        return chunk


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_one_wide_row_is_scanned_in_bounded_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    """A [1, N] tensor used to be read whole (one row along the first dimension), cast and squared."""
    n, budget = 100_003, 1024
    row = torch.full((1, n), 0.5, dtype=dtype)
    path = tmp_path / "wide.safetensors"
    save_file({"lm_head.weight": row}, path)
    header = read_safetensors_header(path, max_header_bytes=10**6)
    reads: list[tuple[int, int]] = []
    monkeypatch.setattr(scan, "safe_open", _RecordingOpen(reads))
    max_elements = budget // scan.SCAN_BYTES_PER_ELEMENT
    [(_, _, finite, rms)] = scan_weights(path, header, max_elements)
    assert finite and rms == pytest.approx(0.5)
    assert sum(count for count, _ in reads) == n
    assert max(count for count, _ in reads) <= max_elements
    assert max(size for _, size in reads) * 3 // 2 <= budget  # the chunk and its float32 copy
    assert len(reads) <= 2 * math.ceil(n / max_elements)

    row[0, -1] = float("nan")  # the very last element
    save_file({"lm_head.weight": row}, path)
    reads.clear()
    [(_, _, finite, _)] = scan_weights(path, header, max_elements)
    assert not finite and max(count for count, _ in reads) <= max_elements

    tiny = ModelChecker(max_tensor_check_bytes=budget)
    with pytest.raises(ModelRejectedError, match="NaN") as info:
        tiny._check_weights(path, header, LOCAL, None, path.name)
    assert info.value.reason == "nan_weights"


def test_scan_statistics_match_a_direct_computation(tmp_path: Path) -> None:
    torch.manual_seed(1)
    tensors = {
        "a": torch.randn(3, 5, 7, dtype=torch.float64),
        "b": torch.randn(1, 9000).to(torch.bfloat16),
        "c": torch.tensor(2.5),
        "d": torch.zeros(0, 4),
        "e": torch.arange(10),
    }
    path = tmp_path / "mix.safetensors"
    save_file(tensors, path)
    header = read_safetensors_header(path, max_header_bytes=10**6)
    stats = {name: rms for name, _, finite, rms in scan_weights(path, header, 8) if finite}
    assert set(stats) == {"a", "b", "c", "d"}  # integers are not scanned
    for name, rms in stats.items():
        expected = float(tensors[name].double().square().mean().sqrt()) if tensors[name].numel() else 0.0
        assert rms == pytest.approx(expected, rel=1e-5)


def test_scan_errors_become_rejections(valid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> tuple[bool, float]:
        raise RuntimeError("corrupt tensor data")

    monkeypatch.setattr(scan, "tensor_stats", fail)
    assert reason_of(ModelChecker().check_folder, valid, LOCAL) == "invalid_weights"


def test_host_memory_shortage_is_not_the_models_fault(valid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> tuple[bool, float]:
        raise MemoryError

    monkeypatch.setattr(scan, "tensor_stats", fail)
    with pytest.raises(MemoryError):  # the updater records a retryable failure, not a final rejection
        ModelChecker().check_folder(valid, LOCAL)


# --- one layout, float weights (issue 12 items 4 and 5) ---------------------------------------------------


@pytest.mark.parametrize("attack", ["stray_shard", "index_subset", "single_plus_index"])
def test_the_loader_would_load_part_of_what_the_checker_sees(tmp_path: Path, attack: str) -> None:
    """Each layout holds every tensor of the model across its files, so a checker that scans every file
    would pass it; transformers loads only some files and initialises the rest at random."""
    folder = HOSTILE[attack][0](tmp_path / attack)
    files = sorted(folder.glob("*.safetensors"))
    union = {name for file in files for name in load_file(file)}
    assert union == set(tiny_llama().state_dict()) and len(files) == 2
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    original = tiny_llama().state_dict()
    differ = [k for k, v in loaded.state_dict().items() if not torch.equal(v, original[k])]
    assert differ  # transformers filled in what it did not load
    assert reason_of(ModelChecker().check_folder, folder, LOCAL) == "invalid_weights"
    assert reason_of(load_model, folder, device="cpu", dtype=torch.float32) == "invalid_weights"


def test_integer_weights_are_refused_though_the_loader_would_cast_them(tmp_path: Path) -> None:
    folder = HOSTILE["integer_projection"][0](tmp_path / "int")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    weight = dict(model.named_parameters())[PROJECTION]
    assert weight.dtype == torch.float32 and float(weight.detach().pow(2).mean().sqrt()) == 400.0
    assert reason_of(ModelChecker().check_folder, folder, LOCAL) == "weights_dtype"


# --- the seed's Frobenius-norm rule (issue 11 item 5) -----------------------------------------------------

ATTN_0 = "model.layers.0.self_attn.q_proj.weight"
MLP_1 = "model.layers.1.mlp.up_proj.weight"


def _scaled_to(folder: Path, targets: dict[str, float]) -> Path:
    """Scale each named tensor so its Frobenius norm is exactly the target."""

    def scale(tensors: dict[str, torch.Tensor]) -> None:
        for name, norm in targets.items():
            tensors[name] = tensors[name] * (norm / float(tensors[name].norm()))

    return edit_weights(folder, scale)


def test_norm_rule_is_data_on_the_competition() -> None:
    from constants.competitions import L3, S1, SMOL, NormRule

    assert L3.norm_rule == S1.norm_rule == NormRule(max_norm=1000.0, soft_norm=200.0, max_soft_fraction=0.15)
    assert L3.norm_rule.kinds == tuple(
        f"{part}.{p}_proj" for part, ps in (("self_attn", "qkvo"), ("mlp", ["up", "down"])) for p in ps
    )
    assert (LOCAL.norm_rule.max_norm, LOCAL.norm_rule.soft_norm) == (125.0, 25.0)
    assert SMOL.norm_rule.soft_norm == 400.0
    assert L3.norm_rule.kind_of("model.layers.31.mlp.down_proj.weight") == "mlp.down_proj"
    assert L3.norm_rule.kind_of("model.layers.3.mlp.gate_proj.weight") is None
    assert L3.norm_rule.kind_of("model.embed_tokens.weight") is None
    with pytest.raises(ValueError):
        NormRule(max_norm=100.0, soft_norm=200.0)


def test_hard_norm_limit_just_past_and_just_under(tmp_path: Path) -> None:
    limit = LOCAL.norm_rule.max_norm
    under = _scaled_to(build_valid(tmp_path / "under"), {ATTN_0: limit * 0.99})
    assert ModelChecker().check_folder(under, LOCAL) > 0  # one tensor above soft: 1/2 of one kind of 6
    over = _scaled_to(build_valid(tmp_path / "over"), {ATTN_0: limit * 1.01})
    with pytest.raises(ModelRejectedError) as refused:
        ModelChecker().check_folder(over, LOCAL)
    assert refused.value.reason == "inflated_norms" and "Frobenius" in str(refused.value)


def test_soft_norm_fraction_just_past_and_just_under(tmp_path: Path) -> None:
    """2 layers x 6 kinds: one tensor above the soft norm makes a mean fraction of 1/12 (passes), two of
    different kinds 2/12 = 16.7% > 15% (rejected); two just under the soft norm pass."""
    soft = LOCAL.norm_rule.soft_norm
    checker = ModelChecker()
    one = _scaled_to(build_valid(tmp_path / "one"), {ATTN_0: soft * 1.01})
    assert checker.check_folder(one, LOCAL) > 0
    two_under = _scaled_to(build_valid(tmp_path / "two_under"), {ATTN_0: soft * 0.99, MLP_1: soft * 0.99})
    assert checker.check_folder(two_under, LOCAL) > 0
    two = _scaled_to(build_valid(tmp_path / "two"), {ATTN_0: soft * 1.01, MLP_1: soft * 1.01})
    with pytest.raises(ModelRejectedError) as refused:
        checker.check_folder(two, LOCAL)
    assert refused.value.reason == "inflated_norms" and "16.7%" in str(refused.value)


def test_the_seeds_limits_refuse_what_the_rms_bound_let_through() -> None:
    """Llama-3-8B shapes at RMS 0.5 (under the old RMS <= 1.0 bound) have Frobenius norms of 1024 to
    3831: all over the seed's hard limit of 1000."""
    from constants.competitions import L3

    def norm(rows: int, cols: int, rms: float) -> float:
        return rms * math.sqrt(rows * cols)

    q_proj, k_proj, up_proj = norm(4096, 4096, 0.5), norm(1024, 4096, 0.5), norm(14336, 4096, 0.5)
    assert (round(q_proj), round(k_proj), round(up_proj)) == (2048, 1024, 3831)
    with pytest.raises(ModelRejectedError):
        checks.check_norms({"model.layers.0.self_attn.q_proj.weight": q_proj}, L3.norm_rule)
    honest = {f"model.layers.{i}.self_attn.{p}_proj.weight": 90.0 for i in range(32) for p in "qkvo"}
    checks.check_norms(honest, L3.norm_rule)
    # 5 of 32 layers' q_proj above 200: 15.6% of one kind, 2.6% over the six kinds: passes (the seed's mean)
    soft = {**honest, **{f"model.layers.{i}.self_attn.q_proj.weight": 250.0 for i in range(5)}}
    checks.check_norms(soft, L3.norm_rule)
    every = {name: 250.0 for name in honest}  # every projection above 200: rejected
    with pytest.raises(ModelRejectedError):
        checks.check_norms(every, L3.norm_rule)
    with pytest.raises(ModelRejectedError):
        checks.check_norms({"model.layers.0.mlp.up_proj.weight": math.nan}, L3.norm_rule)


# --- one read for the hashes and the scan (issue 14 item 8) -----------------------------------------------


def _streamed(folder: Path) -> scan.StreamScan:
    from model.hashing import digest_folder

    streamed = ModelChecker().stream_scan()
    digest_folder(folder, visitor=streamed)
    return streamed


@pytest.mark.parametrize("attack", ["valid", "nan_weights", "inflated_norms", "integer_projection"])
def test_a_streamed_scan_replaces_the_reading_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    build, expected = (build_valid, "") if attack == "valid" else HOSTILE[attack]
    folder = build(tmp_path / attack)
    streamed = _streamed(folder)
    read = ModelChecker().check_folder(folder, LOCAL) if not expected else reason_of(
        ModelChecker().check_folder, folder, LOCAL
    )

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tensor was read again")

    monkeypatch.setattr(checks, "scan_weights", no_reading)
    if expected:
        assert reason_of(ModelChecker().check_folder, folder, LOCAL, scan=streamed) == expected == read
    else:
        assert ModelChecker().check_folder(folder, LOCAL, scan=streamed) == read


def test_streamed_statistics_equal_the_reading_scan_across_odd_pieces(tmp_path: Path) -> None:
    torch.manual_seed(1)
    tensors = {
        "a": torch.randn(7, 33).to(torch.bfloat16),
        "b": torch.randn(5, 3, dtype=torch.float64),
        "c": torch.tensor(2.5, dtype=torch.float16),
        "d": torch.randn(11).to(torch.float8_e4m3fn),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, path)
    header = read_safetensors_header(path, max_header_bytes=10**6)
    expected = {name: (finite, rms) for name, _, finite, rms in scan_weights(path, header, 16)}
    streamed = scan.StreamScan(max_elements=5)  # blocks of 5 elements, pieces of 3 bytes
    for name, tensor in tensors.items():
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        streamed.begin("model.safetensors", name, header[name][0], tuple(header[name][1]))
        for start in range(0, len(raw), 3):  # pieces that split elements
            streamed.update(raw[start : start + 3])
        streamed.end()
    for name, (finite, rms) in expected.items():
        _, _, s_finite, s_rms = streamed.results[("model.safetensors", name)]
        assert s_finite == finite and math.isclose(s_rms, rms, rel_tol=1e-6)


def test_a_scan_that_missed_a_tensor_falls_back_to_reading(tmp_path: Path) -> None:
    folder = HOSTILE["nan_weights"][0](tmp_path / "nan")
    streamed = _streamed(folder)
    nan_tensor = next(key for key, stats in streamed.results.items() if not stats[2])
    del streamed.results[nan_tensor]
    assert reason_of(ModelChecker().check_folder, folder, LOCAL, scan=streamed) == "nan_weights"
