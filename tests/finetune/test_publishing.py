from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetune.publishing import Publisher
from model.data import ModelId
from model.hashing import hash_directory, hash_with_hotkey
from model.storage.chain.local_chain import LocalChain
from model.storage.hub.local_hub import LocalHub
from utilities.errors import ChainError, CommitmentError, ConfigError, HubError, RepoNotFoundError

HOTKEY = "5MinerHotkey"


@pytest.fixture
def chain(tmp_path: Path) -> LocalChain:
    admin = LocalChain(tmp_path / "chain.sqlite")
    admin.register(HOTKEY)
    return LocalChain(tmp_path / "chain.sqlite", hotkey=HOTKEY)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights" * 10)
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    return model


class Flaky:
    """Wraps a port; the named method fails ``failures`` times with ``error`` before working."""

    def __init__(self, inner: Any, method: str, failures: int, error: Exception) -> None:
        self.inner, self.method, self.failures, self.error = inner, method, failures, error
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name != self.method:
            return attribute

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls <= self.failures:
                raise self.error
            return attribute(*args, **kwargs)

        return wrapped


def test_publish_commits_the_hash_of_what_the_hub_serves(
    tmp_path: Path, chain: LocalChain, folder: Path
) -> None:
    hub = LocalHub(tmp_path / "hub", user="alice")
    model_id = Publisher(chain=chain, hub=hub, hotkey=HOTKEY).publish(
        folder, repo_id="alice/tiny", competition_id="local"
    )
    commitment = chain.commitment(HOTKEY)
    assert commitment is not None
    assert ModelId.from_compressed_str(commitment.data) == model_id
    assert model_id.commit is not None
    # the validator's view: public, and its download hashes to the committed hash
    served = LocalHub(tmp_path / "hub").download("alice/tiny", commit=model_id.commit, dest=tmp_path / "v")
    assert hash_directory(served) == model_id.hash
    assert (folder / "model.safetensors").exists()  # the miner keeps its model


def test_a_second_publication_is_private_until_committed(
    tmp_path: Path, chain: LocalChain, folder: Path
) -> None:
    hub = LocalHub(tmp_path / "hub", user="alice")
    first = Publisher(chain=chain, hub=hub, hotkey=HOTKEY).publish(
        folder, repo_id="alice/tiny", competition_id="local"
    )
    validator = LocalHub(tmp_path / "hub")
    assert first.commit is not None and not validator.repo_info("alice/tiny", commit=first.commit).private
    (folder / "model.safetensors").write_bytes(b"better weights")
    seen: list[bool] = []

    class Watching:
        """The chain, noting whether validators could see the repository when the commit happens."""

        def __getattr__(self, name: str) -> object:
            return getattr(chain, name)

        def commit(self, data: str) -> None:
            try:
                validator.repo_info("alice/tiny", commit=data.split(":")[2])
                seen.append(True)
            except RepoNotFoundError:
                seen.append(False)
            chain.commit(data)

    second = Publisher(chain=Watching(), hub=hub, hotkey=HOTKEY).publish(  # type: ignore[arg-type]
        folder, repo_id="alice/tiny", competition_id="local"
    )
    assert seen == [False]  # hidden while uploading and until the commitment was on chain
    assert second.commit is not None and not validator.repo_info("alice/tiny", commit=second.commit).private


def test_publish_with_hotkey_salted_hash(tmp_path: Path, chain: LocalChain, folder: Path) -> None:
    hub = LocalHub(tmp_path / "hub", user="alice")
    model_id = Publisher(chain=chain, hub=hub, hotkey=HOTKEY).publish(
        folder, repo_id="alice/tiny", competition_id="local", use_hotkey_in_hash=True
    )
    assert model_id.hash == hash_with_hotkey(hash_directory(folder), HOTKEY)


def test_a_name_too_long_for_the_chain_is_refused_before_upload(
    tmp_path: Path, chain: LocalChain, folder: Path
) -> None:
    hub = LocalHub(tmp_path / "hub", user="a" * 20)
    with pytest.raises(ConfigError, match="38 characters"):
        Publisher(chain=chain, hub=hub, hotkey=HOTKEY).publish(
            folder, repo_id="a" * 20 + "/" + "b" * 19, competition_id="l3"
        )
    assert not (tmp_path / "hub" / ("a" * 20)).exists()
    with pytest.raises(ConfigError, match="invalid repository id"):
        Publisher(chain=chain, hub=hub, hotkey=HOTKEY).check_fits("no-namespace", "l3")


def test_transient_hub_failures_are_retried(tmp_path: Path, chain: LocalChain, folder: Path) -> None:
    hub = Flaky(LocalHub(tmp_path / "hub", user="alice"), "upload_folder", 2, HubError("503 from hub"))
    Publisher(chain=chain, hub=hub, hotkey=HOTKEY, attempts=3, wait_s=0.001).publish(
        folder, repo_id="alice/tiny", competition_id="local"
    )
    assert hub.calls == 3
    assert chain.commitment(HOTKEY) is not None


def test_chain_down_keeps_the_repo_private_and_a_later_publish_works(
    tmp_path: Path, chain: LocalChain, folder: Path
) -> None:
    real_hub = LocalHub(tmp_path / "hub", user="alice")
    down = Flaky(chain, "commit", 100, ChainError("no answer within 60 s"))
    with pytest.raises(ChainError):
        Publisher(chain=down, hub=real_hub, hotkey=HOTKEY, attempts=2, wait_s=0.001).publish(
            folder, repo_id="alice/tiny", competition_id="local"
        )
    assert down.calls == 2
    assert chain.commitment(HOTKEY) is None
    with pytest.raises(RepoNotFoundError):  # still private: nobody could copy it
        commit = (tmp_path / "hub" / "alice" / "tiny").iterdir()
        LocalHub(tmp_path / "hub").repo_info("alice/tiny", commit=next(p.name for p in commit if p.is_dir()))
    model_id = Publisher(chain=chain, hub=real_hub, hotkey=HOTKEY).publish(
        folder, repo_id="alice/tiny", competition_id="local"
    )
    assert chain.commitment(HOTKEY).data == model_id.to_compressed_str()  # type: ignore[union-attr]


def test_commitment_rules_are_not_retried(tmp_path: Path, folder: Path) -> None:
    LocalChain(tmp_path / "chain.sqlite").register(HOTKEY)
    limited = LocalChain(tmp_path / "chain.sqlite", hotkey=HOTKEY, commit_interval_blocks=100)
    limited.commit("first:commit:None:None:local")
    counting = Flaky(limited, "commit", 0, CommitmentError("unused"))
    with pytest.raises(CommitmentError, match="allowed at block"):
        Publisher(chain=counting, hub=LocalHub(tmp_path / "hub", user="alice"), hotkey=HOTKEY).publish(
            folder, repo_id="alice/tiny", competition_id="local"
        )
    assert counting.calls == 1
