"""An adversarial zoo of miner model folders for the LOCAL competition, built in a given folder.

Every builder writes a complete folder (tiny Llama from ``constants/local/config.json`` with random
weights, saved as safetensors, plus the local tokenizer files) and then breaks it one way. Builders whose
attack would run code write a marker at :func:`marker_path` if that code ever runs; a test asserts the
marker never appears. ``HOSTILE`` maps each attack to its builder and the rejection reason expected from
``ModelChecker.check_folder``.
"""

from __future__ import annotations

import json
import pathlib
import pickle
import shutil
import struct
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from constants.competitions import LOCAL_ASSETS
from model.storage.hub.protocol import RepoFile, RepoInfo

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
WEIGHTS = "model.safetensors"
PROJECTION = "model.layers.0.self_attn.o_proj.weight"


def marker_path(folder: Path) -> Path:
    """Where a hostile model of ``folder`` would leave its mark (next to the folder, not inside it)."""
    return folder.parent / f"{folder.name}.pwned"


def tiny_llama_config(**overrides: Any) -> LlamaConfig:
    """The LOCAL competition's base config, with ``overrides``."""
    config = LlamaConfig.from_pretrained(LOCAL_ASSETS)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@lru_cache(maxsize=1)
def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


def build_valid(folder: Path) -> Path:
    """A tiny Llama that passes every check: config.json, generation_config.json, model.safetensors and the
    LOCAL tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_llama().save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copyfile(LOCAL_ASSETS / name, folder / name)
    return folder


def edit_config(folder: Path, **changes: Any) -> Path:
    """Rewrite ``folder/config.json`` with ``changes`` (a value of ``None`` deletes the key)."""
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def edit_weights(folder: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """Load ``model.safetensors``, let ``change`` modify the tensors in place, save it back."""
    tensors = load_file(folder / WEIGHTS)
    change(tensors)
    save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})
    return folder


class _Touch:
    """Unpickling this creates ``path``: a stand-in for arbitrary code execution."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def pickle_payload(marker: Path) -> bytes:
    """Pickle bytes that create ``marker`` when loaded (``pickle.loads`` or a legacy ``torch.load``)."""
    return pickle.dumps(_Touch(marker), protocol=2)


def build_pickle_bomb(folder: Path) -> Path:
    """A valid model plus a ``pytorch_model.bin`` whose unpickling touches the marker."""
    build_valid(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle_payload(marker_path(folder)))
    return folder


def build_remote_code(folder: Path) -> Path:
    """A valid model whose config has an ``auto_map`` to ``modeling_evil.py``, which touches the marker on
    import."""
    build_valid(folder)
    code = (
        f"import pathlib\npathlib.Path({str(marker_path(folder))!r}).touch()\n"
        "from transformers import LlamaForCausalLM as EvilForCausalLM\n"
    )
    (folder / "modeling_evil.py").write_text(code)
    return edit_config(folder, auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})


def build_auto_map_only(folder: Path) -> Path:
    """``build_remote_code`` without the ``.py`` file on disk, so only the config hint is left to catch."""
    build_remote_code(folder)
    (folder / "modeling_evil.py").unlink()
    return folder


def build_wrong_architecture(folder: Path) -> Path:
    """A tiny GPT-2 (``GPT2LMHeadModel``) with the LOCAL vocabulary, for a Llama-only competition."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=2048, n_positions=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=3
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copyfile(LOCAL_ASSETS / name, folder / name)
    return folder


def build_disguised_architecture(folder: Path) -> Path:
    """Claims ``LlamaForCausalLM`` in ``architectures`` but ``model_type`` gpt2 would load another class."""
    return edit_config(build_valid(folder), model_type="gpt2")


def build_nan_weights(folder: Path) -> Path:
    """A valid model with one NaN and one inf in the last row of an MLP weight."""

    def poison(tensors: dict[str, torch.Tensor]) -> None:
        tensors["model.layers.1.mlp.up_proj.weight"][-1, -2:] = torch.tensor([float("nan"), float("inf")])

    return edit_weights(build_valid(folder), poison)


def build_inflated_norms(folder: Path, factor: float = 1000.0) -> Path:
    """A valid model with an attention output projection multiplied by ``factor``."""

    def inflate(tensors: dict[str, torch.Tensor]) -> None:
        tensors[PROJECTION] *= factor

    return edit_weights(build_valid(folder), inflate)


def build_escaping_symlink(folder: Path) -> Path:
    """A valid model plus ``secrets.json``, a symlink to a file outside the folder."""
    build_valid(folder)
    outside = folder.parent / f"{folder.name}.outside.json"
    outside.write_text("{}")
    (folder / "secrets.json").symlink_to(outside)
    return folder


def build_absurd_header(folder: Path) -> Path:
    """A valid model whose ``model.safetensors`` header claims to be 100 GB long."""
    build_valid(folder)
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", 100 * 10**9) + b'{"a": {}}')
    return folder


def build_small_vocabulary(folder: Path) -> Path:
    """A consistent model (config and embeddings) with 1024 tokens, fewer than the tokenizer's 2048."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(vocab_size=1024)).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copyfile(LOCAL_ASSETS / name, folder / name)
    return folder


