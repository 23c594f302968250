from __future__ import annotations

import os
from pathlib import Path

import pytest

from model.data import ModelId
from model.storage.disk.model_store import TEMP_PREFIX, DiskModelStore
from utilities.errors import ModelStoreError, UnsafePathError


def mid(name: str, commit: str) -> ModelId:
    return ModelId(namespace="ns", name=name, commit=commit, hash="h", competition_id="local")


def put(store: DiskModelStore, hotkey: str, model_id: ModelId, size: int = 10) -> Path:
    folder = store.model_dir(hotkey, model_id)
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * size)
    return folder


def test_layout_and_sizes(tmp_path: Path) -> None:
    store = DiskModelStore(tmp_path)
    folder = put(store, "hk1", mid("a", "c1"), size=10)
    put(store, "hk2", mid("b", "c2"), size=32)
    assert folder == (tmp_path / "hk1" / "ns" / "a" / "c1").resolve()
    assert store.hotkeys() == ["hk1", "hk2"]
    assert store.size("hk1") == 10 and store.size() == 42
    assert store.check("hk1", mid("a", "c1")) == folder


def test_refuses_unsafe_names_and_links(tmp_path: Path) -> None:
    store = DiskModelStore(tmp_path / "store")
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ModelStoreError):
            store.hotkey_dir(bad)
    with pytest.raises(ModelStoreError, match="no commit"):
        store.model_dir("hk", ModelId(namespace="ns", name="n"))
    folder = put(store, "hk", mid("a", "c"))
    os.symlink(tmp_path, folder / "escape")
    with pytest.raises(UnsafePathError):
        store.check("hk", mid("a", "c"))
    with pytest.raises(ModelStoreError, match="not on disk"):
        store.check("hk", mid("a", "other"))


def test_delete_unreferenced_respects_grace(tmp_path: Path) -> None:
    store = DiskModelStore(tmp_path)
    keep = put(store, "hk1", mid("a", "new"))
    old = put(store, "hk1", mid("a", "old"))
    gone = put(store, "hk2", mid("b", "c"))
    now = os.stat(keep).st_mtime + 100
    assert store.delete_unreferenced({"hk1": mid("a", "new")}, grace_s=1000, now=now) == []
    deleted = store.delete_unreferenced({"hk1": mid("a", "new")}, grace_s=10, now=now)
    assert sorted(deleted) == sorted([old, gone])
    assert keep.is_dir() and not old.exists()
    assert store.hotkeys() == ["hk1"]


def test_temporary_download_folders(tmp_path: Path) -> None:
    store = DiskModelStore(tmp_path)
    put(store, "hk1", mid("a", "c1"), size=10)
    busy, old, young = store.new_temp_dir(), store.new_temp_dir(), store.new_temp_dir()
    for folder in (busy, old, young):
        assert folder.parent == store.root and folder.name.startswith(TEMP_PREFIX)
        (folder / "model.safetensors").write_bytes(b"x" * 100)
    assert store.temp_dirs() == sorted([busy, old, young]) and store.hotkeys() == ["hk1"]
    assert store.size() == 10  # models only
    now = os.stat(young).st_mtime + 50
    for folder in (busy, old):
        os.utime(folder, (now - 1000, now - 1000))
    assert store.delete_temp_dirs(keep={busy}, grace_s=100, now=now) == [old]
    assert store.temp_dirs() == sorted([busy, young])
    assert sorted(store.delete_temp_dirs()) == sorted([busy, young]) and store.temp_dirs() == []
    assert store.size() == 10
