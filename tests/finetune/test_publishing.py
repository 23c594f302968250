from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from finetune.publishing import Publisher
from model.data import ModelId
from model.hashing import hash_directory, hash_with_hotkey
from model.model_files import MODEL_FILE_PATTERNS
from model.storage.chain.local_chain import LocalChain
from model.storage.hub.hugging_face import HuggingFaceHub
from model.storage.hub.local_hub import LocalHub
from model.storage.hub.protocol import TransferTimeoutError
from tests.fakes import hub_server
from tests.fakes.hub_server import OWNER_TOKEN, READ_TOKEN, HubServer
from utilities.errors import ChainError, CommitmentError, ConfigError, HubError, RepoNotFoundError

loopback_hub = hub_server.loopback_hub  # the fixture: a loopback Hub over real HTTP

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


def test_retries_wait_through_the_injected_sleep_and_refusals_are_not_retried(
    tmp_path: Path, chain: LocalChain, folder: Path
) -> None:
    """Issue 17.4: the one retry helper, its waits recorded (nothing sleeps); a rule refusal and a
    transfer past its backstop are raised at the first attempt."""
    waits: list[float] = []
    hub = Flaky(LocalHub(tmp_path / "hub", user="alice"), "upload_folder", 2, HubError("503 from hub"))
    Publisher(chain=chain, hub=hub, hotkey=HOTKEY, attempts=3, wait_s=5.0, sleep=waits.append).publish(
        folder, repo_id="alice/tiny", competition_id="local"
    )
    assert hub.calls == 3 and waits == [5.0, 10.0]
    for error in (CommitmentError("rate limited"), TransferTimeoutError("past its 600 s backstop")):
        waits.clear()
        refused = Flaky(chain, "commit", 5, error)
        with pytest.raises(type(error)):
            Publisher(chain=refused, hub=hub, hotkey=HOTKEY, attempts=3, sleep=waits.append).publish(
                folder, repo_id="alice/tiny", competition_id="local"
            )
        assert refused.calls == 1 and waits == []


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
    hub = LocalHub(tmp_path / "hub", user="alice")
    with pytest.raises(CommitmentError, match="allowed at block"):  # no quota check: the chain refuses
        Publisher(chain=counting, hub=hub, hotkey=HOTKEY, commit_interval_blocks=0).publish(
            folder, repo_id="alice/tiny", competition_id="local"
        )
    assert counting.calls == 1


def published_commits(root: Path, repo_id: str) -> list[str]:
    meta = json.loads((root / "hub" / repo_id / "repo.json").read_text())
    return list(meta["commits"])


def test_the_quota_is_checked_before_the_repository_is_hidden(tmp_path: Path, folder: Path) -> None:
    LocalChain(tmp_path / "chain.sqlite").register(HOTKEY)
    limited = LocalChain(tmp_path / "chain.sqlite", hotkey=HOTKEY, commit_interval_blocks=100)
    hub = LocalHub(tmp_path / "hub", user="alice")
    first = Publisher(chain=limited, hub=hub, hotkey=HOTKEY).publish(
        folder, repo_id="alice/tiny", competition_id="local"
    )
    with pytest.raises(CommitmentError, match="next commitment at block 100"):
        Publisher(chain=limited, hub=hub, hotkey=HOTKEY, wait_s=0.001).publish(
            folder, repo_id="alice/tiny", competition_id="local"
        )
    assert published_commits(tmp_path, "alice/tiny") == [first.commit]  # nothing uploaded
    assert first.commit is not None
    assert LocalHub(tmp_path / "hub").repo_info("alice/tiny", commit=first.commit).private is False


