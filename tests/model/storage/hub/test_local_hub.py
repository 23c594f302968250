from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from model.hashing import hash_directory
from model.storage.hub.local_hub import LocalHub
from utilities.errors import HubError, RepoNotFoundError, UnsafePathError


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


def test_upload_refuses_links_and_special_files(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"linked")
    hub = LocalHub(tmp_path / "hub", user="alice")
    hub.create_repo("alice/ft", private=False)
    planted: dict[str, Callable[[Path], None]] = {
        "file link": lambda src: os.symlink(blob, src / "linked.safetensors"),
        "link to /etc/passwd": lambda src: os.symlink("/etc/passwd", src / "tokenizer.json"),
        "link to /dev/zero": lambda src: os.symlink("/dev/zero", src / "model-2.safetensors"),
        "folder link": lambda src: os.symlink(tmp_path, src / "linked_dir"),
        "fifo": lambda src: os.mkfifo(src / "pipe.safetensors"),
    }
    for index, (what, plant) in enumerate(planted.items()):
        source = make_model(tmp_path / f"src{index}")
        plant(source)
        with pytest.raises(UnsafePathError, match=r"symbolic link|special file"):
            hub.upload_folder("alice/ft", source)
        assert json.loads((tmp_path / "hub" / "alice" / "ft" / "repo.json").read_text())["commits"] == [], (
            what
        )
    assert [p.name for p in (tmp_path / "hub" / "alice" / "ft").iterdir()] == ["repo.json"]  # no staging left


def test_serving_never_follows_links(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path / "hub", user="alice")
    hub.create_repo("alice/ft", private=False)
    commit = hub.upload_folder("alice/ft", make_model(tmp_path / "src"))
    commit_dir = tmp_path / "hub" / "alice" / "ft" / commit
    os.symlink("/dev/zero", commit_dir / "model-2.safetensors")  # planted behind the hub's back
    validator = LocalHub(tmp_path / "hub")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        validator.repo_info("alice/ft", commit=commit)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        validator.download("alice/ft", commit=commit, dest=tmp_path / "dl")
    (commit_dir / "model-2.safetensors").unlink()
    os.symlink("/etc/passwd", commit_dir / "tokenizer.json")
    with pytest.raises(UnsafePathError):
        validator.download(
            "alice/ft", commit=commit, dest=tmp_path / "dl2", allow_patterns=["tokenizer.json"]
        )
    assert not (tmp_path / "dl2" / "tokenizer.json").exists()


def test_a_namespace_belongs_to_the_wallet_that_created_it(tmp_path: Path) -> None:
    owner = LocalHub(tmp_path / "hub", user="miner0", owner="5ColdkeyOfMiner0")
    owner.create_repo("miner0/tiny", private=False)
    first = owner.upload_folder("miner0/tiny", make_model(tmp_path / "src"))
    owner.make_private("miner0/tiny")
    impostor = LocalHub(tmp_path / "hub", user="miner0", owner="5ColdkeyOfMiner9")
    with pytest.raises(HubError, match="belongs to another wallet"):
        impostor.check_write_access("miner0/tiny")
    for write in (
        lambda: impostor.create_repo("miner0/other"),
        lambda: impostor.upload_folder("miner0/tiny", make_model(tmp_path / "evil")),
        lambda: impostor.make_public("miner0/tiny"),
        lambda: impostor.make_private("miner0/tiny"),
    ):
        with pytest.raises(HubError, match="belongs to another wallet"):
            write()
    with pytest.raises(RepoNotFoundError):  # nor can it read the owner's private upload
        impostor.repo_info("miner0/tiny", commit=first)
    assert impostor.is_private("miner0/tiny") is None
    assert owner.is_private("miner0/tiny") is True and owner.check_write_access("miner0/tiny") == "miner0"
    assert not (tmp_path / "hub" / "miner0" / "other").exists()
    assert json.loads((tmp_path / "hub" / "miner0" / "tiny" / "repo.json").read_text())["commits"] == [first]
    other = LocalHub(tmp_path / "hub", user="miner9", owner="5ColdkeyOfMiner9")
    other.create_repo("miner9/tiny")  # its own namespace is free
    assert other.is_private("miner9/tiny") is True


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
