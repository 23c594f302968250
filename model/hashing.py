"""Content hashes of a model folder (wire format, design.md §4).

``hash_directory`` walks top-down with ``os.walk`` (directory and file names sorted at each level,
symlinks followed), takes the base64 SHA-256 of each file's bytes, feeds those texts in order into one
outer SHA-256 and returns its base64. ``hash_with_hotkey`` salts a hash with the miner's hotkey so a
copier cannot claim another miner's commitment as its own.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

_CHUNK = 4 * 1024 * 1024  # stream files: a multi-GB shard is never read into memory at once


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def hash_file(path: str | os.PathLike[str]) -> str:
    """Base64 of the SHA-256 of one file's bytes, read in chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    return _b64(sha.digest())


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


WEIGHTS_SUFFIX = ".safetensors"


def hash_weights(path: str | os.PathLike[str]) -> str:
    """A hash of the weight files only (``*.safetensors`` anywhere under ``path``), for "identical
    models count once": a copy that only adds or edits a README or a config key hashes the same.

    Same construction as :func:`hash_directory` (base64 SHA-256 of each file, streamed, fed into one
    outer SHA-256), except that files are taken in the order of their ``/``-separated relative paths and
    each path goes into the outer digest before its file's hash, so renaming a shard changes the result.
    Not a wire format: validators compute it locally.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"cannot hash {root}: not a directory")
    weights = []
    for dirpath, _, filenames in os.walk(root, followlinks=True):
        for filename in filenames:
            if filename.endswith(WEIGHTS_SUFFIX):
                full = os.path.join(dirpath, filename)
                weights.append((Path(os.path.relpath(full, root)).as_posix(), full))
    outer = hashlib.sha256()
    for relative, full in sorted(weights):
        # NUL cannot occur in a path and base64 has no newline: the encoding is unambiguous
        outer.update(f"{relative}\0{hash_file(full)}\n".encode())
    return _b64(outer.digest())
