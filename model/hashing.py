"""Content hashes of a model folder (wire format, design.md §4), computed in one read of each file.

``hash_directory`` walks top-down with ``os.walk`` (directory and file names sorted at each level,
symlinks followed), takes the base64 SHA-256 of each file's bytes, feeds those texts in order into one
outer SHA-256 and returns its base64. ``hash_with_hotkey`` salts a hash with the miner's hotkey so a
copier cannot claim another miner's commitment as its own.

``hash_weights`` hashes the *tensors* of the safetensors files (name, dtype, shape and bytes of each, in
name order): a copy re-saved with other metadata, other shards or other file names hashes the same.
:func:`digest_folder` computes what both hashes need in a single pass over each file (the file's SHA-256
and, for a safetensors file, the SHA-256 of each tensor's bytes as they stream past), so a validator
reads a model once for both.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_CHUNK = 4 * 1024 * 1024  # stream files: a multi-GB shard is never read into memory at once
WEIGHTS_SUFFIX = ".safetensors"
MAX_HEADER_BYTES = 100_000_000
"""A safetensors header larger than this is refused (real ones are well under 1 MB)."""


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def hash_file(path: str | os.PathLike[str]) -> str:
    """Base64 of the SHA-256 of one file's bytes, read in chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    return _b64(sha.digest())


@dataclass(frozen=True)
class TensorDigest:
    """One tensor of a safetensors file: its dtype, shape and the base64 SHA-256 of its bytes."""

    dtype: str
    shape: tuple[int, ...]
    sha256: str


@dataclass(frozen=True)
class FolderDigest:
    """What one read of a model folder yields: each file's digest in ``hash_directory`` order, and each
    tensor of its safetensors files."""

    files: tuple[tuple[str, str], ...]
    """``(relative/posix/path, base64 SHA-256)`` in the walk order of :func:`hash_directory`."""
    tensors: dict[str, TensorDigest]
    bytes_read: int

    @property
    def directory_hash(self) -> str:
        outer = hashlib.sha256()
        for _, digest in self.files:
            outer.update(digest.encode("utf-8"))
        return _b64(outer.digest())

    @property
    def weights_hash(self) -> str:
        """The tensor-content hash (see :func:`hash_weights`)."""
        outer = hashlib.sha256()
        for name in sorted(self.tensors):
            tensor = self.tensors[name]
            # NUL and newline cannot occur in the JSON-escaped name, the dtype or the shape: unambiguous
            shape = ",".join(map(str, tensor.shape))
            outer.update(f"{json.dumps(name)}\0{tensor.dtype}\0{shape}\0{tensor.sha256}\n".encode())
        return _b64(outer.digest())


_Range = tuple[int, int, str, str, tuple[int, ...]]


def _tensor_range(name: str, entry: object, data_bytes: int, path: str) -> _Range:
    """``(start, end, name, dtype, shape)`` of one header entry; ``ValueError`` if it is malformed."""
    fields = entry if isinstance(entry, dict) else {}
    offsets, shape, dtype = fields.get("data_offsets"), fields.get("shape"), fields.get("dtype")
    if not isinstance(offsets, list) or not isinstance(shape, list) or not isinstance(dtype, str):
        raise ValueError(f"{path}: tensor {name!r} has an invalid header entry")
    if len(offsets) != 2 or not all(type(v) is int and v >= 0 for v in [*offsets, *shape]):
        raise ValueError(f"{path}: tensor {name!r} has invalid offsets or shape")
    start, end = int(offsets[0]), int(offsets[1])
    if not start <= end <= data_bytes:
        raise ValueError(f"{path}: tensor {name!r} lies outside the file's data")
    return start, end, name, dtype, tuple(int(v) for v in shape)


def _tensor_ranges(header: object, data_bytes: int, path: str) -> list[_Range]:
    """Every tensor's range, by start offset; raises ``ValueError`` for an entry that is malformed,
    outside the data, or overlapping another."""
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header is not a JSON object")
    entries = [(str(name), entry) for name, entry in header.items() if name != "__metadata__"]
    ranges = sorted(_tensor_range(name, entry, data_bytes, path) for name, entry in entries)
    for before, after in itertools.pairwise(ranges):
        if after[0] < before[1]:
            raise ValueError(f"{path}: tensors {before[2]!r} and {after[2]!r} overlap")
    return ranges


