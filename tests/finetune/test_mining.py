"""The miner on the local network: publishing, failures and retries, choosing the starting model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from constants.competitions import LOCAL
from finetune.data import SyntheticSource
from finetune.mining import Miner, PublishSettings, best_uid, fresh_model, start_model
from finetune.progress import MinerProgress
from finetune.publishing import Publisher
from finetune.tokenization import load_tokenizer
from finetune.training import EvalReport, TrainConfig
from model.data import ModelId
from model.hashing import hash_directory
from model.storage.chain.local_chain import LocalChain
from model.storage.hub.local_hub import LocalHub
from tests.finetune.zoo import build_nan_weights, build_valid, tiny_llama
from utilities.errors import ChainError, DataSourceError, HubError, ModelRejectedError

MINER = "5Miner"
CONFIG = TrainConfig(
    lr=3e-3, num_epochs=1, samples_per_epoch=32, micro_batch_size=8, accumulation_steps=1, eval_samples=16,
    sequence_length=96,
)  # fmt: skip


class Failing:
    """Wraps a port; ``method`` raises ``error`` the first ``failures`` times."""

    def __init__(self, inner: Any, method: str, failures: int, error: Exception) -> None:
        self.inner, self.method, self.failures, self.error = inner, method, failures, error

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name != self.method:
            return attribute

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.failures > 0:
                self.failures -= 1
                raise self.error
            return attribute(*args, **kwargs)

        return wrapped


def miner_chain(root: Path) -> LocalChain:
    LocalChain(root / "chain.sqlite").register(MINER)
    return LocalChain(root / "chain.sqlite", hotkey=MINER)


def make_miner(root: Path, chain: Any, hub: Any, *, epochs: int = 1) -> Miner:
    publisher = Publisher(chain=chain, hub=hub, hotkey=MINER, attempts=2, wait_s=0.0)
    return Miner(
        model=fresh_model(LOCAL, seed=0, dtype=torch.float32), tokenizer=load_tokenizer(LOCAL),
        train_source=SyntheticSource("train"), heldout_source=SyntheticSource("heldout"),
        config=replace(CONFIG, num_epochs=epochs), model_dir=root / "miner",
        publish=PublishSettings(publisher=publisher, repo_id="alice/tiny", competition_id="local"),
    )  # fmt: skip


def test_publishing_commits_the_hash_the_validator_sees(tmp_path: Path) -> None:
    chain = miner_chain(tmp_path)
    miner = make_miner(tmp_path, chain, LocalHub(tmp_path / "hub", user="alice"))
    result = miner.run()
    assert result.best_loss < result.initial_loss
    commitment = chain.commitment(MINER)
    assert commitment is not None
    model_id = ModelId.from_compressed_str(commitment.data)
    assert model_id.commit is not None and model_id.competition_id == "local"
    served = LocalHub(tmp_path / "hub").download("alice/tiny", commit=model_id.commit, dest=tmp_path / "v")
    assert hash_directory(served) == model_id.hash  # what a validator downloads is what was committed
    progress = MinerProgress.load(tmp_path / "miner" / "progress.json")
    assert progress.published_loss == result.best_loss and progress.published_model_id == commitment.data
    assert not progress.pending and progress.best_loss == result.best_loss and progress.epoch == 1


@pytest.mark.parametrize(
    ("port", "method", "error"),
    [("hub", "upload_folder", HubError("hub down")), ("chain", "commit", ChainError("down"))],
)
def test_a_failed_publication_is_kept_and_retried(
    tmp_path: Path, port: str, method: str, error: Exception
) -> None:
    chain: Any = miner_chain(tmp_path)
    hub: Any = LocalHub(tmp_path / "hub", user="alice")
    if port == "hub":
        hub = Failing(hub, method, failures=2, error=error)  # both attempts of the first epoch fail
    else:
        chain = Failing(chain, method, failures=2, error=error)
    first = make_miner(tmp_path, chain, hub)
    first.run()
    state = json.loads((tmp_path / "miner" / "progress.json").read_text())
    assert state["pending"] is True and state["published_model_id"] is None
    assert (tmp_path / "miner" / "model" / "model.safetensors").is_file()  # the model is kept
    assert LocalChain(tmp_path / "chain.sqlite").commitment(MINER) is None
    # a restarted miner resumes training and publishes the pending model at the end of its next epoch
    second = make_miner(tmp_path, chain, hub, epochs=2)
    result = second.run()
    assert result.start_step > 0 and len(second.published) == 1
    state = json.loads((tmp_path / "miner" / "progress.json").read_text())
    assert state["pending"] is False and state["published_model_id"] is not None
    assert LocalChain(tmp_path / "chain.sqlite").commitment(MINER) is not None


def test_a_data_source_outage_does_not_stop_the_miner(tmp_path: Path) -> None:
    train_source: Any = Failing(SyntheticSource("train"), "sample", failures=0, error=DataSourceError("503"))
    miner = make_miner(tmp_path, miner_chain(tmp_path), LocalHub(tmp_path / "hub", user="alice"), epochs=2)
    miner.train_source = train_source
    miner.config = replace(miner.config, data_retries=1, data_retry_wait_s=0.0)

    def outage(report: EvalReport) -> None:
        if report.epoch == 1:  # the source goes down after the first epoch, for longer than retried
            train_source.failures = 10
        original(report)

    original, miner.on_eval = miner.on_eval, outage  # type: ignore[method-assign]
    result = miner.run()
    assert result.epochs == 2 and result.steps == 8  # the second epoch reused the first one's samples
    assert train_source.failures == 8 and len(miner.published) == 2  # published after each epoch


def test_small_improvements_are_not_published(tmp_path: Path) -> None:
    miner = make_miner(tmp_path, miner_chain(tmp_path), LocalHub(tmp_path / "hub", user="alice"))
    miner.progress.published_loss = 1.0
    assert not miner.should_publish(0.995, baseline=7.0)  # 0.5% better, threshold 1%
    assert miner.should_publish(0.98, baseline=7.0)
    assert not miner.should_publish(float("inf"), baseline=7.0)


@pytest.fixture
def network(tmp_path: Path) -> tuple[LocalChain, LocalHub]:
    """uid 0 commits a valid model, uid 1 a model with NaN weights, uid 2 validates."""
    admin = LocalChain(tmp_path / "chain.sqlite")
    for name, folder in (
        ("good", build_valid(tmp_path / "good")),
        ("nan", build_nan_weights(tmp_path / "nan")),
    ):
        admin.register(name)
        hub = LocalHub(tmp_path / "hub", user=name)
        publisher = Publisher(chain=LocalChain(tmp_path / "chain.sqlite", hotkey=name), hub=hub, hotkey=name)
        publisher.publish(folder, repo_id=f"{name}/model", competition_id="local")
    admin.register("validator", stake=1000.0, validator_permit=True)
    return LocalChain(tmp_path / "chain.sqlite", hotkey="validator"), LocalHub(tmp_path / "hub")


def test_load_best_picks_the_highest_incentive_model(
    tmp_path: Path, network: tuple[LocalChain, LocalHub]
) -> None:
    chain, hub = network
    chain.set_weights([0, 1], [0.9, 0.1], version_key=1)
    assert best_uid(chain, "local") == 0
    model = start_model(LOCAL, chain=chain, hub=hub, download_dir=tmp_path / "dl", load_best=True)
    expected = tiny_llama().state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(model.state_dict()["model.layers.0.self_attn.q_proj.weight"], expected)


def test_load_best_refuses_a_hostile_model(tmp_path: Path, network: tuple[LocalChain, LocalHub]) -> None:
    chain, hub = network
    chain.set_weights([0, 1], [0.1, 0.9], version_key=1)
    assert best_uid(chain, "local") == 1
    with pytest.raises(ModelRejectedError) as caught:
        start_model(LOCAL, chain=chain, hub=hub, download_dir=tmp_path / "dl", load_best=True)
    assert caught.value.reason == "nan_weights"


def test_load_uid_and_load_model_dir_are_checked(
    tmp_path: Path, network: tuple[LocalChain, LocalHub]
) -> None:
    chain, hub = network
    assert start_model(LOCAL, chain=chain, hub=hub, download_dir=tmp_path / "dl", load_uid=0) is not None
    with pytest.raises(ModelRejectedError):
        start_model(LOCAL, download_dir=tmp_path / "dl", load_model_dir=tmp_path / "nan")
    fresh = start_model(LOCAL, download_dir=tmp_path / "dl", seed=3)
    again = start_model(LOCAL, download_dir=tmp_path / "dl", seed=3)
    assert torch.equal(fresh.lm_head.weight, again.lm_head.weight)
