"""The validator's trust boundary: checks on a miner's model before it is downloaded and before it is loaded.

Nothing here imports, unpickles or executes anything from a miner's repository. ``check_repo`` reads hub
metadata only; ``check_folder`` reads what was downloaded (file names, ``config.json``, safetensors headers,
then every tensor in bounded chunks); ``load_model`` loads a checked folder with safetensors only, no remote
code, no network. Every refusal raises :class:`ModelRejectedError` with a short reason code.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from constants.competitions import Competition
from model.storage.hub.protocol import RepoInfo
from utilities.errors import ModelRejectedError, UnsafePathError
from utilities.files import check_contained

ALLOWED_SUFFIXES = frozenset({".safetensors", ".json", ".txt", ".jinja", ".model", ".md"})
ALLOWED_NAMES = frozenset({".gitattributes", "LICENSE", "NOTICE", "merges.txt", "vocab.json"})
FORBIDDEN_SUFFIXES = frozenset(
    ".bin .pt .pth .pkl .pickle .ckpt .py .pyc .so .h5 .msgpack .npy .npz .joblib".split()
)
FORBIDDEN_NAMES = frozenset({"adapter_config.json"})
"""A PEFT adapter config makes ``from_pretrained`` load the base model it names, from anywhere."""
CODE_KEYS = frozenset(
    "auto_map custom_pipelines trust_remote_code attn_implementation _attn_implementation "
    "_attn_implementation_internal experts_implementation _experts_implementation use_kernels kernel_config "
    "quantization_config".split()
)
"""Config keys that make transformers import code or fetch kernels (auto_map, hub kernels, quantizers)."""
PROJECTION = re.compile(
    r"(?:^|\.)(?:[qkvo]_proj|gate_proj|up_proj|down_proj|gate_up_proj|qkv_proj|out_proj|query_key_value"
    r"|dense\w*|fc\d*|c_fc|c_attn|c_proj)\.weight$"
)
DTYPE_BYTES = dict.fromkeys(("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3"), 1) | dict.fromkeys(("I16", "U16"), 2)
DTYPE_BYTES |= {"F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
FLOAT_DTYPES = frozenset({"F8_E5M2", "F8_E4M3", "F16", "BF16", "F32", "F64"})
MAX_JSON_BYTES = 16 * 1024**2
UNSAFE_PART = re.compile(r"(?:^|/)\.?(?:/|$)|[\x00-\x1f\x7f]")
"""An empty or ``.`` path part (the empty name included), or a control character."""
Rejected = ModelRejectedError


def check_path(name: str) -> None:
    """Refuse a repository path that is absolute, has a backslash, ``..``, an empty or ``.`` part, or
    control characters (``unsafe_path``)."""
    if name.startswith("/") or "\\" in name or ".." in name or UNSAFE_PART.search(name):
        raise Rejected("unsafe_path", f"file name {name!r} is not a plain relative path")


def check_file_name(name: str) -> None:
    """Refuse a path that is unsafe (``unsafe_path``) or not a data file a model needs (``forbidden_file``):
    only safetensors weights, JSON, text, Jinja templates, sentencepiece models and docs are allowed."""
    check_path(name)
    base = PurePosixPath(name).name
    suffix = PurePosixPath(base).suffix.lower()
    if suffix in FORBIDDEN_SUFFIXES or base in FORBIDDEN_NAMES:
        raise Rejected("forbidden_file", f"file {name!r} is not allowed (pickle, code or foreign weights)")
    if suffix not in ALLOWED_SUFFIXES and base not in ALLOWED_NAMES and not base.startswith("tokenizer"):
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
    """Every safetensors file under ``folder`` (all are scanned), after checking that those transformers
    loads are among them: ``model.safetensors``, or an index naming only files of ``files``."""
    index = "model.safetensors.index.json"
    if index in files:
        index_json = read_json(folder / index, max_bytes=max_json_bytes, reason="invalid_weights")
        weight_map = index_json.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise Rejected("invalid_weights", f"{index} has no valid weight_map")
        for shard in sorted(set(weight_map.values())):
            check_path(shard)
            if shard not in files:
                raise Rejected("invalid_weights", f"{index} names {shard!r}, which is not in the folder")
    elif "model.safetensors" not in files:
        raise Rejected("no_weights", f"{folder} holds neither model.safetensors nor {index}")
    return [folder / name for name in sorted(files) if name.lower().endswith(".safetensors")]


def _code_keys(value: Any, where: str, keys: frozenset[str]) -> list[str]:
    if isinstance(value, dict):
        found = [f"{where}{k}" for k in value if k in keys]
        for key, sub in value.items():
            found += _code_keys(sub, f"{where}{key}.", keys)
        return found
    if isinstance(value, list):
        return [hit for i, sub in enumerate(value) for hit in _code_keys(sub, f"{where}{i}.", keys)]
    return []


def check_no_code(folder: Path, config: dict[str, Any], *, max_json_bytes: int) -> None:
    """Refuse custom-code hints (``remote_code``): any :data:`CODE_KEYS` in ``config.json``, an ``auto_map``
    in any other ``*config*.json``."""
    found = _code_keys(config, "", CODE_KEYS)
    for path in sorted(folder.glob("*config*.json")):
        if path.name != "config.json":
            other = read_json(path, max_bytes=max_json_bytes)
            found += [f"{path.name}:{k}" for k in _code_keys(other, "", frozenset({"auto_map"}))]
    if found:
        raise Rejected("remote_code", f"config asks for custom code or kernels: {', '.join(found)}")


def check_architecture(config: dict[str, Any], competition: Competition) -> str:
    """The single architecture of ``config``, which must be allowed and match ``model_type``."""
    archs = config.get("architectures")
    if not isinstance(archs, list) or len(archs) != 1 or archs[0] not in competition.architectures:
        raise Rejected("architecture", f"architectures {archs!r} is not one of {competition.architectures}")
    model_type = config.get("model_type")
    loaded = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type) if isinstance(model_type, str) else None
    if loaded != archs[0]:
        raise Rejected("architecture", f"model_type {model_type!r} would load {loaded}, not {archs[0]}")
    return str(archs[0])


def _tensor_entry(entry: Any, data_bytes: int) -> tuple[str, list[int]] | None:
    """``(dtype, shape)`` of a header entry whose byte range matches its size and lies in the data."""
    if not isinstance(entry, dict):
        return None
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES or not isinstance(shape, list) or not isinstance(offsets, list):
        return None
    if len(offsets) != 2 or not all(type(v) is int and v >= 0 for v in [*shape, *offsets]):
        return None
    end = offsets[0] + math.prod(shape) * DTYPE_BYTES[dtype]
    return (dtype, shape) if end == offsets[1] <= data_bytes else None


def read_safetensors_header(path: Path, *, max_header_bytes: int) -> dict[str, tuple[str, list[int]]]:
    """``tensor name -> (dtype, shape)`` from the header of a safetensors file, reading at most
    ``max_header_bytes`` and checking every entry against the file size (``invalid_weights``)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise Rejected("invalid_weights", f"{path.name} is too short for a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > max_header_bytes or 8 + length > size:
            bounds = f"{size}-byte file, limit {max_header_bytes}"
            raise Rejected("invalid_weights", f"{path.name} claims a {length}-byte header ({bounds})")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Rejected("invalid_weights", f"{path.name} has a malformed header: {exc}") from exc
    if not isinstance(header, dict):
        raise Rejected("invalid_weights", f"{path.name} header is not a JSON object")
    tensors: dict[str, tuple[str, list[int]]] = {}
    data_bytes = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensor = _tensor_entry(entry, data_bytes)
        if tensor is None:
            raise Rejected("invalid_weights", f"{path.name}: tensor {name!r} has an invalid header entry")
        tensors[name] = tensor
    return tensors


def _tensor_stats(handle: Any, name: str, shape: list[int], max_elements: int) -> tuple[bool, float]:
    """Whether every value of a float tensor is finite, and its root-mean-square, reading at most
    ``max_elements`` (or one row along the first dimension) at a time."""
    total = math.prod(shape)
    if total == 0:
        return True, 0.0
    if not shape:
        chunks: Iterable[torch.Tensor] = [handle.get_tensor(name)]
    else:
        piece = handle.get_slice(name)
        rows = max(1, max_elements // max(1, total // shape[0]))
        chunks = (piece[start : start + rows] for start in range(0, shape[0], rows))
    squares = 0.0
    for chunk in chunks:
        values = chunk.to(torch.float32)
        if not bool(torch.isfinite(values).all()):
            return False, math.inf
        squares += float(torch.sum(values.square(), dtype=torch.float64))
    return True, math.sqrt(squares / total)


def _tokenizer_vocab_size(tokenizer: str) -> int:
    return len(AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=False))


class ModelChecker:
    """The checks a validator runs on a miner's model, with their resource bounds."""

    def __init__(
        self,
        *,
        max_tensor_check_bytes: int = 256 * 1024**2,
        max_header_bytes: int = 100_000_000,
        max_json_bytes: int = MAX_JSON_BYTES,
        max_files: int = 1000,
        vocab_size_of: Callable[[str], int] = _tokenizer_vocab_size,
    ) -> None:
        """``max_tensor_check_bytes`` bounds the working memory of the weight scan (chunks are upcast to
        float32); ``vocab_size_of`` maps a competition's tokenizer to its vocabulary size (cached)."""
        self.max_tensor_check_bytes = max_tensor_check_bytes
        self.max_header_bytes = max_header_bytes
        self.max_json_bytes = max_json_bytes
        self.max_files = max_files
        self._vocab_size_of = vocab_size_of
        self._vocab_sizes: dict[str, int] = {}
        self._lock = threading.Lock()

    def check_repo(self, info: RepoInfo, competition: Competition) -> None:
        """Check hub metadata before downloading: size, file count, file names, weights present."""
        where = f"{info.repo_id}@{info.commit}"
        if any(f.size < 0 for f in info.files) or info.total_size > competition.max_repo_bytes:
            raise Rejected(
                "too_large", f"{where}: {info.total_size} bytes, limit {competition.max_repo_bytes}"
            )
        if len(info.files) > self.max_files:
            raise Rejected("too_large", f"{where} has {len(info.files)} files, more than {self.max_files}")
        try:
            check_files(f.path for f in info.files)
        except ModelRejectedError as exc:
            raise Rejected(exc.reason, f"{where}: {exc}") from exc

    def check_folder(self, path: Path, competition: Competition) -> int:
        """Check a downloaded model folder before loading it; returns its parameter count."""
        path = Path(path)
        files = list_files(path)
        if len(files) > self.max_files or sum(files.values()) > competition.max_repo_bytes:
            limits = f"limits {self.max_files}, {competition.max_repo_bytes}"
            raise Rejected("too_large", f"{path}: {len(files)} files, {sum(files.values())} bytes, {limits}")
        check_files(files)
        weights = check_weight_files(path, files, max_json_bytes=self.max_json_bytes)
        config = read_json(path / "config.json", max_bytes=self.max_json_bytes)
        check_no_code(path, config, max_json_bytes=self.max_json_bytes)
        architecture = check_architecture(config, competition)
        headers = {
            file: read_safetensors_header(file, max_header_bytes=self.max_header_bytes) for file in weights
        }
        if sum(map(len, headers.values())) != len(set().union(*headers.values())):
            raise Rejected("invalid_weights", f"{path}: a tensor name appears in two safetensors files")
        params = sum(math.prod(shape) for header in headers.values() for _, shape in header.values())
        if not competition.min_params <= params <= competition.max_params:
            bounds = f"[{competition.min_params}, {competition.max_params}]"
            raise Rejected("parameters", f"{architecture} has {params} parameters, outside {bounds}")
        self._check_vocabulary(config, competition)
        for file, header in headers.items():
            self._check_weights(file, header, competition)
        return params

    def _check_vocabulary(self, config: dict[str, Any], competition: Competition) -> None:
        with self._lock:
            if competition.tokenizer not in self._vocab_sizes:
                self._vocab_sizes[competition.tokenizer] = self._vocab_size_of(competition.tokenizer)
            needed = self._vocab_sizes[competition.tokenizer]
        vocab = config.get("vocab_size")
        if type(vocab) is not int or vocab < needed:
            raise Rejected("vocabulary", f"vocab_size {vocab!r} < {needed} tokens of {competition.tokenizer}")

    def _check_weights(
        self, file: Path, header: dict[str, tuple[str, list[int]]], competition: Competition
    ) -> None:
        """Stream every float tensor of ``file``: all finite (``nan_weights``), projections' RMS bounded
        (``inflated_norms``)."""
        max_elements = max(1, self.max_tensor_check_bytes // 8)
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for name, (dtype, shape) in header.items():
                    if dtype not in FLOAT_DTYPES:
                        continue
                    finite, rms = _tensor_stats(handle, name, shape, max_elements)
                    if not finite:
                        raise Rejected("nan_weights", f"{file.name}: tensor {name!r} holds NaN or inf")
                    if PROJECTION.search(name) and len(shape) >= 2 and rms > competition.max_projection_rms:
                        bound = competition.max_projection_rms
                        raise Rejected("inflated_norms", f"{file.name}: {name!r} has RMS {rms:.4g} > {bound}")
        except (SafetensorError, OSError, ValueError, TypeError) as exc:
            raise Rejected("invalid_weights", f"{file.name} cannot be read: {exc}") from exc


def load_model(
    path: Path, *, device: str, dtype: torch.dtype, attn_implementation: str = "sdpa"
) -> PreTrainedModel:
    """Load a folder that passed :meth:`ModelChecker.check_folder`: safetensors only, no remote code, no
    network. Re-checks the cheap rules (files, code hints) first so a pickle or module is never reached."""
    path = Path(path)
    files = list_files(path)
    check_files(files)
    check_weight_files(path, files, max_json_bytes=MAX_JSON_BYTES)
    config = read_json(path / "config.json", max_bytes=MAX_JSON_BYTES)
    check_no_code(path, config, max_json_bytes=MAX_JSON_BYTES)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=True,
            dtype=dtype,
            attn_implementation=attn_implementation,
        )
        torch.nn.Module.to(model, device)
    except torch.OutOfMemoryError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise Rejected("load_failed", f"{path} could not be loaded: {exc}") from exc
    archs = config.get("architectures")
    if not isinstance(archs, list) or type(model).__name__ not in archs:
        raise Rejected("architecture", f"{path} loaded as {type(model).__name__}, not {archs!r}")
    model.eval()
    return model
