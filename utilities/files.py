"""File helpers: atomic writes, and keeping untrusted files inside their folder."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from utilities.errors import UnsafePathError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash, even kill -9) sees the old file or the
    new one, never a mix: write a temporary file in the same folder, fsync, rename over."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> None:
    """``atomic_write_bytes`` of ``value`` as indented, key-sorted JSON."""
    atomic_write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))


def safe_join(base: str | os.PathLike[str], relative: str) -> Path:
    """``base / relative``, refusing any path that would resolve outside ``base`` (``..``, absolute
    paths, symlinks leading out)."""
    root = Path(base).resolve()
    candidate = (root / relative).resolve()
    if relative.startswith(("/", "\\")) or not candidate.is_relative_to(root):
        raise UnsafePathError(f"path {relative!r} escapes {root}")
    return candidate


def check_contained(folder: str | os.PathLike[str]) -> None:
    """Raise :class:`UnsafePathError` if any entry under ``folder`` is a symlink that resolves
    outside it (or cannot be resolved)."""
    root = Path(folder).resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            entry = Path(dirpath) / name
            if not entry.is_symlink():
                continue
            try:
                target = entry.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                raise UnsafePathError(f"{entry} is a broken or looping symlink") from exc
            if not target.is_relative_to(root):
                raise UnsafePathError(f"{entry} links outside {root} (to {target})")
