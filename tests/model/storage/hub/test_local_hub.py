from __future__ import annotations

import os
from pathlib import Path

import pytest

from model.hashing import hash_directory
from model.storage.hub.local_hub import LocalHub
from utilities.errors import HubError, RepoNotFoundError


def make_model(folder: Path, weights: bytes = b"w" * 100) -> Path:
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "tokenizer.json").write_text("{}")
    return folder


def test_upload_info_download_round_trip(tmp_path: Path) -> None:
    source = make_model(tmp_path / "src")
    miner = LocalHub(tmp_path / "hub", user="alice")
    miner.create_repo("alice/ft")
    commit = miner.upload_folder("alice/ft", source)
    assert len(commit) == 40 and int(commit, 16) >= 0
    info = miner.repo_info("alice/ft", commit=commit)
    assert info.private is True
    assert {f.path: f.size for f in info.files} == {
        "config.json": 8,
        "model.safetensors": 100,
        "sub/tokenizer.json": 2,
    }
    assert info.total_size == 110
    dest = miner.download("alice/ft", commit=commit, dest=tmp_path / "dl")
    assert hash_directory(dest) == hash_directory(source)


def test_private_until_public(tmp_path: Path) -> None:
    miner = LocalHub(tmp_path / "hub", user="alice")
    miner.create_repo("alice/ft")
    commit = miner.upload_folder("alice/ft", make_model(tmp_path / "src"))
    validator = LocalHub(tmp_path / "hub")
    with pytest.raises(RepoNotFoundError):
        validator.repo_info("alice/ft", commit=commit)
    miner.make_public("alice/ft")
    assert validator.repo_info("alice/ft", commit=commit).private is False


def test_commits_are_immutable(tmp_path: Path) -> None:
    source = make_model(tmp_path / "src")
    hub = LocalHub(tmp_path / "hub", user="alice")
    hub.create_repo("alice/ft", private=False)
    first = hub.upload_folder("alice/ft", source)
    first_hash = hash_directory(hub.download("alice/ft", commit=first, dest=tmp_path / "d1"))
    make_model(source, weights=b"v" * 100)
    second = hub.upload_folder("alice/ft", source)
    assert second != first
    assert hash_directory(hub.download("alice/ft", commit=first, dest=tmp_path / "d2")) == first_hash
    assert hash_directory(hub.download("alice/ft", commit=second, dest=tmp_path / "d3")) != first_hash


def test_errors(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path / "hub", user="alice")
    with pytest.raises(RepoNotFoundError):
        hub.repo_info("alice/none", commit="abc")
    hub.create_repo("alice/ft", private=False)
    with pytest.raises(RepoNotFoundError, match="commit"):
        hub.repo_info("alice/ft", commit="0" * 40)
    with pytest.raises(HubError, match="may not write"):
        hub.create_repo("bob/ft")
    with pytest.raises(HubError, match="may not write"):
        LocalHub(tmp_path / "hub").upload_folder("alice/ft", tmp_path)
    commit = hub.upload_folder("alice/ft", make_model(tmp_path / "src"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "stale").write_text("old")
    with pytest.raises(HubError, match="not empty"):
        hub.download("alice/ft", commit=commit, dest=tmp_path / "full")
    for bad in ("alice", "alice/ft/x", "../x", "alice/..", "a/"):
        with pytest.raises(HubError):
            hub.create_repo(bad)


def test_upload_copies_link_targets_as_real_files(tmp_path: Path) -> None:
    source = make_model(tmp_path / "src")
    blob = tmp_path / "blob"
    blob.write_bytes(b"linked")
    os.symlink(blob, source / "linked.safetensors")
    hub = LocalHub(tmp_path / "hub", user="alice")
    hub.create_repo("alice/ft", private=False)
    commit = hub.upload_folder("alice/ft", source)
    dest = LocalHub(tmp_path / "hub").download("alice/ft", commit=commit, dest=tmp_path / "dl")
    assert not (dest / "linked.safetensors").is_symlink()
    assert (dest / "linked.safetensors").read_bytes() == b"linked"


def test_download_with_allow_patterns_fetches_only_matching_top_level_files(tmp_path: Path) -> None:
    from model.model_files import MODEL_FILE_PATTERNS, is_model_file

    hub = LocalHub(tmp_path / "hub", user="alice")
    folder = tmp_path / "m"
    (folder / "sub").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "README.md", ".gitattributes", "training_args.bin"):
        (folder / name).write_bytes(name.encode())
    (folder / "sub" / "config.json").write_text("{}")
    hub.create_repo("alice/ft")
    commit = hub.upload_folder("alice/ft", folder)
    dest = hub.download("alice/ft", commit=commit, dest=tmp_path / "dl", allow_patterns=MODEL_FILE_PATTERNS)
    assert sorted(p.name for p in dest.rglob("*")) == ["config.json", "model.safetensors"]
    assert is_model_file("tokenizer.json") and not is_model_file("sub/config.json")
