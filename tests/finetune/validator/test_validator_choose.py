"""Which models a step evaluates (:func:`finetune.rules.choose_models`): kept ones, the best by score,
then models this validator has not evaluated, consensus leaders first."""

from __future__ import annotations

import pytest

from finetune.rules import Candidate, choose_models


def candidate(block: int, *, consensus: float = 0.0, incentive: float = 0.0, model: str = "") -> Candidate:
    return Candidate(block=block, model=model or f"m@{block}", consensus=consensus, incentive=incentive)


def test_kept_then_best_by_score_then_new_by_consensus() -> None:
    candidates = {
        "kept": candidate(1),
        "dropped-good": candidate(1),  # one bad step cost it its place
        "dropped-bad": candidate(1),
        "new-low": candidate(2, consensus=0.1, incentive=0.9),
        "new-high": candidate(3, consensus=0.5),
        "new-third": candidate(4),
    }
    evaluated = {hk: candidates[hk].model for hk in ("kept", "dropped-good", "dropped-bad")}
    chosen, skipped = choose_models(
        candidates, kept=["kept", "gone"], scores={"kept": 0.2, "dropped-good": 0.6, "dropped-bad": 0.0},
        evaluated=evaluated, sample_min=2, max_new=2,
    )  # fmt: skip
    # "gone" is no longer a candidate; consensus ranks before incentive
    assert chosen == ["kept", "dropped-good", "new-high", "new-low"]
    assert skipped == {
        "dropped-bad": "not evaluated this step: evaluated before and not among the best 2",
        "new-third": "not evaluated this step: new, queued behind 2 other new models",
    }


def test_a_changed_model_is_new_again_and_ties_go_by_incentive_then_block() -> None:
    candidates = {
        "changed": candidate(9, model="v2"),
        "b": candidate(5, incentive=0.3),
        "a": candidate(4, incentive=0.3),
        "c": candidate(1, incentive=0.1),
    }
    chosen, skipped = choose_models(
        candidates, kept=[], scores={}, evaluated={"changed": "v1"}, sample_min=5, max_new=10
    )
    assert chosen == ["a", "b", "c", "changed"]
    assert skipped == {}


def test_after_a_lost_state_every_model_is_eligible_again() -> None:
    """Issue 12.1: the tracker still holds evaluations, but a fresh state has evaluated nothing, so
    every tracked model is chosen (``max_new`` per step) instead of "no model to evaluate" forever."""
    candidates = {f"hk{i}": candidate(i, consensus=i / 10) for i in range(5)}
    chosen, _ = choose_models(candidates, kept=[], scores={}, evaluated={}, sample_min=5, max_new=3)
    assert chosen == ["hk4", "hk3", "hk2"]
    every = {hk: c.model for hk, c in candidates.items()}
    nothing, skipped = choose_models(candidates, kept=[], scores={}, evaluated=every, sample_min=5, max_new=3)
    assert nothing == [] and set(skipped) == set(candidates)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="sample_min and max_new"):
        choose_models({}, kept=[], scores={}, evaluated={}, sample_min=-1, max_new=1)
