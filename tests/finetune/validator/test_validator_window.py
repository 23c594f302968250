"""A sync window's result does not depend on how its evaluations were split into steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from constants.competitions import LOCAL
from finetune.data import Sample, SyntheticSource
from finetune.rules import samples_digest, window_losses, window_scores
from finetune.validation import score_step
from tests.finetune.validator.localnet import LocalNet, save_tiny
from utilities.errors import ChainError

LOSSES = {  # per-sample losses on the window's (shared) samples
    "hk0": [1.0, 1.0, 1.0, 1.0],
    "hk1": [1.2, 0.9, 1.1, 1.3],
    "hk2": [1.5, 1.4, 0.8, 1.6],
    "hk3": [2.0, 2.0, 2.0, 0.7],
}
MODELS = {hk: f"model-{hk}" for hk in LOSSES}


def _scores(steps: list[list[str]]) -> dict[str, float]:
    """The scores after the window's steps, each evaluating the given hotkeys."""
    scores: dict[str, float] = {}
    start = losses = None
    for chosen in steps:
        losses = window_losses(
            losses, {hk: (MODELS[hk], LOSSES[hk]) for hk in chosen}, sync_block=100,
            samples=samples_digest([([1, 2, 3], 1)]), models=MODELS,
        )  # fmt: skip
        match = losses[2]
        uids = {hk: i for i, hk in enumerate(sorted(match))}
        result = score_step(
            list(uids.values()), {uids[hk]: match[hk][1] for hk in match}, {u: u for u in uids.values()},
            {u: f"hash{u}" for u in uids.values()}, competition=LOCAL, current_block=100, temperature=0.08,
            seed=1,
        )  # fmt: skip
        weights = {hk: result.weights[uids[hk]] for hk in match}
        scores, start = window_scores(scores, weights, window_start=start, sync_block=100, members=LOSSES)
    return scores


def test_the_window_scores_the_union_of_its_steps() -> None:
    """Review 2: evaluating {hk0, hk1} then {hk0, hk2, hk3} in one window gives what evaluating all
    four in one step gives (before: hk1, evaluated in the first step only, scored as not evaluated)."""
    once = _scores([["hk0", "hk1", "hk2", "hk3"]])
    assert _scores([["hk0", "hk1"], ["hk0", "hk2", "hk3"]]) == pytest.approx(once)
    assert _scores([["hk3"], ["hk2"], ["hk1"], ["hk0"]]) == pytest.approx(once)
    assert once["hk1"] > 0.0


def test_window_losses_start_over_with_a_new_window_other_samples_or_a_new_model() -> None:
    first = window_losses(None, {"a": ("m1", [1.0]), "b": ("m2", [2.0])}, sync_block=5, samples="s",
                          models={"a": "m1", "b": "m2"})  # fmt: skip
    same = window_losses(
        first, {"b": ("m2", [3.0])}, sync_block=5, samples="s", models={"a": "m1", "b": "m2"}
    )
    assert same == (5, "s", {"a": ("m1", [1.0]), "b": ("m2", [3.0])})
    assert window_losses(first, {}, sync_block=10, samples="s", models={"a": "m1"})[2] == {}
    assert window_losses(first, {}, sync_block=5, samples="other", models={"a": "m1"})[2] == {}
    # a's model changed since it was evaluated; b is no candidate any more
    assert window_losses(first, {}, sync_block=5, samples="s", models={"a": "m9"})[2] == {}


@pytest.mark.slow
def test_a_validator_stepping_three_times_in_a_window_agrees_with_one_stepping_once(tmp_path: Path) -> None:
    """Review 2 on the local network: one new model per step (three steps, one window) ends with the
    scores of a validator that evaluates all three at once, and the state keeps the window's losses."""
    net = LocalNet(tmp_path)
    for seed, hotkey in enumerate(("alpha", "beta", "gamma")):
        net.publish(hotkey, save_tiny(tmp_path / "src" / hotkey, seed=seed))
    net.ripen()
    slow = net.validator(tmp_path / "slow", max_new_per_step=1, sample_min=1)
    fast = net.validator(tmp_path / "fast", max_new_per_step=3, sample_min=1)
    try:
        for validator in (slow, fast):
            validator.sync_models()
        reports = [slow.step() for _ in range(3)]
        rows = [{row.hotkey for row in r.rows} for r in reports if r is not None]
        assert len(rows) == 3 and set.union(*rows) == {"alpha", "beta", "gamma"}
        assert all(len(r) < 3 for r in rows)  # no step evaluated all three
        assert fast.step() is not None
        assert slow.state.scores.keys() == fast.state.scores.keys() == {"alpha", "beta", "gamma"}
        assert slow.state.scores == pytest.approx(fast.state.scores, rel=1e-6)
        assert all(s > 0.0 for s in slow.state.scores.values())
        saved = type(slow.state).load(slow.settings.state_file)
        assert saved.window_losses == slow.state.window_losses
    finally:
        slow.evaluator.close()
        fast.evaluator.close()


class Recording:
    """The synthetic source, recording the cut-off of every draw."""

    def __init__(self) -> None:
        self.source, self.cutoffs = SyntheticSource("heldout"), list[float | None]()

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[Sample]:
        self.cutoffs.append(cutoff)
        return self.source.sample(n, seed=seed)


@pytest.mark.slow
def test_every_step_of_a_window_draws_with_the_sync_blocks_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Cortex cut-off: the validator hands its source the sync block's time, the same in two steps
    of one window although the chain moved on between them; without that time the step is skipped."""
    net = LocalNet(tmp_path)
    for seed, hotkey in enumerate(("alpha", "beta")):
        net.publish(hotkey, save_tiny(tmp_path / "src" / hotkey, seed=seed))
    net.ripen()
    source = Recording()
    validator = net.validator(source=source, max_new_per_step=1, sample_min=1)
    try:
        validator.sync_models()
        first = validator.step()
        net.chain.advance(1)  # still the same window
        second = validator.step()
        assert first is not None and second is not None and first.block == second.block
        assert source.cutoffs == [net.chain.block_timestamp(first.block)] * 2

        asked: list[int] = []

        def no_time(block: int) -> float:
            asked.append(block)
            raise ChainError(f"time of block {block} failed: chain unreachable")

        monkeypatch.setattr(validator.chain, "block_timestamp", no_time)
        assert validator.step() is None and asked == [first.block]  # a model was due: skipped for the time
        assert len(source.cutoffs) == 2 and validator.state.step == 3  # nothing drawn; the step counts
    finally:
        validator.evaluator.close()
