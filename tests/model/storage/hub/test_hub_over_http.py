"""HuggingFaceHub with the real huggingface_hub over real HTTP (the loopback hub of tests/fakes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model.hashing import hash_directory
from model.model_files import MODEL_FILE_PATTERNS
from model.storage.hub.hugging_face import HuggingFaceHub
from tests.fakes import hub_server
from tests.fakes.hub_server import OWNER_TOKEN, READ_TOKEN, HubServer
from utilities.errors import HubError, RepoNotFoundError

loopback_hub = hub_server.loopback_hub  # the fixture: a loopback Hub over real HTTP

REPO = "miner/tiny"


@pytest.fixture
def server(loopback_hub: HubServer) -> HubServer:
    return loopback_hub


def make_hub(server: HubServer, token: str | None = OWNER_TOKEN, **options: float) -> HuggingFaceHub:
    return HuggingFaceHub(endpoint=server.endpoint, token=token, retry_wait_s=0.01, **options)  # type: ignore[arg-type]


def model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (path / "tokenizer.json").write_text('{"version": "1.0"}')
    return path


def model_set(folder: Path, dest: Path) -> Path:
    """The model files of ``folder`` alone (what validators hash)."""
    dest.mkdir()
    for entry in folder.iterdir():
        if any(entry.match(p) for p in MODEL_FILE_PATTERNS):
            shutil.copyfile(entry, dest / entry.name)
    return dest


def uploaded(server: HubServer, tmp_path: Path, *, private: bool = False) -> tuple[HuggingFaceHub, str]:
    hub = make_hub(server)
    hub.create_repo(REPO, private=private)
    folder = model_folder(tmp_path / "src")
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# tiny")
    return hub, hub.upload_folder(REPO, folder)


def test_upload_info_download_round_trip(server: HubServer, tmp_path: Path) -> None:
    hub, commit = uploaded(server, tmp_path, private=True)
    info = hub.repo_info(REPO, commit=commit)
    assert info.private is True and hub.is_private(REPO) is True
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "src").iterdir()}
    gitattributes = len(server.repos[REPO].commits[0][1][".gitattributes"])  # the hub's own, kept
    assert {f.path: f.size for f in info.files} == {".gitattributes": gitattributes, **sizes}
    dest = hub.download(REPO, commit=commit, dest=tmp_path / "dl", allow_patterns=MODEL_FILE_PATTERNS)
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert hash_directory(dest) == hash_directory(model_set(tmp_path / "src", tmp_path / "expected"))
    with pytest.raises(RepoNotFoundError):  # private: a validator without the token sees nothing
        make_hub(server, token=None).repo_info(REPO, commit=commit)
    hub.make_public(REPO)
    other = make_hub(server, token=None).download(REPO, commit=commit, dest=tmp_path / "v")
    assert (other / "model.safetensors").read_bytes() == (tmp_path / "src" / "model.safetensors").read_bytes()


def test_a_500_on_the_listing_is_retried(server: HubServer, tmp_path: Path) -> None:
    hub, commit = uploaded(server, tmp_path)
    server.faults = [("tree", 500)]
    dest = hub.download(REPO, commit=commit, dest=tmp_path / "dl", allow_patterns=MODEL_FILE_PATTERNS)
    assert hash_directory(dest) == hash_directory(model_set(tmp_path / "src", tmp_path / "expected"))
    trees = [path for method, path in server.requests if path.endswith(f"/tree/{commit}")]
    assert len(trees) == 2 and server.faults == []


def test_a_connection_dropped_mid_file_is_retried(server: HubServer, tmp_path: Path) -> None:
    hub, commit = uploaded(server, tmp_path)
    server.faults = [("file", "drop")]
    dest = hub.download(REPO, commit=commit, dest=tmp_path / "dl", allow_patterns=MODEL_FILE_PATTERNS)
    assert server.faults == []  # the cut-off response was served
    assert hash_directory(dest) == hash_directory(model_set(tmp_path / "src", tmp_path / "expected"))
    assert not (dest / ".cache").exists()


def test_missing_private_and_gated_repos_are_repo_not_found(server: HubServer, tmp_path: Path) -> None:
    _, commit = uploaded(server, tmp_path)
    anonymous = make_hub(server, token=None)
    with pytest.raises(RepoNotFoundError):
        anonymous.repo_info("miner/absent", commit=commit)
    with pytest.raises(RepoNotFoundError):
        anonymous.download("miner/absent", commit=commit, dest=tmp_path / "a")
    with pytest.raises(RepoNotFoundError):
        anonymous.repo_info(REPO, commit="0" * 40)  # an unknown commit
    assert anonymous.is_private("miner/absent") is None
    server.repos[REPO].private = True
    before = len(server.requests)
    with pytest.raises(RepoNotFoundError):
        anonymous.download(REPO, commit=commit, dest=tmp_path / "b")
    assert len(server.requests) == before + 1  # not retried
    server.repos[REPO].private, server.repos[REPO].gated = False, True
    with pytest.raises(RepoNotFoundError):
        anonymous.download(REPO, commit=commit, dest=tmp_path / "c")


def test_write_access_is_checked_with_whoami(server: HubServer) -> None:
    assert make_hub(server).check_write_access(REPO) == "miner"
    assert make_hub(server).check_write_access("lab/model") == "miner"
    with pytest.raises(HubError, match="read-only"):
        make_hub(server, token=READ_TOKEN).check_write_access(REPO)
    with pytest.raises(HubError, match="neither the user"):
        make_hub(server).check_write_access("someone/model")
    with pytest.raises(HubError, match="whoami"):
        make_hub(server, token="hf_revoked").check_write_access(REPO)
