"""The validator's bookkeeping around a step: whose scores a sync may forget, a step counter that
moves on whatever the step does, and weights set again with a state from another chain."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from constants.competitions import LOCAL, Competition
from finetune.data import DataSourceError, Sample, SyntheticSource
from finetune.validator.loop import guarded
from finetune.validator.state import ValidatorState
from model.storage.chain.local_chain import LocalChain
from tests.finetune.validator.localnet import VALIDATOR, LocalNet, save_tiny


def _write_state(state_dir: Path, **entries: object) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "validator_state.json").write_text(json.dumps({"version": 2, **entries}))


@pytest.mark.slow
def test_a_sync_keeps_the_scores_of_registered_hotkeys_the_download_budget_deferred(tmp_path: Path) -> None:
    """Review 1: with a lost tracker and a budget of one download, the first sync knows one model;
    the other registered hotkeys keep their scores (before: deleted, weights [0, .2, .3, .5] became
    [0, 1, 0, 0]). A hotkey that is not registered is still forgotten."""
    net = LocalNet(tmp_path)
    for seed, hotkey in enumerate(("m_a", "m_b", "m_c")):
        net.publish(hotkey, save_tiny(tmp_path / "src" / hotkey, seed=seed))
    net.ripen()
    scores = {"m_a": 0.2, "m_b": 0.3, "m_c": 0.5, "gone": 0.4}
    _write_state(tmp_path / "state", step=7, scores=scores, scored_competitions=["local"])
    validator = net.validator(tmp_path / "state", max_downloads=1)  # no tracker.json
    try:
        before = validator.weights_to_set(validator.chain.metagraph())
        validator.sync_models()
        assert len(validator.tracker.hotkeys()) == 1  # the budget deferred two
        assert validator.state.scores == {"m_a": 0.2, "m_b": 0.3, "m_c": 0.5}
        assert validator.weights_to_set(validator.chain.metagraph()) == before
        assert ValidatorState.load(validator.settings.state_file).scores == validator.state.scores
    finally:
        validator.evaluator.close()


class _Flaky:
    """The synthetic source, or one whose backend is unreachable while ``down``."""

    def __init__(self) -> None:
        self.down = True
        self.source = SyntheticSource("heldout")

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[Sample]:
        if self.down:
            raise DataSourceError("wandb is unreachable")
        return self.source.sample(n, seed=seed, cutoff=cutoff)


def _no_tokenizer(competition: Competition) -> object:
    raise OSError(f"hub unreachable: {competition.tokenizer}")


@pytest.mark.slow
def test_a_failing_step_still_moves_the_round_robin_on(tmp_path: Path) -> None:
    """Review 6: a step whose data source is down, or whose tokenizer (or anything after the plan)
    raises, counts as a step, saved, so the round robin goes on to the next competition instead of
    retrying the failing one forever; a step that works afterwards is recorded as usual."""
    net = LocalNet(tmp_path)
    net.publish("alpha", save_tiny(tmp_path / "src", seed=0))
    net.ripen()
    source = _Flaky()
    validator = net.validator(tmp_path / "state", source=source)
    try:
        validator.sync_models()
        assert validator.step() is None
        assert validator.state.step == 1
        validator._tokenizer_loader = _no_tokenizer  # the loader given to the constructor
        validator._tokenizers.clear()  # the first step loaded (and cached) the tokenizer before its draw
        source.down = False
        guarded(validator.step)  # as run_loop calls it
        assert validator.state.step == 2 and not validator.state.history
        assert ValidatorState.load(validator.settings.state_file).step == 2
    finally:
        validator.evaluator.close()


def test_a_last_weights_block_ahead_of_the_chain_does_not_block_weights(tmp_path: Path) -> None:
    """Review 7: a state dir reused on a new chain holds a last weights block far ahead of it; it is
    ignored (before: no weights until the chain reached block 5,000,000)."""
    net = LocalNet(tmp_path)
    net.chain.register("m_a")
    net.chain.advance(10)
    _write_state(
        tmp_path / "state", step=3, scores={"m_a": 0.5}, scored_competitions=["local"],
        last_weights_block=5_000_000,
    )  # fmt: skip
    validator = net.validator(tmp_path / "state")
    try:
        assert validator.maybe_set_weights()
        uid = dict(zip(net.chain.metagraph().hotkeys, net.chain.metagraph().uids, strict=True))["m_a"]
        assert net.chain.weights(VALIDATOR)[int(uid)] == pytest.approx(1.0)
        assert validator.state.last_weights_block == net.chain.current_block()
        assert not validator.maybe_set_weights()  # and the usual interval holds from there
    finally:
        validator.evaluator.close()


@pytest.mark.slow
def test_a_leader_keeps_its_model_in_the_match_until_its_update_can_be_judged(tmp_path: Path) -> None:
    """Review 3: a hotkey's new commitment, younger than the evaluation delay, does not replace its
    verified model: the old one is still evaluated (before: the tracker switched at once, the new
    model waited and the hotkey was in no match, its score decaying); once the new commitment is
    old enough the next sync switches to it."""
    net = LocalNet(tmp_path)
    old = net.publish("alpha", save_tiny(tmp_path / "v1", seed=0))
    net.publish("beta", save_tiny(tmp_path / "b", seed=1))
    net.ripen()
    validator = net.validator(tmp_path / "state")
    try:
        validator.sync_models()
        assert validator.step() is not None
        new = net.publish("alpha", save_tiny(tmp_path / "v2", seed=2))
        validator.sync_models()
        record = validator.tracker.get("alpha")
        assert record is not None and record.metadata is not None and record.metadata.id == old
        net.next_window()
        report = validator.step()
        assert report is not None and {row.hotkey for row in report.rows} == {"alpha", "beta"}
        assert validator.state.scores["alpha"] > 0.0
        net.chain.advance(LOCAL.eval_delay_blocks)
        validator.sync_models()
        record = validator.tracker.get("alpha")
        assert record is not None and record.metadata is not None and record.metadata.id == new
        assert record.status == "ok"
    finally:
        validator.evaluator.close()


def test_too_few_neurons_for_min_allowed_weights_is_one_error_and_no_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review 8: a subnet with fewer neurons than MinAllowedWeights: the SDK refuses every such call,
    so none is made and one error says why (before: a call, refused on the real chain, at every
    check); weights are set once the subnet is big enough."""
    LocalChain(tmp_path / "chain.sqlite", seconds_per_block=1e9, min_allowed_weights=3)
    net = LocalNet(tmp_path)
    net.chain.register("m_a")
    net.chain.advance(10)
    _write_state(tmp_path / "state", step=3, scores={"m_a": 0.5}, scored_competitions=["local"])
    validator = net.validator(tmp_path / "state")
    try:
        with caplog.at_level(logging.ERROR):
            assert not validator.maybe_set_weights()
            assert not validator.maybe_set_weights()
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "fewer than its MinAllowedWeights 3" in errors[0].getMessage()
        assert net.chain.weights(VALIDATOR) == {}
        net.chain.register("m_b")
        assert validator.maybe_set_weights()
        assert sum(w > 0 for w in net.chain.weights(VALIDATOR).values()) == 3
    finally:
        validator.evaluator.close()
