"""The validator's trust boundary: checks on a miner's model before it is downloaded and before it is loaded.

Nothing here imports, unpickles or executes anything from a miner's repository. ``check_repo`` reads hub
metadata only; ``check_folder`` reads what was downloaded (file names and layout, see
:mod:`finetune.checks_files`; ``config.json``; safetensors headers, which must match the model the config
describes, built on the meta device; then every tensor in bounded chunks, see
:mod:`finetune.safetensors_scan`); ``load_model`` loads a checked folder with safetensors only, no remote
code, no network. Every refusal raises :class:`ModelRejectedError` with a short reason code.
"""

from __future__ import annotations

import copy
import math
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from constants.competitions import Competition, NormRule
from finetune.checks_files import (
    FOREIGN_WEIGHTS,
    INDEX,
    check_file_name,
    check_files,
    check_path,
    check_weight_files,
    list_files,
    read_json,
    read_weight_map,
)
from finetune.safetensors_scan import (
    FLOAT_DTYPES,
    SCAN_BYTES_PER_ELEMENT,
    Header,
    StreamScan,
    read_safetensors_header,
    scan_weights,
)
from model.model_files import is_model_file
from model.storage.hub.protocol import RepoInfo
from utilities.errors import ModelRejectedError

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
MAX_JSON_BYTES = 16 * 1024**2
MAX_JSON_DEPTH = 64
MAX_JSON_VALUES = 2_000_000
"""Bounds on the values walked in a config (real ones nest under 10 deep and hold well under a million)."""
LAYER_COUNT_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers")
"""Config keys whose value is a number of layers, each of which needs tensors in the weight files."""
MAX_LAYERS = 512
"""More layers than any real model (Llama 3.1 405B has 126); building 512 on the meta device takes ~0.7 s."""
Rejected = ModelRejectedError
__all__ = [
    "ModelChecker",
    "check_file_name",
    "check_files",
    "check_norms",
    "check_weight_files",
    "list_files",
    "load_model",
    "read_safetensors_header",
]


def check_weight_map(weight_map: dict[str, str] | None, headers: dict[Path, Header]) -> None:
    """With an index, every tensor of the shards is in its ``weight_map`` under its own shard, and the
    map names nothing else (``invalid_weights``)."""
    if weight_map is None:
        return
    found = {name: file.name for file, header in headers.items() for name in header}
    wrong = sorted(name for name, shard in weight_map.items() if found.get(name) != shard)
    unlisted = sorted(name for name in found if name not in weight_map)
    if wrong or unlisted:
        what = (
            f"names {wrong[0]!r} in {weight_map[wrong[0]]!r}, where it is not" if wrong
            else f"does not list {unlisted[0]!r}"
        )  # fmt: skip
        counts = f"{len(wrong)} misplaced, {len(unlisted)} unlisted"
        raise Rejected("invalid_weights", f"{INDEX} {what} ({counts})")


def check_float_dtypes(headers: dict[Path, Header]) -> None:
    """Every tensor of a causal LM's weight files is floating point (``weights_dtype``): the loader would
    cast an integer tensor to float, so an integer projection would skip the norm and NaN scan."""
    for file, header in headers.items():
        for name, (dtype, _) in header.items():
            if dtype not in FLOAT_DTYPES:
                floats = ", ".join(sorted(FLOAT_DTYPES))
                problem = f"tensor {name!r} is {dtype}, not one of {floats}"
                raise Rejected("weights_dtype", f"{file.name}: {problem}")


