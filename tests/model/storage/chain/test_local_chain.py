from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from model.storage.chain.local_chain import LocalChain
from utilities.errors import ChainError, CommitmentError, ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def chain_as(path: Path, hotkey: str | None, clock: Clock, **kwargs: object) -> LocalChain:
    return LocalChain(path, hotkey=hotkey, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_block_follows_clock_and_advance(tmp_path: Path, clock: Clock) -> None:
    chain = chain_as(tmp_path / "c.sqlite", None, clock, seconds_per_block=12)
    assert chain.current_block() == 0
    clock.now += 25
    assert chain.current_block() == 2
    assert chain.advance(10) == 12
    # another handle on the same file shares the clock (genesis is written once)
    assert chain_as(tmp_path / "c.sqlite", None, clock).current_block() == 12
    with pytest.raises(ValueError):
        chain.advance(-1)


def test_block_hash_is_shared_and_distinct(tmp_path: Path, clock: Clock) -> None:
    chain = chain_as(tmp_path / "c.sqlite", None, clock)
    chain.advance(3)
    other = chain_as(tmp_path / "c.sqlite", None, clock)
    assert chain.block_hash(2) == other.block_hash(2)
    assert chain.block_hash(2) != chain.block_hash(3)
    assert chain.block_hash(2).startswith("0x") and len(chain.block_hash(2)) == 66
    with pytest.raises(ChainError, match="does not exist"):
        chain.block_hash(4)


def test_block_timestamp_is_shared_and_stays_put_as_the_chain_moves(tmp_path: Path, clock: Clock) -> None:
    chain = chain_as(tmp_path / "c.sqlite", None, clock, seconds_per_block=12)
    clock.now += 30  # block 2
    assert chain.block_timestamp(2) == 1_000_024.0 and chain.block_timestamp(0) == 1_000_000.0
    chain.advance(5)
    clock.now += 100
    other = chain_as(tmp_path / "c.sqlite", None, clock)
    assert other.block_timestamp(2) == chain.block_timestamp(2) == 1_000_024.0
    assert chain.block_timestamp(15) == 1_000_180.0
    with pytest.raises(ChainError, match="does not exist"):
        chain.block_timestamp(16)
    with pytest.raises(ChainError, match="does not exist"):
        chain.block_timestamp(-1)


def test_register_and_metagraph(tmp_path: Path, clock: Clock) -> None:
    chain = chain_as(tmp_path / "c.sqlite", None, clock)
    assert chain.register("hk0", stake=100.0, validator_permit=True) == 0
    assert chain.register("hk1") == 1
    assert chain.register("hk1", stake=5.0) == 1  # idempotent, updates stake
    graph = chain.metagraph()
    assert graph.hotkeys == ("hk0", "hk1")
    np.testing.assert_array_equal(graph.uids, [0, 1])
    np.testing.assert_array_equal(graph.stake, [100.0, 5.0])
    np.testing.assert_array_equal(graph.validator_permit, [True, False])
    assert graph.uid_of("hk1") == 1 and graph.uid_of("nobody") is None
    assert graph.hotkey_of(0) == "hk0"


def test_commitments_with_blocks(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "c.sqlite"
    chain_as(path, None, clock).register("miner")
    miner = chain_as(path, "miner", clock)
    assert miner.commitment("miner") is None
    miner.commit("ns:name:abc:hash:local")
    miner.advance(5)
    miner.commit("ns:name:def:hash:local")
    got = miner.commitment("miner")
    assert got is not None and (got.data, got.block) == ("ns:name:def:hash:local", 5)
    assert set(miner.commitments()) == {"miner"}


def test_commit_rules(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "c.sqlite"
    chain_as(path, None, clock).register("miner")
    with pytest.raises(ConfigError):
        chain_as(path, None, clock).commit("x")
    with pytest.raises(CommitmentError, match="not registered"):
        chain_as(path, "stranger", clock).commit("x")
    limited = chain_as(path, "miner", clock, commit_interval_blocks=3)
    with pytest.raises(CommitmentError, match="128"):
        limited.commit("x" * 129)
    limited.commit("first")
    with pytest.raises(CommitmentError, match="allowed at block 3"):
        limited.commit("second")
    limited.advance(3)
    limited.commit("second")
    assert limited.commitment("miner").data == "second"  # type: ignore[union-attr]


def test_set_weights_normalizes_and_validates(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "c.sqlite"
    admin = chain_as(path, None, clock)
    admin.register("val", stake=10, validator_permit=True)
    admin.register("m1")
    admin.register("m2")
    validator = chain_as(path, "val", clock)
    validator.set_weights([1, 2], [3.0, 1.0], version_key=1000)
    assert validator.weights("val") == {1: 0.75, 2: 0.25}
    validator.set_weights([2], [1.0], version_key=1000)  # replaces the previous vector
    assert validator.weights("val") == {2: 1.0}
    with pytest.raises(ChainError, match="unknown uids"):
        validator.set_weights([7], [1.0], version_key=1)
    with pytest.raises(ChainError, match="finite"):
        validator.set_weights([1], [float("nan")], version_key=1)
    with pytest.raises(ChainError, match="permit"):
        chain_as(path, "m1", clock).set_weights([1], [1.0], version_key=1)


def test_consensus_and_incentive(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "c.sqlite"
    admin = chain_as(path, None, clock)
    for hotkey, stake in (("v1", 60.0), ("v2", 30.0), ("v3", 10.0)):
        admin.register(hotkey, stake=stake, validator_permit=True)
    for miner in ("a", "b"):
        admin.register(miner)
    chain_as(path, "v1", clock).set_weights([3, 4], [0.8, 0.2], version_key=1)
    chain_as(path, "v2", clock).set_weights([3, 4], [0.6, 0.4], version_key=1)
    # a minority validator that puts everything on "b" is clipped to consensus
    chain_as(path, "v3", clock).set_weights([4], [1.0], version_key=1)
    graph = admin.metagraph()
    # consensus: the largest weight backed by >= half of the stake
    assert graph.consensus[3] == pytest.approx(0.8)
    assert graph.consensus[4] == pytest.approx(0.2)
    # incentive: stake-weighted clipped weights, normalized
    a = 0.6 * 0.8 + 0.3 * 0.6
    b = 0.6 * 0.2 + 0.3 * 0.2 + 0.1 * 0.2
    assert graph.incentive[3] == pytest.approx(a / (a + b))
    assert graph.incentive[4] == pytest.approx(b / (a + b))
    assert graph.incentive[:3].sum() == 0


def _writer(path: str, hotkey: str, rounds: int) -> None:
    chain = LocalChain(path, hotkey=hotkey)
    for i in range(rounds):
        chain.commit(f"{hotkey}:model:{i}")
        assert chain.commitment(hotkey) is not None
        chain.metagraph()


def test_two_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    admin = LocalChain(path)
    admin.register("p1")
    admin.register("p2")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(path), hk, 40)) for hk in ("p1", "p2")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    commitments = admin.commitments()
    assert {hk: c.data for hk, c in commitments.items()} == {"p1": "p1:model:39", "p2": "p2:model:39"}


def test_finalized_block_lags_the_head_by_the_lag_fixed_at_creation(tmp_path: Path) -> None:
    chain = LocalChain(tmp_path / "c.sqlite", finality_lag_blocks=3, min_allowed_weights=8)
    chain.advance(10)
    assert chain.current_block() - chain.finalized_block() == 3
    # another process opening the same file with other settings sees the chain's own values
    other = LocalChain(tmp_path / "c.sqlite", finality_lag_blocks=0, min_allowed_weights=1)
    assert other.finalized_block() == chain.finalized_block()
    assert other.min_allowed_weights() == 8
    fresh = LocalChain(tmp_path / "f.sqlite", finality_lag_blocks=5)
    assert fresh.finalized_block() == 0  # never below genesis