def build_tied_embeddings(folder: Path) -> Path:
    """A valid tiny Llama with ``tie_word_embeddings``: ``lm_head.weight`` is not in the weight file."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=True)).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copyfile(LOCAL_ASSETS / name, folder / name)
    return folder


def build_more_layers(folder: Path, factor: int = 40) -> Path:
    """The valid weights with a config declaring ``factor`` times their layers: transformers would build
    (and randomly initialise) the missing ones, ~16M parameters from a ~0.9M-parameter repository."""
    build_valid(folder)
    layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
    return edit_config(folder, num_hidden_layers=layers * factor)


def build_declared_giant(folder: Path) -> Path:
    """The valid weights with a config whose MLPs are ~800M parameters wide (files unchanged)."""
    return edit_config(build_valid(folder), intermediate_size=1_000_000)


def build_missing_tensor(folder: Path) -> Path:
    """A valid model whose weight file lacks one MLP projection (it would load randomly initialised)."""

    def drop(tensors: dict[str, torch.Tensor]) -> None:
        del tensors["model.layers.1.mlp.up_proj.weight"]

    return edit_weights(build_valid(folder), drop)


def build_wrong_shape(folder: Path) -> Path:
    """A valid model with one attention projection stored with half its columns."""

    def shrink(tensors: dict[str, torch.Tensor]) -> None:
        tensors[PROJECTION] = tensors[PROJECTION][:, ::2].contiguous()

    return edit_weights(build_valid(folder), shrink)


def build_extra_tensor(folder: Path) -> Path:
    """A valid model whose weight file also holds a tensor the architecture does not have."""

    def add(tensors: dict[str, torch.Tensor]) -> None:
        tensors["model.layers.2.mlp.up_proj.weight"] = torch.zeros(384, 128)

    return edit_weights(build_valid(folder), add)


def build_deep_config(folder: Path, depth: int = 700) -> Path:
    """A valid model whose config holds a list nested ``depth`` deep (valid JSON, too deep to recurse)."""
    build_valid(folder)
    config = (folder / "config.json").read_text().rstrip()[:-1]
    (folder / "config.json").write_text(f'{config}, "deep": {"[" * depth}{"]" * depth}}}')
    return folder


INDEX = "model.safetensors.index.json"
MLP_TENSOR = "model.layers.1.mlp.down_proj.weight"


def _split(folder: Path, moved: set[str], to: str) -> dict[str, torch.Tensor]:
    """Move the tensors ``moved`` out of ``model.safetensors`` into ``folder/to``; returns all tensors."""
    tensors = load_file(folder / WEIGHTS)
    meta = {"format": "pt"}
    save_file({k: v for k, v in tensors.items() if k in moved}, folder / to, metadata=meta)
    save_file({k: v for k, v in tensors.items() if k not in moved}, folder / WEIGHTS, metadata=meta)
    return tensors


def _write_index(folder: Path, weight_map: dict[str, str]) -> None:
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))


def build_stray_shard(folder: Path) -> Path:
    """``model.safetensors`` without one MLP projection, which sits in a stray file beside it: the union of
    the files is the whole model, but transformers loads ``model.safetensors`` alone and would initialise
    the missing projection at random."""
    build_valid(folder)
    _split(folder, {MLP_TENSOR}, "model-extra.safetensors")
    return folder


def build_index_subset(folder: Path) -> Path:
    """Two shards with an index naming only the first: transformers loads that shard and initialises
    the tensors of the second at random."""
    build_valid(folder)
    tensors = _split(folder, {MLP_TENSOR}, "model-00002-of-00002.safetensors")
    (folder / WEIGHTS).rename(folder / "model-00001-of-00002.safetensors")
    _write_index(folder, {k: "model-00001-of-00002.safetensors" for k in tensors if k != MLP_TENSOR})
    return folder


def build_single_plus_index(folder: Path) -> Path:
    """``model.safetensors`` and an index naming a shard beside it: which one loads depends on the
    loader's preference, and each holds only part of the model."""
    build_valid(folder)
    _split(folder, {MLP_TENSOR}, "model-00002-of-00002.safetensors")
    _write_index(folder, {MLP_TENSOR: "model-00002-of-00002.safetensors"})
    return folder