class TensorVisitor(Protocol):
    """Sees each tensor's bytes as :func:`digest_folder` streams them (e.g. the checker's weight scan), so
    the folder is read once for the hashes and the scan together."""

    def begin(self, file: str, name: str, dtype: str, shape: tuple[int, ...]) -> None:
        """A tensor of ``file`` (relative path) starts; its bytes follow through :meth:`update`."""
        ...

    def update(self, data: bytes) -> None:
        """The next bytes of the current tensor, in order."""
        ...

    def end(self) -> None:
        """The current tensor is complete."""
        ...


def _digest_safetensors(
    path: str, relative: str, tensors: dict[str, TensorDigest], visitor: TensorVisitor | None
) -> tuple[str, int]:
    """The file's base64 SHA-256 and size, adding each of its tensors to ``tensors`` (and showing their
    bytes to ``visitor``), in one sequential read."""
    file_sha = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as handle:

        def read(count: int, *sinks: Callable[[bytes], object]) -> None:
            while count > 0:
                piece = handle.read(min(count, _CHUNK))
                if not piece:
                    raise ValueError(f"{path} ended before its tensors did")
                file_sha.update(piece)
                for sink in sinks:
                    sink(piece)
                count -= len(piece)

        prefix = handle.read(8)
        file_sha.update(prefix)
        if len(prefix) < 8:
            raise ValueError(f"{path} is too short for a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise ValueError(f"{path} claims a {length}-byte header")
        raw = handle.read(length)
        file_sha.update(raw)
        try:
            header = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{path}: malformed safetensors header: {exc}") from exc
        position = 0  # offset in the data section
        for start, stop, name, dtype, shape in _tensor_ranges(header, size - 8 - length, path):
            read(start - position)  # a gap between tensors: in the file's hash only
            if name in tensors:
                raise ValueError(f"{path}: tensor {name!r} is also in another safetensors file")
            sha = hashlib.sha256()
            if visitor is None:
                read(stop - start, sha.update)
            else:
                visitor.begin(relative, name, dtype, shape)
                read(stop - start, sha.update, visitor.update)
                visitor.end()
            tensors[name] = TensorDigest(dtype, shape, _b64(sha.digest()))
            position = stop
        while chunk := handle.read(_CHUNK):
            file_sha.update(chunk)
    return _b64(file_sha.digest()), size


def digest_folder(path: str | os.PathLike[str], *, visitor: TensorVisitor | None = None) -> FolderDigest:
    """Every file's SHA-256 (in :func:`hash_directory` order) and every safetensors tensor's, reading
    each file once and showing each tensor's bytes to ``visitor``. Raises ``NotADirectoryError``,
    ``OSError``, or ``ValueError`` for a malformed safetensors file or a tensor name in two of them."""
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"cannot hash {root}: not a directory")
    files: list[tuple[str, str]] = []
    tensors: dict[str, TensorDigest] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for filename in sorted(filenames):
            full = os.path.join(dirpath, filename)
            relative = Path(os.path.relpath(full, root)).as_posix()
            if filename.endswith(WEIGHTS_SUFFIX):
                digest, size = _digest_safetensors(full, relative, tensors, visitor)
            else:
                digest, size = hash_file(full), os.path.getsize(full)
            files.append((relative, digest))
            total += size
    return FolderDigest(tuple(files), tensors, total)


def hash_directory(path: str | os.PathLike[str]) -> str:
    """The directory hash of every file under ``path`` (contract, design.md §4)."""
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"cannot hash {root}: not a directory")
    outer = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for filename in sorted(filenames):
            outer.update(hash_file(os.path.join(dirpath, filename)).encode("utf-8"))
    return _b64(outer.digest())


def hash_with_hotkey(model_hash: str, hotkey: str) -> str:
    """base64(SHA-256(model_hash bytes + hotkey bytes)) (contract, design.md §4)."""
    return _b64(hashlib.sha256(model_hash.encode("utf-8") + hotkey.encode("utf-8")).digest())


def hash_weights(path: str | os.PathLike[str]) -> str:
    """The tensor-content hash of the ``*.safetensors`` files under ``path``, for "identical models count
    once": for each tensor in name order, its JSON-quoted name, dtype, shape and the base64 SHA-256 of its
    bytes go into one outer SHA-256. Safetensors metadata, how the tensors are split into files and the
    files' names do not count, and nothing but the weights does (a README, a config key). Not a wire
    format: validators compute it locally. Raises ``ValueError`` for a malformed safetensors file."""
    return digest_folder(path).weights_hash