class FailingDownload:
    """A hub whose downloads write part of the files, then fail (as a dropped connection leaves them)."""

    def __init__(self, inner: LocalHub, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def download(self, repo_id: str, *, commit: str, dest: Path, **kwargs: Any) -> Path:
        self.calls += 1
        if self.calls <= self.failures:
            dest.mkdir(parents=True, exist_ok=True)
            (dest / "config.json").write_text("{")  # half a file
            raise HubError("connection dropped mid-file")
        return self.inner.download(repo_id, commit=commit, dest=dest, **kwargs)


def test_a_download_retry_gets_a_fresh_folder(tmp_path: Path, chain: LocalChain, folder: Path) -> None:
    hub = FailingDownload(LocalHub(tmp_path / "hub", user="alice"), failures=2)
    model_id = Publisher(chain=chain, hub=hub, hotkey=HOTKEY, attempts=3, wait_s=0.001).publish(  # type: ignore[arg-type]
        folder, repo_id="alice/tiny", competition_id="local"
    )
    assert hub.calls == 3 and model_id.hash == hash_directory(folder)


def test_only_the_model_file_set_is_hashed(tmp_path: Path, chain: LocalChain, folder: Path) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(folder, reference)
    (folder / "README.md").write_text("# my model")
    (folder / "training_args.bin").write_bytes(b"pickle")
    model_id = Publisher(chain=chain, hub=LocalHub(tmp_path / "hub", user="alice"), hotkey=HOTKEY).publish(
        folder, repo_id="alice/tiny", competition_id="local"
    )
    assert model_id.hash == hash_directory(reference)  # what the validator downloads and hashes


class LostReply:
    """A hub whose ``make_private`` is applied but answers with an error (a reply lost on the way)."""

    def __init__(self, inner: LocalHub) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def make_private(self, repo_id: str) -> None:
        self.inner.make_private(repo_id)
        raise HubError("502 Bad Gateway")


def test_a_make_private_that_failed_after_applying_is_undone(
    tmp_path: Path, chain: LocalChain, folder: Path
) -> None:
    hub = LocalHub(tmp_path / "hub", user="alice")
    first = Publisher(chain=chain, hub=hub, hotkey=HOTKEY).publish(
        folder, repo_id="alice/tiny", competition_id="local"
    )
    with pytest.raises(HubError, match="502"):
        Publisher(chain=chain, hub=LostReply(hub), hotkey=HOTKEY, attempts=2, wait_s=0.001).publish(  # type: ignore[arg-type]
            folder, repo_id="alice/tiny", competition_id="local"
        )
    assert first.commit is not None
    assert LocalHub(tmp_path / "hub").repo_info("alice/tiny", commit=first.commit).private is False


@pytest.mark.parametrize("step", ["upload_folder", "download", "commit"])
def test_a_failed_republication_leaves_the_model_on_chain_public(
    tmp_path: Path, chain: LocalChain, folder: Path, step: str
) -> None:
    hub = LocalHub(tmp_path / "hub", user="alice")
    first = Publisher(chain=chain, hub=hub, hotkey=HOTKEY).publish(
        folder, repo_id="alice/tiny", competition_id="local"
    )
    (folder / "model.safetensors").write_bytes(b"better weights")
    broken_hub: Any = Flaky(hub, step, 100, HubError("hub down")) if step != "commit" else hub
    broken_chain: Any = Flaky(chain, "commit", 100, ChainError("chain down")) if step == "commit" else chain
    with pytest.raises((HubError, ChainError)):
        Publisher(chain=broken_chain, hub=broken_hub, hotkey=HOTKEY, attempts=2, wait_s=0.001).publish(
            folder, repo_id="alice/tiny", competition_id="local"
        )
    assert chain.commitment(HOTKEY).data == first.to_compressed_str()  # type: ignore[union-attr]
    assert first.commit is not None
    served = LocalHub(tmp_path / "hub").download("alice/tiny", commit=first.commit, dest=tmp_path / "v")
    assert hash_directory(served) == first.hash  # validators can still fetch the model on chain


def test_a_commit_that_landed_although_the_call_failed_is_published(
    tmp_path: Path, chain: LocalChain, folder: Path
) -> None:
    class LostAnswer:
        def __getattr__(self, name: str) -> Any:
            return getattr(chain, name)

        def commit(self, data: str) -> None:
            chain.commit(data)
            raise ChainError("no answer within 60 s")  # included, but the reply was lost

    hub = LocalHub(tmp_path / "hub", user="alice")
    model_id = Publisher(chain=LostAnswer(), hub=hub, hotkey=HOTKEY, attempts=1).publish(  # type: ignore[arg-type]
        folder, repo_id="alice/tiny", competition_id="local"
    )
    assert chain.commitment(HOTKEY).data == model_id.to_compressed_str()  # type: ignore[union-attr]
    assert model_id.commit is not None
    assert LocalHub(tmp_path / "hub").repo_info("alice/tiny", commit=model_id.commit).private is False


def test_only_make_public_failing_records_the_model_and_retries_only_that(
    tmp_path: Path, chain: LocalChain, folder: Path
) -> None:
    hub = Flaky(LocalHub(tmp_path / "hub", user="alice"), "make_public", 2, HubError("503"))
    publisher = Publisher(chain=chain, hub=hub, hotkey=HOTKEY, attempts=2, wait_s=0.001)  # type: ignore[arg-type]
    model_id = publisher.publish(folder, repo_id="alice/tiny", competition_id="local")
    assert chain.commitment(HOTKEY).data == model_id.to_compressed_str()  # type: ignore[union-attr]
    assert publisher.pending_public == {"alice/tiny"}
    commits = published_commits(tmp_path, "alice/tiny")
    publisher.retry_pending()
    assert publisher.pending_public == frozenset() and published_commits(tmp_path, "alice/tiny") == commits
    assert model_id.commit is not None
    assert LocalHub(tmp_path / "hub").repo_info("alice/tiny", commit=model_id.commit).private is False


def test_check_access_at_start(tmp_path: Path, chain: LocalChain, folder: Path) -> None:
    hub = LocalHub(tmp_path / "hub", user="alice", owner="coldkey-alice")
    publisher = Publisher(chain=chain, hub=hub, hotkey=HOTKEY)
    model_id = publisher.publish(folder, repo_id="alice/tiny", competition_id="local")
    hub.make_private("alice/tiny")  # a crash between the commit and make_public
    Publisher(chain=chain, hub=hub, hotkey=HOTKEY).check_access("alice/tiny", "local")
    assert model_id.commit is not None
    assert LocalHub(tmp_path / "hub").repo_info("alice/tiny", commit=model_id.commit).private is False
    impostor = LocalHub(tmp_path / "hub", user="alice", owner="coldkey-mallory")
    with pytest.raises(ConfigError, match="belongs to another wallet"):
        Publisher(chain=chain, hub=impostor, hotkey=HOTKEY).check_access("alice/tiny", "local")
    with pytest.raises(ConfigError, match="may not write"):
        Publisher(chain=chain, hub=hub, hotkey=HOTKEY).check_access("bob/tiny", "local")


def http_hub(server: HubServer, token: str = OWNER_TOKEN) -> HuggingFaceHub:
    return HuggingFaceHub(endpoint=server.endpoint, token=token, retry_wait_s=0.01)


def test_publish_over_http_commits_the_hash_validators_compute(
    loopback_hub: HubServer, tmp_path: Path, chain: LocalChain, folder: Path
) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(folder, reference)
    (folder / "README.md").write_text("# tiny")
    publisher = Publisher(chain=chain, hub=http_hub(loopback_hub), hotkey=HOTKEY, wait_s=0.001)
    publisher.check_access("miner/tiny", "local")
    model_id = publisher.publish(folder, repo_id="miner/tiny", competition_id="local")
    assert model_id.hash == hash_directory(reference)
    assert loopback_hub.repos["miner/tiny"].private is False
    validator = HuggingFaceHub(endpoint=loopback_hub.endpoint, retry_wait_s=0.01)
    assert model_id.commit is not None
    served = validator.download(
        "miner/tiny", commit=model_id.commit, dest=tmp_path / "v", allow_patterns=MODEL_FILE_PATTERNS
    )
    assert hash_directory(served) == model_id.hash


def test_a_republication_refused_over_http_leaves_the_model_on_chain_public(
    loopback_hub: HubServer, tmp_path: Path, chain: LocalChain, folder: Path
) -> None:
    publisher = Publisher(chain=chain, hub=http_hub(loopback_hub), hotkey=HOTKEY, attempts=2, wait_s=0.001)
    first = publisher.publish(folder, repo_id="miner/tiny", competition_id="local")
    (folder / "model.safetensors").write_bytes(b"better weights")
    loopback_hub.faults = [("preupload", 403), ("preupload", 403)]
    with pytest.raises(HubError, match="403"):
        publisher.publish(folder, repo_id="miner/tiny", competition_id="local")
    assert loopback_hub.faults == [] and loopback_hub.repos["miner/tiny"].private is False
    assert first.commit is not None
    served = HuggingFaceHub(endpoint=loopback_hub.endpoint).download(
        "miner/tiny", commit=first.commit, dest=tmp_path / "v", allow_patterns=MODEL_FILE_PATTERNS
    )
    assert hash_directory(served) == first.hash


def test_a_read_only_token_is_refused_at_start(loopback_hub: HubServer, chain: LocalChain) -> None:
    publisher = Publisher(chain=chain, hub=http_hub(loopback_hub, READ_TOKEN), hotkey=HOTKEY)
    with pytest.raises(ConfigError, match="read-only"):
        publisher.check_access("miner/tiny", "local")


def test_on_the_local_network_a_wallet_cannot_publish_into_another_wallets_namespace(
    tmp_path: Path, folder: Path
) -> None:
    from finetune.miner_config import build_parser, hub_user
    from model.network import Network, connect

    def network(wallet: str, repo_id: str) -> tuple[Network, str]:
        args = build_parser().parse_args(
            ["--localnet", str(tmp_path / "net"), "--wallet.name", wallet, "--hf_repo_id", repo_id]
        )
        net = connect(args, hub_user=hub_user(args))
        assert net.wallet is not None
        hotkey = net.wallet.hotkey.ss58_address
        net.chain.register(hotkey)  # type: ignore[attr-defined]
        return net, hotkey

    net0, hotkey0 = network("miner0", "miner0/tiny")
    owner = Publisher(chain=net0.chain, hub=net0.hub, hotkey=hotkey0, wait_s=0.001)
    owner.check_access("miner0/tiny", "local")
    model_id = owner.publish(folder, repo_id="miner0/tiny", competition_id="local")
    net9, hotkey9 = network("miner9", "miner0/tiny")
    impostor = Publisher(chain=net9.chain, hub=net9.hub, hotkey=hotkey9, wait_s=0.001)
    with pytest.raises(ConfigError, match="belongs to another wallet"):  # at start, before any training
        impostor.check_access("miner0/tiny", "local")
    with pytest.raises(HubError, match="belongs to another wallet"):
        impostor.publish(folder, repo_id="miner0/tiny", competition_id="local")
    assert model_id.commit is not None  # miner0's model stayed public and unchanged
    assert (
        LocalHub(tmp_path / "net" / "hub").repo_info("miner0/tiny", commit=model_id.commit).private is False
    )
