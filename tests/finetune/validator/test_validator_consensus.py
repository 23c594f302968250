"""A fresh validator starts from the chain's consensus, competition by competition (issue 11.3)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from constants.competitions import LOCAL, ScheduleEntry
from model.storage.chain.local_chain import LocalChain
from tests.finetune.validator.localnet import LocalNet, save_tiny

TWO = (
    ScheduleEntry(
        0,
        (dataclasses.replace(LOCAL, reward_share=0.5), dataclasses.replace(LOCAL, id="lb", reward_share=0.5)),
    ),
)


@pytest.mark.slow
def test_first_weights_follow_consensus_then_each_competition_its_own(tmp_path: Path) -> None:
    net = LocalNet(tmp_path)
    for seed, (hotkey, competition) in enumerate(
        [("a1", "local"), ("a2", "local"), ("b1", "lb"), ("b2", "lb")]
    ):
        net.publish(hotkey, save_tiny(tmp_path / "src" / hotkey, seed=seed), competition_id=competition)
    net.ripen()
    uid = {hk: net.chain.metagraph().uid_of(hk) for hk in ("a1", "a2", "b1", "b2")}
    # another validator already holds weights: they are the chain's consensus
    net.chain.register("other-validator", stake=500.0, validator_permit=True)
    consensus = {"a1": 0.1, "a2": 0.4, "b1": 0.3, "b2": 0.2}
    LocalChain(net.chain.path, hotkey="other-validator").set_weights(
        [uid[hk] for hk in consensus], list(consensus.values()), version_key=1
    )
    validator = net.validator(schedule=TWO, alpha=0.0)  # alpha 0: a step's weights are its scores
    try:
        validator.sync_models()
        fresh = dict(zip(*validator.weights_to_set(net.chain.metagraph()), strict=True))
        assert {hk: fresh[uid[hk]] for hk in consensus} == pytest.approx(consensus)
        assert sum(fresh.values()) == pytest.approx(1.0)

        first = validator.step()
        assert first is not None and first.competition_id == "local"
        own = {row.hotkey: row.weight for row in first.rows}
        assert set(own) == {"a1", "a2"} and sum(own.values()) == pytest.approx(0.5)
        after_one = dict(zip(*validator.weights_to_set(net.chain.metagraph()), strict=True))
        # "local" now its own, "lb" still the consensus: not 100% to the first competition
        expected = {**own, "b1": 0.3, "b2": 0.2}
        assert {hk: after_one[uid[hk]] for hk in consensus} == pytest.approx(expected)

        second = validator.step()
        assert second is not None and second.competition_id == "lb"
        own |= {row.hotkey: row.weight for row in second.rows}
        after_both = dict(zip(*validator.weights_to_set(net.chain.metagraph()), strict=True))
        assert {hk: after_both[uid[hk]] for hk in consensus} == pytest.approx(own)
        # the consensus leaders were evaluated first: a2 (0.4) before a1 (0.1) in the first step
        assert [row.hotkey for row in first.rows] == ["a2", "a1"]
    finally:
        validator.evaluator.close()
