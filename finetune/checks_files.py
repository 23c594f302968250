"""File rules of the validator's trust boundary: which names a model folder or repository may hold, that
nothing in a folder leaves it, and which weight layout is the one transformers loads. Nothing here reads
more than names, sizes and small JSON files; every refusal raises :class:`ModelRejectedError`."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from utilities.errors import ModelRejectedError, UnsafePathError
from utilities.files import check_contained

ALLOWED_SUFFIXES = frozenset({".safetensors", ".json", ".txt", ".jinja", ".model", ".md"})
ALLOWED_NAMES = frozenset({".gitattributes", "LICENSE", "NOTICE", "merges.txt", "vocab.json"})
FORBIDDEN_SUFFIXES = frozenset(
    ".bin .pt .pth .pkl .pickle .ckpt .py .pyc .so .h5 .msgpack .npy .npz .joblib".split()
)
FOREIGN_WEIGHTS = frozenset(".bin .pt .pth .pkl .pickle .ckpt .h5 .msgpack .npy .npz .gguf".split())
"""Suffixes of weights in other formats (pickle above all), which a validator never downloads or loads."""
FORBIDDEN_NAMES = frozenset({"adapter_config.json"})
"""A PEFT adapter config makes ``from_pretrained`` load the base model it names, from anywhere."""
UNSAFE_PART = re.compile(r"(?:^|/)\.?(?:/|$)|[\x00-\x1f\x7f]")
"""An empty or ``.`` path part (the empty name included), or a control character."""
INDEX = "model.safetensors.index.json"
Rejected = ModelRejectedError


def check_path(name: str) -> None:
    """Refuse a repository path that is absolute, has a backslash, ``..``, an empty or ``.`` part, or
    control characters (``unsafe_path``)."""
    if name.startswith("/") or "\\" in name or ".." in name or UNSAFE_PART.search(name):
        raise Rejected("unsafe_path", f"file name {name!r} is not a plain relative path")


def check_file_name(name: str) -> None:
    """Refuse a path that is unsafe (``unsafe_path``) or not a data file a model needs (``forbidden_file``):
    only safetensors weights, JSON, text, Jinja templates, sentencepiece models and docs are allowed, by
    suffix (``tokenizer.model``, ``tokenizer.json``): a ``tokenizer.sh`` or ``tokenizer.exe`` is not."""
    check_path(name)
    base = PurePosixPath(name).name
    suffix = PurePosixPath(base).suffix.lower()
    if suffix in FORBIDDEN_SUFFIXES or base in FORBIDDEN_NAMES:
        raise Rejected("forbidden_file", f"file {name!r} is not allowed (pickle, code or foreign weights)")
    if suffix not in ALLOWED_SUFFIXES and base not in ALLOWED_NAMES:
        raise Rejected(
            "forbidden_file", f"file {name!r} is of an unknown type, not {sorted(ALLOWED_SUFFIXES)}"
        )


def list_files(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` as ``relative/posix/path -> size``, after checking that nothing leaves the
    folder (``unsafe_path``): no symlink at all, nothing but regular files and folders."""
    if not folder.is_dir() or folder.is_symlink():
        raise Rejected("unsafe_path", f"{folder} is not a plain folder")
    try:
        check_contained(folder)
    except UnsafePathError as exc:
        raise Rejected("unsafe_path", str(exc)) from exc
    files: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            entry = Path(dirpath, name)
            relative = entry.relative_to(folder).as_posix()
            info = entry.lstat()
            if stat.S_ISLNK(info.st_mode):
                raise Rejected("unsafe_path", f"{relative!r} is a symlink, not a real file")
            if stat.S_ISREG(info.st_mode):
                files[relative] = info.st_size
            elif not stat.S_ISDIR(info.st_mode):
                raise Rejected("unsafe_path", f"{relative!r} is not a regular file")
    return files


def check_files(names: Iterable[str]) -> None:
    """Every name allowed, and weights present (``no_weights``)."""
    names = list(names)
    for name in names:
        check_file_name(name)
    if not any(name.lower().endswith(".safetensors") for name in names):
        raise Rejected("no_weights", "the repository holds no .safetensors file")


def read_json(path: Path, *, max_bytes: int, reason: str = "invalid_config") -> dict[str, Any]:
    """A JSON object from ``path``, refusing a missing, oversized or malformed file (``reason``)."""
    if not path.is_file() or path.stat().st_size > max_bytes:
        raise Rejected(reason, f"{path.name} is missing or larger than {max_bytes} bytes")
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise Rejected(reason, f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise Rejected(reason, f"{path.name} is not a JSON object")
    return value


def check_weight_files(folder: Path, files: dict[str, int], *, max_json_bytes: int) -> list[Path]:
    """The weight files of ``folder``, which must be exactly the ones transformers loads, so the checker
    and the loader see the same tensors: either ``model.safetensors`` alone, or an index whose shards are
    all present and are every safetensors file of the folder. A stray shard beside ``model.safetensors``,
    an index naming a subset of the shards present, or a single file plus an index is refused
    (``invalid_weights``): transformers would load some of the files and initialise what they miss at
    random, so two validators could disagree."""
    present = sorted(name for name in files if name.lower().endswith(".safetensors"))
    weight_map = read_weight_map(folder, files, max_json_bytes=max_json_bytes)
    if weight_map is not None:
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            check_path(shard)
        missing = [shard for shard in shards if shard not in files]
        if missing:
            raise Rejected("invalid_weights", f"{INDEX} names {missing[0]!r}, which is not in the folder")
        stray = [name for name in present if name not in shards]
        if stray:
            raise Rejected(
                "invalid_weights",
                f"{stray[0]!r} is not a shard of {INDEX} ({len(stray)} such): only the index's shards load",
            )
    elif "model.safetensors" not in files:
        raise Rejected("no_weights", f"{folder} holds neither model.safetensors nor {INDEX}")
    elif present != ["model.safetensors"]:
        stray = [name for name in present if name != "model.safetensors"]
        raise Rejected("invalid_weights", f"{stray[0]!r} beside model.safetensors would never be loaded")
    return [folder / name for name in present]


def read_weight_map(folder: Path, files: dict[str, int], *, max_json_bytes: int) -> dict[str, str] | None:
    """The ``weight_map`` (tensor name -> shard file) of ``folder``'s index, ``None`` without an index."""
    if INDEX not in files:
        return None
    index_json = read_json(folder / INDEX, max_bytes=max_json_bytes, reason="invalid_weights")
    weight_map = index_json.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise Rejected("invalid_weights", f"{INDEX} has no valid weight_map")
    return weight_map
