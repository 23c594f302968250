"""Reading untrusted safetensors files in bounded memory: the header (``read_safetensors_header``) and every
value of every float tensor (``scan_weights``), in chunks of at most ``max_elements`` elements whatever the
tensor's shape. Every refusal raises :class:`ModelRejectedError` (``invalid_weights``)."""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from utilities.errors import ModelRejectedError

Rejected = ModelRejectedError

DTYPE_BYTES = dict.fromkeys(("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3"), 1) | dict.fromkeys(("I16", "U16"), 2)
DTYPE_BYTES |= {"F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
FLOAT_DTYPES = frozenset({"F8_E5M2", "F8_E4M3", "F16", "BF16", "F32", "F64"})
SCAN_BYTES_PER_ELEMENT = 16
"""Peak scan memory per chunk element: the chunk as read (at most 8 bytes, possibly twice while safetensors
copies it out) or the chunk plus its float32 copy (at most 8 + 4); the finiteness and norm reductions
allocate nothing of the chunk's size."""
NORM_BLOCK = 4096
"""Elements per float32 partial norm, so the sum of squares stays accurate without a float64 copy."""
Header = dict[str, tuple[str, list[int]]]


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


def read_safetensors_header(path: Path, *, max_header_bytes: int) -> Header:
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
    tensors: Header = {}
    data_bytes = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensor = _tensor_entry(entry, data_bytes)
        if tensor is None:
            raise Rejected("invalid_weights", f"{path.name}: tensor {name!r} has an invalid header entry")
        tensors[name] = tensor
    return tensors


def chunk_slices(shape: list[int], max_elements: int) -> Iterator[tuple[slice, ...]]:
    """Index tuples that cover a tensor of ``shape`` (at least one dimension, none empty) in chunks of at
    most ``max_elements`` elements: whole trailing blocks where they fit, else slices of a single row (or of
    the last dimension alone, for a row wider than ``max_elements``)."""
    inner, split = 1, len(shape) - 1
    while split > 0 and inner * shape[split] <= max_elements:
        inner *= shape[split]
        split -= 1
    step = max(1, max_elements // inner)  # dimensions after `split` hold `inner` <= max_elements elements
    for lead in itertools.product(*map(range, shape[:split])):
        for start in range(0, shape[split], step):
            yield (*(slice(i, i + 1) for i in lead), slice(start, start + step))


def _sum_of_squares(values: torch.Tensor) -> float:
    """Sum of squares of a flat float32 tensor, in float32 blocks (no temporary of the tensor's size)."""
    full = values.numel() - values.numel() % NORM_BLOCK
    parts = [torch.linalg.vector_norm(values[:full].view(-1, NORM_BLOCK), dim=1)] if full else []
    parts.append(torch.linalg.vector_norm(values[full:]).reshape(1))
    return sum(float(torch.sum(part.double().square())) for part in parts)


def _chunk_squares(chunk: torch.Tensor) -> float | None:
    """The sum of squares of ``chunk`` in float32, or ``None`` if a value is not finite there; the float32
    copy is freed on return, before the next chunk is read."""
    values = chunk.to(torch.float32).reshape(-1)
    low, high = (float(v) for v in torch.aminmax(values))  # NaN propagates; allocates nothing
    return _sum_of_squares(values) if math.isfinite(low) and math.isfinite(high) else None


def tensor_stats(handle: Any, name: str, shape: list[int], max_elements: int) -> tuple[bool, float]:
    """Whether every value of a float tensor is finite (in float32, as it is scanned), and its
    root-mean-square, reading at most ``max_elements`` elements at a time."""
    total = math.prod(shape)
    if total == 0:
        return True, 0.0
    if not shape:
        squares = _chunk_squares(handle.get_tensor(name))
        return (True, math.sqrt(squares)) if squares is not None else (False, math.inf)
    piece, squares = handle.get_slice(name), 0.0
    for index in chunk_slices(shape, max_elements):
        chunk_squares = _chunk_squares(piece[index])  # no reference to a chunk outlives this call
        if chunk_squares is None:
            return False, math.inf
        squares += chunk_squares
    return True, math.sqrt(squares / total)


def scan_weights(
    file: Path, header: Header, max_elements: int
) -> Iterator[tuple[str, list[int], bool, float]]:
    """``(name, shape, finite, rms)`` of every float tensor of ``file``, read through safetensors in chunks
    of at most ``max_elements`` elements. Reading errors propagate (``SafetensorError``, ``OSError``...)."""
    with safe_open(str(file), framework="pt", device="cpu") as handle:
        for name, (dtype, shape) in header.items():
            if dtype in FLOAT_DTYPES:
                yield (name, shape, *tensor_stats(handle, name, shape, max_elements))


TORCH_DTYPES: dict[str, torch.dtype] = {
    "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3": torch.float8_e4m3fn,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}


class StreamScan:
    """The weight scan as a :class:`model.hashing.TensorVisitor`: finiteness and RMS of every float tensor
    from the bytes :func:`model.hashing.digest_folder` streams, so a downloaded model is read once for its
    hashes and its scan. Bytes are gathered into blocks of ``max_elements`` elements before they are
    reduced (small blocks cost up to 4x more per element here), so working memory is bounded as in the
    reading scan: :data:`SCAN_BYTES_PER_ELEMENT` per element of a block."""

    def __init__(self, *, max_elements: int = 16 * 1024 * 1024) -> None:
        if max_elements < 1:
            raise ValueError("max_elements must be >= 1")
        self.max_elements = max_elements
        self.results: dict[tuple[str, str], tuple[str, tuple[int, ...], bool, float]] = {}
        """``(file, tensor) -> (dtype, shape, finite, rms)`` of every float tensor seen whole."""
        self._current: tuple[str, str, str, tuple[int, ...]] | None = None
        self._dtype: torch.dtype | None = None
        self._size = 1
        self._buffer = bytearray()
        self._squares = 0.0
        self._finite = True

    def begin(self, file: str, name: str, dtype: str, shape: tuple[int, ...]) -> None:
        self._current, self._dtype = (file, name, dtype, shape), TORCH_DTYPES.get(dtype)
        self._size = torch.empty((), dtype=self._dtype).element_size() if self._dtype is not None else 1
        self._buffer, self._squares, self._finite = bytearray(), 0.0, True

    def update(self, data: bytes) -> None:
        if self._dtype is None or not self._finite:
            return  # not a float tensor (refused elsewhere), or already known to hold NaN/inf
        self._buffer += data
        if len(self._buffer) >= self.max_elements * self._size:
            self._reduce()

    def _reduce(self) -> None:
        """Fold the whole elements gathered so far into the running sum of squares."""
        count = len(self._buffer) // self._size
        if count and self._dtype is not None:
            values = torch.frombuffer(self._buffer, dtype=self._dtype, count=count)
            squares = _chunk_squares(values)
            del values  # the buffer is resized next: no view of it may remain
            if squares is None:
                self._finite = False
            else:
                self._squares += squares
        del self._buffer[: count * self._size]

    def end(self) -> None:
        if self._current is None:
            return
        file, name, dtype, shape = self._current
        self._current = None
        if self._dtype is None:
            return
        if self._finite:
            self._reduce()
        if not self._finite:
            self.results[(file, name)] = (dtype, shape, False, math.inf)
        elif not self._buffer:  # bytes left over: not whole elements, left to the reading scan to refuse
            total = math.prod(shape)
            rms = math.sqrt(self._squares / total) if total else 0.0
            self.results[(file, name)] = (dtype, shape, True, rms)
        self._buffer = bytearray()
