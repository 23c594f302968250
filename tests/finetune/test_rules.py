"""The step's rules in ``finetune.rules``, each through its own function."""

from __future__ import annotations

import math
from pathlib import Path

import bittensor as bt
import pytest
from bittensor.intents.weights import normalize as sdk_u16

from constants.competitions import L3, LOCAL, S1, Competition
from finetune.rules import (
    chain_weights,
    consensus_start,
    split_eligible,
    step_scores,
    sync_window,
    weight_targets,
    window_scores,
)
from model.storage.chain.bittensor_chain import BittensorChain
from tests.fakes.fake_substrate import FakeSubstrate
from utilities.errors import ChainError


# ---- sync window ------------------------------------------------------------------------------------
def test_sync_block_is_the_latest_finalized_multiple_of_the_interval() -> None:
    interval = L3.sync_interval_blocks
    assert [sync_window(b, L3).sync_block for b in (0, interval - 1, interval, 2 * interval + 7)] == [
        0, 0, interval, 2 * interval,
    ]  # fmt: skip
    window = sync_window(10 * interval + 3, L3)
    assert window.cutoff == 10 * interval - L3.eval_delay_blocks
    with pytest.raises(ValueError, match="finalized block"):
        sync_window(-1, L3)


def test_mainnet_windows_are_the_successors_and_local_ones_are_short() -> None:
    for competition in (L3, S1):
        assert (competition.sync_interval_blocks, competition.eval_delay_blocks) == (180, 1200)
        # a model must wait longer than a window, so every validator has seen it by its sync block
        assert competition.eval_delay_blocks > competition.sync_interval_blocks
    assert (LOCAL.sync_interval_blocks, LOCAL.eval_delay_blocks) == (5, 2)
    with pytest.raises(ValueError, match="sync_interval_blocks"):
        Competition(
            id="x",
            architectures=("A",),
            max_params=1,
            tokenizer="t",
            reward_share=1.0,
            sync_interval_blocks=0,
        )


def test_only_models_committed_an_eval_delay_before_the_sync_block_take_part() -> None:
    window = sync_window(1_000, Competition(
        id="x", architectures=("A",), max_params=1, tokenizer="t", reward_share=1.0,
        sync_interval_blocks=100, eval_delay_blocks=30,
    ))  # fmt: skip
    assert (window.sync_block, window.cutoff) == (1_000, 970)
    eligible, waiting = split_eligible({"old": 900, "edge": 970, "young": 971, "after": 1_003}, window)
    assert eligible == ["old", "edge"]
    assert waiting == {
        "young": "waiting: committed 29 blocks before the sync block 1000, needs 30",
        "after": "waiting: committed 3 blocks after the sync block 1000, needs 30",
    }


# ---- scores -----------------------------------------------------------------------------------------
def test_step_scores_moving_average_decay_and_frozen_hotkeys() -> None:
    scores = {"a": 0.5, "b": 0.3, "gone": 0.2, "other": 0.4, "swapped": 0.1}
    new = step_scores(
        scores, {"a": 0.7, "new": 0.3}, members={"a", "b", "new", "swapped"}, elsewhere={"other"},
        changed={"swapped"}, alpha=0.9,
    )  # fmt: skip
    assert new == pytest.approx({
        "a": 0.9 * 0.5 + 0.1 * 0.7,
        "b": 0.9 * 0.3,  # a member not evaluated this step decays towards 0
        "new": 0.1 * 0.3,
        "gone": 0.9 * 0.2,  # in no competition now (rejected, withdrawn): decays too
        "other": 0.4,  # another competition's model: untouched
        "swapped": 0.1,  # model changed during the step: neither earns nor decays
    })  # fmt: skip
    assert scores["a"] == 0.5  # input untouched


def test_a_step_where_nothing_scored_changes_nothing() -> None:
    scores = {"a": 0.5, "b": 0.3}
    assert step_scores(scores, {"a": 0.0, "b": 0.0}, members={"a", "b"}) == scores
    assert step_scores(scores, {}, members={"a", "b"}) == scores


def test_the_moving_average_moves_once_per_window() -> None:
    start = {"a": 0.5, "b": 0.5, "other": 0.4}
    once, window = window_scores(
        start, {"a": 0.9, "b": 0.1}, window_start=None, sync_block=100, members={"a", "b"},
        elsewhere={"other"}, alpha=0.5,
    )  # fmt: skip
    assert once == pytest.approx({"a": 0.7, "b": 0.3, "other": 0.4})
    assert window == (100, start)
    # the same window again (another step, or the same results): the latest step's weights replace
    # the earlier ones instead of moving a second time; another competition's change is kept
    later = {**once, "other": 0.1}
    again, same = window_scores(
        later, {"a": 0.2, "b": 0.8}, window_start=window, sync_block=100, members={"a", "b"},
        elsewhere={"other"}, alpha=0.5,
    )  # fmt: skip
    assert again == pytest.approx({"a": 0.35, "b": 0.65, "other": 0.1}) and same == window
    repeat, _ = window_scores(
        once, {"a": 0.9, "b": 0.1}, window_start=window, sync_block=100, members={"a", "b"},
        elsewhere={"other"}, alpha=0.5,
    )  # fmt: skip
    assert repeat == pytest.approx(once)
    # the next window starts from the scores it finds
    nxt, moved = window_scores(
        once, {"a": 0.9, "b": 0.1}, window_start=window, sync_block=105, members={"a", "b"},
        elsewhere={"other"}, alpha=0.5,
    )  # fmt: skip
    assert moved == (105, once) and nxt["a"] == pytest.approx(0.8)
    # nothing scored: nothing changes, not even the window start
    assert window_scores(once, {"a": 0.0}, window_start=None, sync_block=110, members={"a"}) == (once, None)


