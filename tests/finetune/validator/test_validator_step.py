"""Whole validator steps on the local network: good, copied, crashing and hostile miners."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from constants.competitions import LOCAL
from finetune.data import seed_from_block_hash
from tests.finetune.validator.localnet import VALIDATOR, LocalNet, save_tiny
from tests.finetune.zoo import build_nan_weights


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> LocalNet:
    root = tmp_path_factory.mktemp("localnet")
    network = LocalNet(root)
    good = save_tiny(root / "src" / "a", seed=1)
    network.publish("good_a", good)
    network.publish("good_b", save_tiny(root / "src" / "b", seed=2), salted=True)
    network.chain.advance(1)
    network.publish("copier", good)  # the same files, committed a block later
    disguised = root / "src" / "disguised"
    shutil.copytree(good, disguised)
    (disguised / "README.md").write_text("my own model, honest\n")  # same weights, other files
    network.publish("copier_readme", disguised)
    network.publish("crash_c", save_tiny(root / "src" / "c", seed=3))
    network.publish("nan_d", build_nan_weights(root / "src" / "d"))
    network.ripen()
    return network


@pytest.mark.slow
def test_a_step_scores_good_models_and_isolates_bad_ones(net: LocalNet) -> None:
    validator = net.validator()
    try:
        validator.sync_models()
        for hotkey in ("good_a", "good_b", "copier", "copier_readme", "crash_c"):
            record = validator.tracker.get(hotkey)
            assert record is not None and record.status == "ok", hotkey
        rejected = validator.tracker.get("nan_d")
        assert rejected is not None and (rejected.status, rejected.reason) == ("rejected", "nan_weights")

        report = validator.step()
        assert report is not None and report.competition_id == "local" and report.n_samples == 24
        rows = {row.hotkey: row for row in report.rows}
        assert set(rows) == {"good_a", "good_b", "copier", "copier_readme", "crash_c"}
        for copier in ("copier", "copier_readme"):  # identical weights count once, README or not
            assert "same model" in rows[copier].note and rows[copier].weight == 0.0
        assert "crashed" in rows["crash_c"].note and math.isinf(rows["crash_c"].mean_loss)
        assert rows["crash_c"].win_rate == 0.0
        for hotkey in ("good_a", "good_b"):
            assert math.isfinite(rows[hotkey].mean_loss) and rows[hotkey].weight > rows["crash_c"].weight
        assert sum(row.weight for row in report.rows) == pytest.approx(1.0)
        # the crashed model is out of the match: the two good models play only each other
        assert rows["good_a"].win_rate + rows["good_b"].win_rate == pytest.approx(1.0)
        best, other = sorted(("good_a", "good_b"), key=lambda hk: -rows[hk].win_rate)
        assert (rows[best].weight > rows[other].weight) == (rows[best].win_rate > rows[other].win_rate)

        assert validator.maybe_set_weights()
        on_chain = net.chain.weights(VALIDATOR)
        uids, weights = validator.weights_to_set(net.chain.metagraph())
        assert on_chain == pytest.approx(dict(zip(uids, weights, strict=True)))
        assert on_chain[0] == 0.0  # the validator itself
        assert not validator.maybe_set_weights()  # not before blocks_per_epoch blocks
    finally:
        validator.evaluator.close()

    # a restarted validator resumes from its state file and would set the same weights
    restarted = net.validator()
    try:
        assert restarted.state.step == 1
        assert restarted.state.scores == validator.state.scores
        assert not restarted.maybe_set_weights()
        net.chain.advance(restarted.settings.blocks_per_epoch)
        assert restarted.maybe_set_weights()
        assert net.chain.weights(VALIDATOR) == pytest.approx(on_chain)
    finally:
        restarted.evaluator.close()


@pytest.mark.slow
def test_two_validators_in_one_sync_window_agree(net: LocalNet, tmp_path: Path) -> None:
    """Two validators with separate state stepping at different blocks of one window draw the same
    samples and compute the same losses, step weights and chain weights; the next window draws others."""
    sync = net.next_window()
    one, two = net.validator(state_dir=tmp_path / "one"), net.validator(state_dir=tmp_path / "two")
    try:
        one.sync_models()
        first = one.step()
        assert one.step() is not None  # a second step in the window: the same result, no second move
        net.chain.advance(LOCAL.sync_interval_blocks - 1)  # a later block, still in the same window
        two.sync_models()
        second = two.step()
        assert first is not None and second is not None
        assert first.block == second.block == sync
        assert net.chain.finalized_block() == sync + LOCAL.sync_interval_blocks - 1
        assert first.seed == second.seed == seed_from_block_hash(net.chain.block_hash(sync))
        assert len({r.hotkey for r in first.rows}) == 5 and first.n_samples == second.n_samples == 24
        assert {r.hotkey: r.losses for r in first.rows} == {r.hotkey: r.losses for r in second.rows}
        assert {r.hotkey: r.weight for r in first.rows} == {r.hotkey: r.weight for r in second.rows}
        metagraph = net.chain.metagraph()
        assert one.state.scores == pytest.approx(two.state.scores)
        (uids_one, weights_one), (uids_two, weights_two) = (v.weights_to_set(metagraph) for v in (one, two))
        assert uids_one == uids_two and weights_one == pytest.approx(weights_two) and any(weights_one)

        net.next_window()  # the next window: other samples, so other losses
        third = one.step()
        assert third is not None and third.block == sync + LOCAL.sync_interval_blocks
        assert third.seed != first.seed
        good = {r.hotkey: r.losses for r in third.rows}["good_a"]
        assert good != {r.hotkey: r.losses for r in first.rows}["good_a"]
    finally:
        one.evaluator.close()
        two.evaluator.close()