def _code_keys(value: dict[str, Any], keys: frozenset[str], source: str) -> list[str]:
    """Paths (``a.0.b``) of every key of ``keys`` in a JSON value, walked with an explicit stack; a value
    nested deeper than :data:`MAX_JSON_DEPTH` or holding over :data:`MAX_JSON_VALUES` is refused
    (``invalid_config``)."""
    found: list[str] = []
    stack: list[tuple[Any, Any, int]] = [(value, None, 0)]  # (container, (key, parent path) | None, depth)
    walked = 0
    while stack:
        node, path, depth = stack.pop()
        walked += len(node)
        if depth > MAX_JSON_DEPTH or walked > MAX_JSON_VALUES:
            bounds = f"{MAX_JSON_DEPTH} levels, {MAX_JSON_VALUES} values"
            raise Rejected("invalid_config", f"{source} nests too deep or holds too much (limits {bounds})")
        for key, sub in node.items() if isinstance(node, dict) else enumerate(node):
            if key in keys:
                found.append(_json_path((key, path)))
            if isinstance(sub, dict | list):
                stack.append((sub, (key, path), depth + 1))
    return found


def _json_path(path: Any) -> str:
    parts: list[str] = []
    while path is not None:
        parts.append(str(path[0])[:64])
        path = path[1]
    return ".".join(reversed(parts))


def check_no_code(folder: Path, config: dict[str, Any], *, max_json_bytes: int) -> None:
    """Refuse custom-code hints (``remote_code``): any :data:`CODE_KEYS` in ``config.json``, an ``auto_map``
    in any other ``*config*.json``."""
    found = _code_keys(config, CODE_KEYS, "config.json")
    for path in sorted(folder.glob("*config*.json")):
        if path.name != "config.json":
            other = read_json(path, max_bytes=max_json_bytes)
            found += [f"{path.name}:{k}" for k in _code_keys(other, frozenset({"auto_map"}), path.name)]
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


def _meta_model(config: dict[str, Any], architecture: str) -> torch.nn.Module:
    """The model ``config`` describes (its ``model_type`` already checked), built on the meta device: shapes
    only, nothing allocated, no code or file of the miner involved (``invalid_config`` if it cannot be)."""
    try:
        built = CONFIG_MAPPING[config["model_type"]].from_dict(copy.deepcopy(config))
        with torch.device("meta"):  # dtype=None: do not touch torch's process-wide default dtype
            model: torch.nn.Module = AutoModelForCausalLM.from_config(
                built, trust_remote_code=False, dtype=None
            )
    except Exception as exc:  # whatever transformers raises on a bad config is a refusal
        raise Rejected("invalid_config", f"{architecture} cannot be built from config.json: {exc!r}") from exc
    return model


