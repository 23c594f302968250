"""Whole validator steps on the local network: good, copied, crashing and hostile miners."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

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
        # the better of the two good models (lower loss on most samples) has the higher weight
        best, other = sorted(("good_a", "good_b"), key=lambda hk: -rows[hk].win_rate)
        assert rows[best].weight > rows[other].weight

        assert validator.maybe_set_weights()
        on_chain = net.chain.weights(VALIDATOR)
        uids, weights = validator.state.weights_for(net.chain.metagraph())
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
def test_two_validators_on_the_same_block_agree(net: LocalNet, tmp_path: Path) -> None:
    reports = []
    for name in ("one", "two"):
        validator = net.validator(state_dir=tmp_path / name)
        try:
            validator.sync_models()
            reports.append(validator.step())
        finally:
            validator.evaluator.close()
    first, second = reports
    assert first is not None and second is not None
    assert first.seed == second.seed and first.block == second.block
    assert {r.hotkey: r.weight for r in first.rows} == {r.hotkey: r.weight for r in second.rows}
    assert {r.hotkey: r.losses for r in first.rows} == {r.hotkey: r.losses for r in second.rows}