def test_consensus_start_rescales_the_members_consensus_to_the_share() -> None:
    consensus = {"a": 0.3, "b": 0.1, "c": 0.6, "bad": math.nan}
    assert consensus_start(consensus, ["a", "b", "bad"], 0.6) == pytest.approx(
        {"a": 0.45, "b": 0.15, "bad": 0.0}
    )
    assert consensus_start({"a": 0.0}, ["a", "z"], 0.6) == {}


def test_weight_targets_follow_consensus_until_a_competition_is_scored() -> None:
    members = {"l3": ["a", "b"], "s1": ["c", "d"]}
    shares = {"l3": 0.6, "s1": 0.4}
    consensus = {"a": 0.1, "b": 0.3, "c": 0.2, "d": 0.2}
    fresh = weight_targets({}, members=members, reward_shares=shares, scored=[], consensus=consensus)
    assert fresh == pytest.approx({"a": 0.15, "b": 0.45, "c": 0.2, "d": 0.2})
    # after a step in l3 its own scores count, s1 still follows consensus (not 100% to l3)
    own = {"a": 0.5, "b": 0.01, "c": 0.9}
    half = weight_targets(own, members=members, reward_shares=shares, scored=["l3"], consensus=consensus)
    assert half == pytest.approx({"a": 0.5, "b": 0.01, "c": 0.2, "d": 0.2})
    both = weight_targets(
        own, members=members, reward_shares=shares, scored=["l3", "s1"], consensus=consensus
    )
    assert both == own


# ---- chain weights ----------------------------------------------------------------------------------
def test_chain_weights_normalize_in_metagraph_order() -> None:
    weights = chain_weights(["v", "a", "b"], {"a": 0.3, "b": 0.1, "x": 5.0}, min_nonzero=1)
    assert weights == pytest.approx([0.0, 0.75, 0.25])
    assert chain_weights(["a", "b"], {}, min_nonzero=8) == [0.0, 0.0]  # nothing to set
    assert chain_weights([], {"a": 1.0}, min_nonzero=8) == []
    with pytest.raises(ValueError, match="min_nonzero"):
        chain_weights(["a"], {"a": 1.0}, min_nonzero=-1)


@pytest.mark.parametrize("min_allowed", [1, 3, 8, 300])
def test_chain_weights_survive_the_sdks_quantization_with_min_allowed_entries(min_allowed: int) -> None:
    """The SDK drops entries that round to 0 in u16 and then refuses fewer than MinAllowedWeights."""
    hotkeys = [f"hk{i}" for i in range(20)]
    targets = {"hk3": 0.8, "hk7": 0.2, "hk9": 1e-9}  # hk9 would round to 0 on chain
    weights = chain_weights(hotkeys, targets, min_nonzero=min_allowed)
    uids, values = sdk_u16(list(range(20)), weights)
    assert len(uids) >= min(min_allowed, 20)
    assert sum(weights) == pytest.approx(1.0)
    assert values[uids.index(3)] == 65535 and weights[3] / weights[7] == pytest.approx(4.0)
    if min_allowed >= 3:
        assert 9 in uids  # the largest target below the floor is raised first, then uid order
    floor = sorted(weights)[-3] if min_allowed >= 3 else 0.0
    assert floor <= weights[3] / 65535 * 1.0000001


def test_the_sdk_accepts_chain_weights_where_it_refuses_plain_normalized_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the real SDK boundary (``bt.Subtensor`` over the fake substrate) with MinAllowedWeights 8."""
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))  # not in $HOME
    netuid = 9
    wallet = bt.Wallet("cold", "hot", path=str(tmp_path / "wallets"))
    wallet.regenerate_coldkey(seed="0x" + "11" * 32, use_password=False, overwrite=True, suppress=True)
    wallet.regenerate_hotkey(seed="0x" + "22" * 32, use_password=False, overwrite=True, suppress=True)
    fake = FakeSubstrate(block=5000)
    fake.register(netuid, wallet.hotkey.ss58_address, 0)
    fake.set_storage("SubtensorModule", "CommitRevealWeightsEnabled", [netuid], False)
    fake.set_storage("SubtensorModule", "MaxWeightsLimit", [netuid], 65535)
    fake.set_storage("SubtensorModule", "SubnetEpochConsensus", [netuid], "Yuma")
    fake.set_storage("SubtensorModule", "MinAllowedWeights", [netuid], 8)
    chain = BittensorChain.connect(
        "test", netuid=netuid, signer=wallet.hotkey, substrate=fake, timeout_s=5.0, attempts=1
    )
    try:
        hotkeys = [f"hk{i}" for i in range(20)]
        targets = {"hk3": 0.8, "hk7": 0.2}
        plain = [targets.get(hk, 0.0) for hk in hotkeys]
        with pytest.raises(ChainError, match="at least 8"):
            chain.set_weights(list(range(20)), plain, version_key=1)
        assert fake.submissions == []
        chain.set_weights(list(range(20)), chain_weights(hotkeys, targets, min_nonzero=8), version_key=1)
        (sent,) = fake.submissions
        assert len(sent.call.params["dests"]) == 8 and max(sent.call.params["weights"]) == 65535
    finally:
        chain.close()
