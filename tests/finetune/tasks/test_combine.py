"""Wins per task, combined by weight: against score_step (one task) and a literal python reference."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from constants.competitions import Competition, FixedEpsilon, LinearDecayEpsilon
from constants.tasks import EvalTask, Method, SourceSpec
from finetune.tasks.combine import loss_wins_per_sample, score_tasks, score_wins_per_sample
from finetune.validation import compute_wins, score_step

NAN = math.nan
INF = math.inf
SOURCE = SourceSpec("synthetic")


def competition(share: float = 1.0, policy: object | None = None) -> Competition:
    return Competition(
        id="t", architectures=("LlamaForCausalLM",), max_params=10, tokenizer="x", reward_share=share,
        epsilon_policy=policy or FixedEpsilon(0.01),
    )  # fmt: skip


def ref_score_wins(
    uids: Sequence[int], scores: Mapping[int, Sequence[float]], blocks: Mapping[int, int]
) -> dict[int, int]:
    """The score rule, literally: higher wins; a tie goes to the earlier commit; nan never wins and
    loses to any scored value."""
    wins = dict.fromkeys(uids, 0)
    for i in uids:
        for j in uids:
            if i == j:
                continue
            for a, b in zip(scores[i], scores[j], strict=True):
                if math.isnan(a):
                    continue
                if math.isnan(b) or a > b or (a == b and blocks[i] < blocks[j]):
                    wins[i] += 1
    return wins


def random_case(
    rng: random.Random, n: int, n_samples: int
) -> tuple[list[int], dict[int, list[float]], dict[int, int]]:
    uids = rng.sample(range(100), n)
    losses = {
        u: [rng.choice([0.5, 1.0, 1.5, INF, NAN, rng.random()]) for _ in range(n_samples)] for u in uids
    }
    blocks = {u: rng.choice([10, 20, 20, 30]) for u in uids}
    return uids, losses, blocks


@pytest.mark.parametrize("seed", range(6))
def test_one_response_loss_task_gives_exactly_score_steps_numbers(seed: int) -> None:
    rng = random.Random(seed)
    uids, losses, blocks = random_case(rng, rng.randint(1, 7), rng.randint(0, 12))
    hashes = {u: rng.choice(["a", "b", None, f"h{u}"]) for u in uids}
    policy = LinearDecayEpsilon(0.05, 0.001, 5, 20) if seed % 2 else FixedEpsilon(0.01)
    comp = competition(0.6, policy)
    old = score_step(uids, losses, blocks, hashes, competition=comp, current_block=40, seed=seed)
    task = EvalTask("responses", SOURCE, Method.RESPONSE_LOSS, 1.0)
    new = score_tasks(
        uids, {"responses": losses}, blocks, hashes, tasks=[task], reward_share=0.6,
        epsilon_policy=policy, current_block=40, seed=seed,
    )  # fmt: skip
    assert new.kept == old.kept and new.duplicates == old.duplicates and new.epsilon == old.epsilon
    assert new.wins == old.wins
    assert new.win_rate == old.win_rate  # exactly, not approximately
    assert new.ci == old.ci
    assert new.weights == old.weights
    assert new.task_win_rate == {"responses": old.win_rate}


def test_loss_wins_per_sample_sum_to_compute_wins() -> None:
    rng = random.Random(7)
    for _ in range(20):
        uids, losses, blocks = random_case(rng, rng.randint(2, 6), rng.randint(1, 9))
        eps = {u: rng.choice([0.0, 0.01, 0.3]) for u in uids}
        wins, _ = compute_wins(uids, losses, blocks, eps)
        matrix = loss_wins_per_sample(
            np.array([losses[u] for u in uids]),
            np.array([blocks[u] for u in uids]),
            np.array([eps[u] for u in uids]),
        )
        assert {u: int(w) for u, w in zip(uids, matrix.sum(1), strict=True)} == wins


def test_score_wins_match_the_literal_rule() -> None:
    rng = random.Random(3)
    for _ in range(30):
        n, n_samples = rng.randint(1, 6), rng.randint(0, 8)
        uids = list(range(n))
        scores = {u: [rng.choice([0.0, 1.0, 0.5, NAN]) for _ in range(n_samples)] for u in uids}
        blocks = {u: rng.choice([1, 2, 2, 3]) for u in uids}
        matrix = score_wins_per_sample(
            np.array([scores[u] for u in uids]).reshape(n, n_samples), np.array([blocks[u] for u in uids])
        )
        assert dict(zip(uids, matrix.sum(1).tolist(), strict=True)) == ref_score_wins(uids, scores, blocks)


def test_score_ties_go_to_the_earlier_commit_and_nan_loses_to_everything() -> None:
    blocks = np.array([5, 9, 9])
    both_right = score_wins_per_sample(np.array([[1.0], [1.0], [1.0]]), blocks)
    assert both_right[:, 0].tolist() == [2, 0, 0]  # same block: nobody wins the tie
    crashed = score_wins_per_sample(np.array([[NAN], [0.0], [NAN]]), blocks)
    assert crashed[:, 0].tolist() == [0, 2, 0]  # the earlier one crashed: it never wins, even a tie of nans


def test_three_tasks_combine_by_weight() -> None:
    uids, blocks, hashes = [1, 2, 3], {1: 10, 2: 20, 3: 30}, {1: "a", 2: "b", 3: "c"}
    tasks = [
        EvalTask("responses", SOURCE, Method.RESPONSE_LOSS, 0.5),
        EvalTask("choice", SOURCE, Method.MULTIPLE_CHOICE, 0.3),
        EvalTask("sorting", SOURCE, Method.GENERATION_RULES, 0.2),
    ]
    values = {
        "responses": {1: [2.0, 2.0], 2: [1.0, 1.0], 3: [3.0, INF]},
        "choice": {1: [1.0, 1.0], 2: [0.0, 1.0], 3: [1.0, 0.0]},
        "sorting": {1: [NAN, NAN], 2: [0.5, 1.0], 3: [0.5, 0.0]},
    }
    result = score_tasks(
        uids,
        values,
        blocks,
        hashes,
        tasks=tasks,
        reward_share=1.0,
        epsilon_policy=FixedEpsilon(0.0),
        current_block=99,
    )
    # responses: 2 beats everyone twice, 1 beats 3 twice
    assert result.task_wins["responses"] == {1: 2, 2: 4, 3: 0}
    # choice: sample 0: 1 ties 3 and is earlier, both beat 2; sample 1: 1 ties 2 (earlier), both beat 3
    assert result.task_wins["choice"] == {1: 4, 2: 1, 3: 1}
    # sorting: 1 never scored and leaves this match; sample 0: 2 ties 3 and is earlier; sample 1: 2 beats 3
    assert result.task_wins["sorting"] == {1: 0, 2: 2, 3: 0}
    assert result.task_win_rate["sorting"] == {1: 0.0, 2: 1.0, 3: 0.0}  # 2 of (2 - 1) * 2 matches
    for uid in uids:
        expected = sum(t.weight * result.task_win_rate[t.name][uid] for t in tasks)
        assert result.win_rate[uid] == pytest.approx(expected)
        assert result.task_win_rate["choice"][uid] == result.task_wins["choice"][uid] / 4
    assert result.win_rate[2] > result.win_rate[1] > result.win_rate[3]
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert result.task_mean["sorting"][1] != result.task_mean["sorting"][1]  # nan: never scored
    assert result.task_mean["responses"][3] == 3.0  # the mean of its finite losses
    low, high = result.ci[2]
    assert low <= result.win_rate[2] <= high


def test_a_model_that_scored_nothing_in_any_task_earns_nothing() -> None:
    tasks = [
        EvalTask("responses", SOURCE, Method.RESPONSE_LOSS, 0.5),
        EvalTask("choice", SOURCE, Method.MULTIPLE_CHOICE, 0.5),
    ]
    values = {"responses": {1: [1.0], 2: [INF]}, "choice": {1: [1.0], 2: [NAN]}}
    result = score_tasks(
        [1, 2], values, {1: 5, 2: 1}, {1: "a", 2: "b"}, tasks=tasks, reward_share=0.4,
        epsilon_policy=FixedEpsilon(), current_block=9,
    )  # fmt: skip
    assert result.weights == {1: pytest.approx(0.4), 2: 0.0}


@pytest.mark.parametrize("broken", [[INF, INF], [NAN, NAN], [NAN, INF]])
def test_a_model_with_no_finite_value_in_a_task_leaves_that_tasks_match(broken: list[float]) -> None:
    """As score_step: the broken model is no opponent in that task (it would otherwise lose every sample
    and lift the others' rates), yet it keeps its place in the tasks it did score."""
    tasks = [
        EvalTask("responses", SOURCE, Method.RESPONSE_LOSS, 0.5),
        EvalTask("choice", SOURCE, Method.MULTIPLE_CHOICE, 0.5),
    ]
    values = {
        "responses": {1: [1.0, 2.0], 2: [2.0, 1.0], 3: [0.5, 0.5]},
        "choice": {1: [1.0, 0.0], 2: [0.0, 1.0], 3: broken},
    }
    blocks, hashes = {1: 10, 2: 10, 3: 10}, {1: "a", 2: "b", 3: "c"}
    result = score_tasks(
        [1, 2, 3], values, blocks, hashes, tasks=tasks, reward_share=1.0,
        epsilon_policy=FixedEpsilon(0.0), current_block=20,
    )  # fmt: skip
    # choice is a match of 1 and 2 only: one win each out of (2 - 1) * 2
    assert result.task_wins["choice"] == {1: 1, 2: 1, 3: 0}
    assert result.task_win_rate["choice"] == {1: 0.5, 2: 0.5, 3: 0.0}
    # responses: 3 beats both on both samples; 1 and 2 split the rest
    assert result.task_win_rate["responses"] == {1: 0.25, 2: 0.25, 3: 1.0}
    assert result.win_rate == {1: 0.375, 2: 0.375, 3: 0.5}
    assert result.weights[3] > result.weights[1] == result.weights[2] > 0.0
    # the same choice numbers as a step where 3 never took part in that task
    alone = score_tasks(
        [1, 2], {"choice": {1: [1.0, 0.0], 2: [0.0, 1.0]}}, blocks, hashes,
        tasks=[EvalTask("choice", SOURCE, Method.MULTIPLE_CHOICE, 1.0)], reward_share=1.0,
        epsilon_policy=FixedEpsilon(0.0), current_block=20,
    )  # fmt: skip
    assert alone.task_win_rate["choice"] == {1: 0.5, 2: 0.5}


def test_one_task_with_broken_models_matches_score_step_exactly() -> None:
    """Models with only inf/nan losses, alone or among others, and a step where every model failed."""
    cases: list[dict[int, list[float]]] = [
        {1: [INF, INF], 2: [1.0, 2.0], 3: [2.0, 1.0]},
        {1: [NAN, INF], 2: [1.0, INF]},
        {1: [INF], 2: [NAN]},
        {1: [INF, 1.0], 2: [NAN, NAN], 3: [0.5, 0.7], 4: [0.9, INF]},
    ]
    comp = competition(0.5)
    for losses in cases:
        uids = list(losses)
        blocks, hashes = {u: 10 * u for u in uids}, {u: f"h{u}" for u in uids}
        old = score_step(uids, losses, blocks, hashes, competition=comp, current_block=99, seed=4)
        new = score_tasks(
            uids, {"r": losses}, blocks, hashes, tasks=[EvalTask("r", SOURCE, Method.RESPONSE_LOSS)],
            reward_share=0.5, epsilon_policy=comp.epsilon_policy, current_block=99, seed=4,
        )  # fmt: skip
        assert (new.wins, new.win_rate, new.ci, new.weights) == (old.wins, old.win_rate, old.ci, old.weights)


def test_bad_inputs_are_refused() -> None:
    task = EvalTask("responses", SOURCE, Method.RESPONSE_LOSS, 1.0)
    common = {"tasks": [task], "reward_share": 1.0, "epsilon_policy": FixedEpsilon(), "current_block": 1}
    with pytest.raises(ValueError, match="expected"):
        score_tasks([1], {"other": {1: [1.0]}}, {1: 0}, {1: None}, **common)
    with pytest.raises(ValueError, match="same number"):
        score_tasks(
            [1, 2], {"responses": {1: [1.0], 2: [1.0, 2.0]}}, {1: 0, 2: 0}, {1: None, 2: None}, **common
        )
    with pytest.raises(ValueError, match="no values"):
        score_tasks([1, 2], {"responses": {1: [1.0]}}, {1: 0, 2: 0}, {1: None, 2: None}, **common)
    half = EvalTask("half", SOURCE, Method.TEXT_LOSS, 0.5)
    with pytest.raises(ValueError, match="sum to"):
        score_tasks([1], {"half": {1: [1.0]}}, {1: 0}, {1: None}, tasks=[half], reward_share=1.0,
                    epsilon_policy=FixedEpsilon(), current_block=1)  # fmt: skip