def check_weights_match_config(
    config: dict[str, Any], tensors: dict[str, list[int]], architecture: str, competition: Competition
) -> int:
    """The parameter count of the model ``config`` describes, which ``load_model`` would build whatever the
    weight files hold: within the competition's bounds (``parameters``), and its tensors exactly those of the
    weight files (``weights_mismatch``): every parameter present with its shape (a tied ``lm_head`` may be
    left out), nothing else but buffers. A config declaring more layers than there are tensors (or than
    :data:`MAX_LAYERS`) is refused before anything is built."""
    for key in LAYER_COUNT_KEYS:
        layers = config.get(key)
        if type(layers) is int and layers > len(tensors):
            raise Rejected(
                "weights_mismatch", f"config {key}={layers}, but the weights hold {len(tensors)} tensors"
            )
        if type(layers) is int and layers > MAX_LAYERS:
            raise Rejected("invalid_config", f"config {key}={layers}, more than {MAX_LAYERS} layers")
    model = _meta_model(config, architecture)
    params = sum(p.numel() for p in model.parameters())
    if not competition.min_params <= params <= competition.max_params:
        bounds = f"[{competition.min_params}, {competition.max_params}]"
        raise Rejected("parameters", f"{architecture} has {params} parameters, outside {bounds}")
    known = {name: list(t.shape) for name, t in [*model.named_buffers(), *model.state_dict().items()]}
    missing = [name for name, _ in model.named_parameters() if name not in tensors]  # tied: listed once
    extra = [name for name in sorted(tensors) if name not in known]
    wrong = [name for name in sorted(tensors) if name in known and tensors[name] != known[name]]
    if missing or extra or wrong:
        what = (
            f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {extra[0]!r}" if extra
            else f"tensor {wrong[0]!r} has shape {tensors[wrong[0]]}, not {known[wrong[0]]}"
        )  # fmt: skip
        counts = f"{len(missing)} missing, {len(extra)} unexpected, {len(wrong)} mis-shaped"
        raise Rejected(
            "weights_mismatch", f"weights do not match the {architecture} of config.json: {what} ({counts})"
        )
    return params


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
        """Check hub metadata before downloading: size, file count, file names and weights present, all of
        the model file set (:mod:`model.model_files`, the only files a validator downloads): a README, a
        ``.gitattributes`` or a pickled ``training_args.bin`` beside the model is never fetched, so it is
        neither counted nor refused; weights that exist only outside the set (``pytorch_model.bin``) are
        ``no_weights``."""
        where = f"{info.repo_id}@{info.commit}"
        for entry in info.files:  # a listing with a path trick is hostile or broken, wherever it is
            try:
                check_path(entry.path)
            except ModelRejectedError as exc:
                raise Rejected(exc.reason, f"{where}: {exc}") from exc
        files = [f for f in info.files if is_model_file(f.path)]
        size = sum(f.size for f in files)
        if any(f.size < 0 for f in files) or size > competition.max_repo_bytes:
            limit = competition.max_repo_bytes
            raise Rejected("too_large", f"{where}: the model files hold {size} bytes, limit {limit}")
        if len(files) > self.max_files:
            raise Rejected("too_large", f"{where} has {len(files)} model files, more than {self.max_files}")
        try:
            check_files(f.path for f in files)
        except ModelRejectedError as exc:
            if exc.reason == "no_weights":
                suffix = lambda f: PurePosixPath(f.path).suffix.lower()  # noqa: E731
                others = sorted(f.path for f in info.files if suffix(f) in FOREIGN_WEIGHTS)
                if others:
                    problem = f"weights only as {', '.join(others[:3])}, which validators never load"
                    raise Rejected("no_weights", f"{where}: {problem}: publish .safetensors") from exc
            raise Rejected(exc.reason, f"{where}: {exc}") from exc

    def stream_scan(self) -> StreamScan:
        """A weight scan to show the folder's tensors to while they are hashed
        (:func:`model.hashing.digest_folder`); :meth:`check_folder` then reads no tensor again."""
        return StreamScan(max_elements=max(1, self.max_tensor_check_bytes // SCAN_BYTES_PER_ELEMENT))

    def check_folder(self, path: Path, competition: Competition, *, scan: object = None) -> int:
        """Check a downloaded model folder before loading it; returns its parameter count. With ``scan``
        (a :meth:`stream_scan` that saw every tensor of this folder), its results replace the reading
        scan; a tensor it did not see whole, with the dtype and shape of the header, is read."""
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
        tensors = {name: shape for header in headers.values() for name, (_, shape) in header.items()}
        if sum(map(len, headers.values())) != len(tensors):
            raise Rejected("invalid_weights", f"{path}: a tensor name appears in two safetensors files")
        check_weight_map(read_weight_map(path, files, max_json_bytes=self.max_json_bytes), headers)
        check_float_dtypes(headers)
        self._check_vocabulary(config, competition)
        params = check_weights_match_config(config, tensors, architecture, competition)
        norms: dict[str, float] = {}
        streamed = scan if isinstance(scan, StreamScan) else None
        for file, header in headers.items():
            relative = file.relative_to(path).as_posix()
            norms |= self._check_weights(file, header, competition, streamed, relative)
        check_norms(norms, competition.norm_rule)
        return params

    def _check_vocabulary(self, config: dict[str, Any], competition: Competition) -> None:
        with self._lock:
            if competition.tokenizer not in self._vocab_sizes:
                self._vocab_sizes[competition.tokenizer] = self._vocab_size_of(competition.tokenizer)
            needed = self._vocab_sizes[competition.tokenizer]
        vocab = config.get("vocab_size")
        if type(vocab) is not int or vocab < needed:
            raise Rejected("vocabulary", f"vocab_size {vocab!r} < {needed} tokens of {competition.tokenizer}")

    def _stats(
        self, file: Path, header: Header, streamed: StreamScan | None, relative: str
    ) -> Iterator[tuple[str, list[int], bool, float]]:
        """``(name, shape, finite, rms)`` of each float tensor of ``file``: from ``streamed`` if it saw every
        one whole with the header's dtype and shape, else read in chunks of bounded memory."""
        floats = [(name, dtype, shape) for name, (dtype, shape) in header.items() if dtype in FLOAT_DTYPES]
        if streamed is not None:
            seen = {name: streamed.results.get((relative, name)) for name, _, _ in floats}
            whole = {name: s for name, s in seen.items() if s is not None}
            if all(name in whole and whole[name][:2] == (d, tuple(sh)) for name, d, sh in floats):
                for name, _, shape in floats:
                    yield name, shape, whole[name][2], whole[name][3]
                return
        max_elements = max(1, self.max_tensor_check_bytes // SCAN_BYTES_PER_ELEMENT)
        yield from scan_weights(file, header, max_elements)

    def _check_weights(
        self, file: Path, header: Header, competition: Competition, streamed: StreamScan | None, relative: str
    ) -> dict[str, float]:
        """Every float tensor of ``file`` (streamed or read in chunks, whatever their shapes): all finite
        (``nan_weights``), projections' RMS bounded (``inflated_norms``); returns the Frobenius norm of
        each projection the competition's :class:`NormRule` covers."""
        norms: dict[str, float] = {}
        try:
            for name, shape, finite, rms in self._stats(file, header, streamed, relative):
                if not finite:
                    raise Rejected("nan_weights", f"{file.name}: tensor {name!r} holds NaN or inf")
                if PROJECTION.search(name) and len(shape) >= 2 and rms > competition.max_projection_rms:
                    bound = competition.max_projection_rms
                    raise Rejected("inflated_norms", f"{file.name}: {name!r} has RMS {rms:.4g} > {bound}")
                if competition.norm_rule.kind_of(name) is not None:
                    norms[name] = rms * math.sqrt(math.prod(shape))
        except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as exc:
            raise Rejected("invalid_weights", f"{file.name} cannot be scanned: {exc!r}") from exc
        # MemoryError is left to propagate: the scan's memory is bounded, so it means this host is short
        # of memory, not that the model is bad; the updater records a retryable failure with backoff.
        return norms


def check_norms(norms: dict[str, float], rule: NormRule) -> None:
    """The seed's Frobenius-norm rule (``inflated_norms``) on ``norms`` (projection name -> norm): any
    norm above ``rule.max_norm`` rejects; so does a mean over the projection kinds of the fraction of each
    kind's tensors above ``rule.soft_norm`` that exceeds ``rule.max_soft_fraction``."""
    above: dict[str, int] = {}
    total: dict[str, int] = {}
    for name, norm in sorted(norms.items()):
        kind = rule.kind_of(name)
        if kind is None:
            continue
        if not norm <= rule.max_norm:  # NaN included
            raise Rejected("inflated_norms", f"{name!r} has Frobenius norm {norm:.5g} > {rule.max_norm:g}")
        total[kind] = total.get(kind, 0) + 1
        above[kind] = above.get(kind, 0) + (norm > rule.soft_norm)
    if not total:
        return
    fraction = sum(above[kind] / total[kind] for kind in total) / len(total)
    if fraction > rule.max_soft_fraction:
        raise Rejected(
            "inflated_norms",
            f"{fraction:.1%} of the projections (mean over {len(total)} kinds) have a Frobenius norm above "
            f"{rule.soft_norm:g}, more than {rule.max_soft_fraction:.0%}",
        )


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