def build_integer_projection(folder: Path, value: int = 400) -> Path:
    """A valid model whose attention output projection is stored as int32 (every value ``value``): the
    loader casts it to float (RMS ``value``), so a scan of float tensors alone would let it through."""
    build_valid(folder)

    def to_int(tensors: dict[str, torch.Tensor]) -> None:
        tensors[PROJECTION] = torch.full_like(tensors[PROJECTION], value, dtype=torch.int32)

    return edit_weights(folder, to_int)


HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "pickle_bomb": (build_pickle_bomb, "forbidden_file"),
    "remote_code": (build_remote_code, "forbidden_file"),
    "auto_map_only": (build_auto_map_only, "remote_code"),
    "wrong_architecture": (build_wrong_architecture, "architecture"),
    "disguised_architecture": (build_disguised_architecture, "architecture"),
    "nan_weights": (build_nan_weights, "nan_weights"),
    "inflated_norms": (build_inflated_norms, "inflated_norms"),
    "escaping_symlink": (build_escaping_symlink, "unsafe_path"),
    "absurd_header": (build_absurd_header, "invalid_weights"),
    "small_vocabulary": (build_small_vocabulary, "vocabulary"),
    "more_layers": (build_more_layers, "weights_mismatch"),
    "declared_giant": (build_declared_giant, "parameters"),
    "missing_tensor": (build_missing_tensor, "weights_mismatch"),
    "wrong_shape": (build_wrong_shape, "weights_mismatch"),
    "extra_tensor": (build_extra_tensor, "weights_mismatch"),
    "deep_config": (build_deep_config, "invalid_config"),
    "stray_shard": (build_stray_shard, "invalid_weights"),
    "index_subset": (build_index_subset, "invalid_weights"),
    "single_plus_index": (build_single_plus_index, "invalid_weights"),
    "integer_projection": (build_integer_projection, "weights_dtype"),
}
"""Attack name -> (builder, reason ``check_folder`` gives) for the LOCAL competition."""


def repo_info_of(folder: Path, *, repo_id: str = "miner/tiny", commit: str = "0" * 40) -> RepoInfo:
    """What a hub would report for ``folder`` (real paths and sizes; symlinks reported by name)."""
    files = tuple(
        RepoFile(p.relative_to(folder).as_posix(), p.lstat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file() or p.is_symlink()
    )
    return RepoInfo(repo_id=repo_id, commit=commit, files=files, private=False)


def oversize_repo_info(size: int = 20 * 10**9) -> RepoInfo:
    """Metadata of a repository claiming ``size`` bytes of otherwise fine files (nothing on disk)."""
    files = (RepoFile("config.json", 700), RepoFile(WEIGHTS, size))
    return RepoInfo(repo_id="miner/huge", commit="1" * 40, files=files, private=False)


def traversal_repo_info(path: str = "../../outside.json") -> RepoInfo:
    """Metadata of a repository with one file that would land outside the download folder."""
    files = (RepoFile("config.json", 700), RepoFile(WEIGHTS, 4096), RepoFile(path, 10))
    return RepoInfo(repo_id="miner/sneaky", commit="2" * 40, files=files, private=False)
