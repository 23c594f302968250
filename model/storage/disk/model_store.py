"""The validator's model store: ``<root>/<hotkey>/<namespace>/<name>/<commit>/``, one folder per
hotkey and commit, real files only.

Every path is built from validated parts (``ModelId`` accepts only plain names; hotkeys are checked
here) and resolved with :func:`utilities.files.safe_join`, so no file of a miner lands outside its
folder; :meth:`DiskModelStore.check` verifies a downloaded folder holds no escaping symlink.

Downloads land first in temporary folders ``<root>/.download-*`` (never a hotkey name: leading dot),
made by :meth:`DiskModelStore.new_temp_dir` and removed by the updater. They are not models: the
:meth:`DiskModelStore.size` that disk budgets use counts model folders only, so a stray or still-running
download never makes the cleaner evict a model.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path

from model.data import ModelId
from utilities.errors import ModelStoreError
from utilities.files import check_contained, safe_join

_HOTKEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
TEMP_PREFIX = ".download-"
"""Temporary download folders: inside the store root (same filesystem: moved into place by rename)."""


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for filename in filenames:
            entry = Path(dirpath, filename)
            try:
                if not entry.is_symlink():
                    total += entry.stat().st_size
            except FileNotFoundError:
                continue  # deleted while we walked
    return total


def manifest(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """``(relative path, size, mtime_ns)`` of every file under ``folder``, sorted (symlinks not followed):
    enough to notice a deleted, truncated or rewritten file without reading any."""
    entries = []
    for dirpath, _, filenames in os.walk(folder):
        for filename in filenames:
            info = os.lstat(os.path.join(dirpath, filename))
            relative = Path(dirpath, filename).relative_to(folder).as_posix()
            entries.append((relative, info.st_size, info.st_mtime_ns))
    return tuple(sorted(entries))


class DiskModelStore:
    """Folders of downloaded models, one per hotkey and commit."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.wanted_bytes = 0
        """Room a download deferred for lack of space needs (set by the updater each pass, 0 if none):
        the cleaner evicts to ``max_bytes - wanted_bytes`` so the store can take it."""

    def hotkey_dir(self, hotkey: str) -> Path:
        if not _HOTKEY.fullmatch(hotkey):
            raise ModelStoreError(f"hotkey {hotkey!r} is not a valid folder name")
        return safe_join(self.root, hotkey)

    def model_dir(self, hotkey: str, model_id: ModelId) -> Path:
        """The folder for ``model_id`` of ``hotkey`` (not created)."""
        if model_id.commit is None:
            raise ModelStoreError(f"model {model_id.repo_id} of {hotkey} names no commit")
        return safe_join(self.hotkey_dir(hotkey), f"{model_id.namespace}/{model_id.name}/{model_id.commit}")

    def check(self, hotkey: str, model_id: ModelId) -> Path:
        """The model's folder, after verifying it exists and nothing in it links outside it."""
        folder = self.model_dir(hotkey, model_id)
        if not folder.is_dir():
            raise ModelStoreError(f"model {model_id.repo_id}@{model_id.commit} of {hotkey} is not on disk")
        check_contained(folder)
        return folder

    def hotkeys(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _HOTKEY.fullmatch(p.name))

    def model_dirs(self, hotkey: str) -> list[Path]:
        """Every commit folder stored for ``hotkey``."""
        base = self.hotkey_dir(hotkey)
        return sorted(p for p in base.glob("*/*/*") if p.is_dir()) if base.is_dir() else []

    def size(self, hotkey: str | None = None) -> int:
        """Bytes of the models stored for ``hotkey``, or for every hotkey (temporary download folders
        and anything else that is not a hotkey's folder are not counted)."""
        hotkeys = self.hotkeys() if hotkey is None else [hotkey]
        return sum(folder_bytes(self.hotkey_dir(h)) for h in hotkeys)

    def new_temp_dir(self) -> Path:
        """A fresh, empty temporary download folder inside the store root."""
        return Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.root))

    def temp_dirs(self) -> list[Path]:
        return sorted(p for p in self.root.glob(f"{TEMP_PREFIX}*") if p.is_dir())

    def delete_temp_dirs(
        self, *, keep: Collection[Path] = (), grace_s: float = 0.0, now: float | None = None
    ) -> list[Path]:
        """Delete the temporary download folders not in ``keep`` and last modified more than ``grace_s``
        ago; returns the deleted folders."""
        now = time.time() if now is None else now
        deleted = []
        for folder in self.temp_dirs():
            try:
                if folder in keep or now - folder.stat().st_mtime < grace_s:
                    continue
            except FileNotFoundError:
                continue  # removed meanwhile
            shutil.rmtree(folder, ignore_errors=True)
            deleted.append(folder)
        return deleted

    def delete(self, hotkey: str) -> None:
        shutil.rmtree(self.hotkey_dir(hotkey), ignore_errors=True)

    def delete_unreferenced(
        self, referenced: Mapping[str, ModelId], *, grace_s: float = 0.0, now: float | None = None
    ) -> list[Path]:
        """Delete every model folder that is not ``referenced[hotkey]`` and was last modified more
        than ``grace_s`` ago; returns the deleted folders."""
        now = time.time() if now is None else now
        keep = {self.model_dir(h, m).resolve() for h, m in referenced.items() if m.commit is not None}
        deleted = []
        for hotkey in self.hotkeys():
            for folder in self.model_dirs(hotkey):
                if folder.resolve() in keep or now - folder.stat().st_mtime < grace_s:
                    continue
                shutil.rmtree(folder, ignore_errors=True)
                deleted.append(folder)
            base = self.hotkey_dir(hotkey)
            for empty in sorted(base.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                if empty != base and not any(empty.iterdir()):
                    empty.rmdir()
            if not any(base.iterdir()):
                base.rmdir()
        return deleted
