"""The scoring rules in ``finetune.validation`` against plain, obviously correct python references."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from constants.competitions import Competition, FixedEpsilon, LinearDecayEpsilon
from finetune.validation import (
    bootstrap_win_rate_ci,
    competition_weights,
    compute_wins,
    deduplicate,
    epsilon_for,
    normalize,
    score_step,
    update_scores,
    win_rate_weights,
)

INF = float("inf")
NAN = float("nan")

# ---------------------------------------------------------------------------------------------------
# References: the rules written as literally as possible.


def ref_compute_wins(
    uids: Sequence[int],
    losses: Mapping[int, Sequence[float]],
    blocks: Mapping[int, int],
    epsilon: float | Mapping[int, float],
) -> tuple[dict[int, int], dict[int, float]]:
    eps = epsilon if isinstance(epsilon, Mapping) else dict.fromkeys(uids, epsilon)
    n_samples = len(losses[uids[0]]) if uids else 0
    wins = {}
    rates = {}
    for i in uids:
        wins[i] = 0
        for j in uids:
            if i == j:
                continue
            for b in range(n_samples):
                left = losses[i][b] * (1 - eps[i] if blocks[i] < blocks[j] else 1)
                right = losses[j][b] * (1 - eps[j] if blocks[j] < blocks[i] else 1)
                if left < right:
                    wins[i] += 1
        matches = (len(uids) - 1) * n_samples
        if len(uids) == 1:
            rates[i] = 1.0
        elif matches == 0:
            rates[i] = 0.0
        else:
            rates[i] = wins[i] / matches
    return wins, rates


def ref_softmax(values: Mapping[int, float], temperature: float) -> dict[int, float]:
    top = max(v / temperature for v in values.values())
    exps = {k: math.exp(v / temperature - top) for k, v in values.items()}
    total = sum(exps.values())
    return {k: e / total for k, e in exps.items()}


def ref_deduplicate(
    uids: Sequence[int], hashes: Mapping[int, str | None], blocks: Mapping[int, int]
) -> tuple[list[int], list[int]]:
    kept: list[int] = []
    dropped: list[int] = []
    for uid in uids:
        same = [u for u in uids if hashes[uid] is not None and hashes[u] == hashes[uid]]
        earliest = min(same, key=lambda u: (blocks[u], u)) if same else uid
        (kept if earliest == uid else dropped).append(uid)
    return kept, dropped


def ref_quantile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default method)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# ---------------------------------------------------------------------------------------------------
# Random cases: small discrete loss sets make exact ties (also ties created by epsilon: 1.0 * (1 - 0.5)
# == 0.5), inf and nan common; few distinct blocks make equal blocks common.

DISCRETE = [0.5, 1.0, 1.5, 2.0, 0.25, INF, NAN, 0.0]
EPSILONS = [0.0, 0.5, 0.25, 0.01, 0.1]


def random_case(
    rng: np.random.Generator, n: int, n_samples: int, *, discrete: bool, eps_mapping: bool
) -> tuple[list[int], dict[int, list[float]], dict[int, int], float | dict[int, float]]:
    uids = [int(u) for u in rng.choice(1000, size=n, replace=False)]
    losses: dict[int, list[float]] = {}
    for uid in uids:
        if discrete:
            losses[uid] = [float(DISCRETE[k]) for k in rng.integers(0, len(DISCRETE), n_samples)]
        else:
            row = [float(x) for x in rng.uniform(0.0, 5.0, n_samples)]
            for b in range(n_samples):
                if rng.random() < 0.05:
                    row[b] = [INF, NAN][int(rng.integers(0, 2))]
            losses[uid] = row
    blocks = {uid: int(rng.integers(0, max(1, n // 2) + 1)) for uid in uids}
    epsilon: float | dict[int, float]
    if eps_mapping:
        epsilon = {uid: float(EPSILONS[int(rng.integers(0, len(EPSILONS)))]) for uid in uids}
    else:
        epsilon = float(EPSILONS[int(rng.integers(0, len(EPSILONS)))])
    return uids, losses, blocks, epsilon


@pytest.mark.parametrize("eps_mapping", [False, True])
@pytest.mark.parametrize("discrete", [False, True])
def test_compute_wins_matches_reference_on_random_cases(discrete: bool, eps_mapping: bool) -> None:
    rng = np.random.default_rng(1234 + 2 * discrete + eps_mapping)
    for _ in range(150):
        n = int(rng.integers(1, 9))
        n_samples = int(rng.integers(0, 7))
        case = random_case(rng, n, n_samples, discrete=discrete, eps_mapping=eps_mapping)
        assert compute_wins(*case) == ref_compute_wins(*case)


def test_compute_wins_matches_reference_on_a_larger_case() -> None:
    rng = np.random.default_rng(7)
    case = random_case(rng, 40, 30, discrete=False, eps_mapping=True)
    assert compute_wins(*case) == ref_compute_wins(*case)


def test_epsilon_advantage_and_equal_blocks() -> None:
    losses = {1: [1.0], 2: [0.995]}
    # Equal blocks: no advantage, the lower loss wins.
    assert compute_wins([1, 2], losses, {1: 5, 2: 5}, 0.01)[0] == {1: 0, 2: 1}
    # uid 1 earlier: 1.0 * 0.99 = 0.99 < 0.995.
    assert compute_wins([1, 2], losses, {1: 4, 2: 5}, 0.01)[0] == {1: 1, 2: 0}
    # uid 2 earlier: its advantage only widens its lead; uid 1's epsilon is irrelevant when later.
    assert compute_wins([1, 2], losses, {1: 6, 2: 5}, {1: 0.5, 2: 0.0})[0] == {1: 0, 2: 1}
    # Per-uid epsilon: uid 1 earlier but with no advantage loses.
    assert compute_wins([1, 2], losses, {1: 4, 2: 5}, {1: 0.0, 2: 0.01})[0] == {1: 0, 2: 1}


def test_exact_tie_after_epsilon_is_no_win() -> None:
    losses = {1: [1.0], 2: [0.5]}
    wins, rates = compute_wins([1, 2], losses, {1: 1, 2: 2}, 0.5)
    assert wins == {1: 0, 2: 0}
    assert rates == {1: 0.0, 2: 0.0}


def test_inf_and_nan_behave_as_float_comparisons() -> None:
    blocks = {1: 1, 2: 2}
    assert compute_wins([1, 2], {1: [NAN], 2: [1.0]}, blocks, 0.01)[0] == {1: 0, 2: 0}
    assert compute_wins([1, 2], {1: [NAN], 2: [NAN]}, blocks, 0.01)[0] == {1: 0, 2: 0}
    assert compute_wins([1, 2], {1: [INF], 2: [INF]}, blocks, 0.01)[0] == {1: 0, 2: 0}
    assert compute_wins([1, 2], {1: [INF], 2: [1e308]}, blocks, 0.01)[0] == {1: 0, 2: 1}
    assert compute_wins([1, 2], {1: [1e308], 2: [INF]}, blocks, 0.01)[0] == {1: 1, 2: 0}


def test_lone_model_empty_and_no_samples() -> None:
    assert compute_wins([3], {3: [1.0, 2.0]}, {3: 1}, 0.01) == ({3: 0}, {3: 1.0})
    assert compute_wins([3], {3: []}, {3: 1}, 0.01) == ({3: 0}, {3: 1.0})
    assert compute_wins([], {}, {}, 0.01) == ({}, {})
    assert compute_wins([1, 2], {1: [], 2: []}, {1: 1, 2: 2}, 0.01) == ({1: 0, 2: 0}, {1: 0.0, 2: 0.0})


def test_single_sample_and_win_rate_denominator() -> None:
    losses = {1: [0.1], 2: [0.2], 3: [0.3]}
    wins, rates = compute_wins([1, 2, 3], losses, {1: 1, 2: 1, 3: 1}, 0.0)
    assert wins == {1: 2, 2: 1, 3: 0}
    assert rates == {1: 1.0, 2: 0.5, 3: 0.0}


def test_only_the_listed_uids_compete_and_inputs_are_untouched() -> None:
    losses = {1: [0.1, 0.2], 2: [0.3, 0.4], 9: [0.0, 0.0]}
    blocks = {1: 1, 2: 2, 9: 0}
    before = copy.deepcopy((losses, blocks))
    assert compute_wins([2, 1], losses, blocks, 0.01) == ({2: 0, 1: 2}, {2: 0.0, 1: 1.0})
    assert (losses, blocks) == before


@pytest.mark.parametrize(
    ("uids", "losses", "blocks", "epsilon"),
    [
        ([1, 1], {1: [1.0]}, {1: 1}, 0.01),  # duplicate uid
        ([1, 2], {1: [1.0], 2: [1.0, 2.0]}, {1: 1, 2: 1}, 0.01),  # ragged lengths
        ([1, 2], {1: [1.0]}, {1: 1, 2: 1}, 0.01),  # missing losses
        ([1, 2], {1: [1.0], 2: [1.0]}, {1: 1}, 0.01),  # missing block
        ([1, 2], {1: [1.0], 2: [1.0]}, {1: 1, 2: None}, 0.01),  # unknown block
        ([1, 2], {1: [1.0], 2: [1.0]}, {1: 1, 2: 1}, 1.0),  # epsilon out of range
        ([1, 2], {1: [1.0], 2: [1.0]}, {1: 1, 2: 1}, -0.1),
        ([1, 2], {1: [1.0], 2: [1.0]}, {1: 1, 2: 1}, NAN),
        ([1, 2], {1: [1.0], 2: [1.0]}, {1: 1, 2: 1}, {1: 0.01}),  # missing epsilon
    ],
)
def test_compute_wins_rejects_bad_input(
    uids: list[int],
    losses: dict[int, list[float]],
    blocks: dict[int, int | None],
    epsilon: float | dict[int, float],
) -> None:
    with pytest.raises(ValueError):
        compute_wins(uids, losses, blocks, epsilon)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# Weights.


def test_win_rate_weights_is_a_softmax() -> None:
    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(1, 20))
        rates = {
            int(u): float(r) for u, r in zip(rng.choice(500, n, replace=False), rng.random(n), strict=True)
        }
        temperature = float(rng.choice([0.01, 0.08, 1.0, 5.0]))
        got = win_rate_weights(rates, temperature=temperature)
        want = ref_softmax(rates, temperature)
        assert list(got) == list(rates)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-300)
        assert sum(got.values()) == pytest.approx(1.0, rel=1e-12)


def test_win_rate_weights_is_stable_and_ordered() -> None:
    got = win_rate_weights({1: 1.0, 2: 0.0, 3: 0.999}, temperature=1e-4)
    assert all(math.isfinite(w) for w in got.values())
    assert got[1] > got[3] > got[2] >= 0.0
    assert win_rate_weights({}, temperature=0.08) == {}
    assert win_rate_weights({5: 0.3}, temperature=0.08) == {5: 1.0}
    with pytest.raises(ValueError):
        win_rate_weights({1: 0.5}, temperature=0.0)
    with pytest.raises(ValueError):
        win_rate_weights({1: NAN}, temperature=0.08)


def test_competition_weights_sum_to_reward_share() -> None:
    rng = np.random.default_rng(4)
    for _ in range(100):
        n = int(rng.integers(1, 30))
        rates = {i: float(r) for i, r in enumerate(rng.random(n))}
        share = float(rng.uniform(0.05, 1.0))
        got = competition_weights(rates, share, temperature=0.08)
        want = {k: v * share for k, v in ref_softmax(rates, 0.08).items()}
        assert got == pytest.approx(want, rel=1e-12, abs=1e-300)
        assert sum(got.values()) == pytest.approx(share, rel=1e-12)


def test_competition_weights_min_weight() -> None:
    rng = np.random.default_rng(5)
    for _ in range(100):
        n = int(rng.integers(1, 12))
        rates = {i: float(r) for i, r in enumerate(rng.random(n))}
        share = 0.6
        min_weight = float(rng.choice([0.0, 0.05, 0.2, 0.9]))
        soft = ref_softmax(rates, 0.08)
        top = max(soft.values())
        kept = {k: v for k, v in soft.items() if v >= min_weight or v == top}
        total = sum(kept.values())
        want = {k: (kept[k] / total * share if k in kept else 0.0) for k in rates}
        got = competition_weights(rates, share, temperature=0.08, min_weight=min_weight)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-300)
        assert sum(got.values()) == pytest.approx(share)
    # A threshold above every weight still leaves the best model (all of the share).
    assert competition_weights({1: 0.9, 2: 0.1}, 0.4, min_weight=1.0) == {1: 0.4, 2: 0.0}
    with pytest.raises(ValueError):
        competition_weights({1: 0.5}, 0.0)


def test_deduplicate_matches_reference() -> None:
    rng = np.random.default_rng(6)
    for _ in range(200):
        n = int(rng.integers(0, 12))
        uids = [int(u) for u in rng.choice(100, n, replace=False)]
        hashes: dict[int, str | None] = {
            u: (None if rng.random() < 0.15 else f"h{int(rng.integers(0, 4))}") for u in uids
        }
        blocks = {u: int(rng.integers(0, 4)) for u in uids}
        assert deduplicate(uids, hashes, blocks) == ref_deduplicate(uids, hashes, blocks)


def test_deduplicate_keeps_the_earliest_commit() -> None:
    hashes: dict[int, str | None] = {1: "a", 2: "a", 3: "b", 4: "a", 5: None, 6: None}
    blocks = {1: 10, 2: 7, 3: 1, 4: 7, 5: 1, 6: 1}
    # uid 2 and 4 tie on the earliest block: the lower uid keeps the credit. Unknown hashes never clash.
    assert deduplicate([1, 2, 3, 4, 5, 6], hashes, blocks) == ([2, 3, 5, 6], [1, 4])
    with pytest.raises(ValueError):
        deduplicate([1, 7], hashes, blocks)


def test_update_scores_is_the_moving_average() -> None:
    rng = np.random.default_rng(8)
    for _ in range(50):
        n = int(rng.integers(0, 20))
        scores = rng.random(n)
        new = rng.random(n)
        new[rng.random(n) < 0.2] = np.nan
        alpha = float(rng.random())
        before = (scores.copy(), new.copy())
        got = update_scores(scores, new, alpha=alpha)
        want = [
            alpha * s + (1 - alpha) * (0.0 if math.isnan(w) else w) for s, w in zip(scores, new, strict=True)
        ]
        assert got.tolist() == pytest.approx(want, rel=1e-12, abs=1e-15)
        np.testing.assert_array_equal(scores, before[0])
        np.testing.assert_array_equal(new, before[1])
    # Unnormalized: averaging all-ones into zeros gives 1 - alpha everywhere, not 1 / n.
    assert update_scores(np.zeros(4), np.ones(4), alpha=0.9).tolist() == pytest.approx([0.1] * 4)
    # Default alpha is constants.ALPHA (0.9).
    assert update_scores(np.ones(2), np.zeros(2)).tolist() == pytest.approx([0.9, 0.9])


@pytest.mark.parametrize(
    ("scores", "new"),
    [
        (np.zeros(3), np.zeros(4)),
        (np.zeros((2, 2)), np.zeros((2, 2))),
        (np.zeros(2), np.array([1.0, -1.0])),
        (np.zeros(2), np.array([1.0, np.inf])),
    ],
)
def test_update_scores_rejects_bad_input(scores: np.ndarray, new: np.ndarray) -> None:
    with pytest.raises(ValueError):
        update_scores(scores, new, alpha=0.9)


def test_update_scores_rejects_bad_alpha() -> None:
    with pytest.raises(ValueError):
        update_scores(np.zeros(2), np.zeros(2), alpha=1.5)


def test_normalize() -> None:
    assert normalize(np.array([1.0, 3.0, np.nan])).tolist() == [0.25, 0.75, 0.0]
    assert normalize(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    assert normalize(np.array([])).tolist() == []
    with pytest.raises(ValueError):
        normalize(np.array([1.0, -0.5]))


# ---------------------------------------------------------------------------------------------------
# Bootstrap interval.


def ref_bootstrap(
    uids: list[int],
    losses: dict[int, list[float]],
    blocks: dict[int, int],
    epsilon: float | dict[int, float],
    n_boot: int,
    seed: int,
    level: float,
) -> dict[int, tuple[float, float]]:
    """Resample with the same generator draws, recompute each replicate with the reference."""
    n_samples = len(losses[uids[0]])
    picks = np.random.default_rng(seed).integers(0, n_samples, size=(n_boot, n_samples))
    per_uid: dict[int, list[float]] = {u: [] for u in uids}
    for row in picks:
        resampled = {u: [losses[u][int(b)] for b in row] for u in uids}
        for u, r in ref_compute_wins(uids, resampled, blocks, epsilon)[1].items():
            per_uid[u].append(r)
    return {
        u: (ref_quantile(v, (1 - level) / 2), ref_quantile(v, (1 + level) / 2)) for u, v in per_uid.items()
    }


def test_bootstrap_matches_a_reference_resampling() -> None:
    rng = np.random.default_rng(9)
    for k in range(15):
        n = int(rng.integers(2, 6))
        n_samples = int(rng.integers(1, 8))
        case = random_case(rng, n, n_samples, discrete=bool(k % 2), eps_mapping=True)
        got = bootstrap_win_rate_ci(*case, n_boot=30, seed=k, level=0.8)
        want = ref_bootstrap(*case, n_boot=30, seed=k, level=0.8)
        assert got.keys() == want.keys()
        for uid in got:
            assert got[uid] == pytest.approx(want[uid], abs=1e-12)
            assert got[uid][0] <= got[uid][1]


def test_bootstrap_clear_winner_deterministic_and_seeded() -> None:
    rng = np.random.default_rng(10)
    uids = [1, 2, 3, 4]
    losses = {u: [float(x) for x in rng.uniform(2.0, 3.0, 50)] for u in uids}
    losses[1] = [x - 5.0 for x in losses[1]]  # uid 1 beats everyone on every sample
    blocks = {1: 5, 2: 1, 3: 2, 4: 3}
    _, rates = compute_wins(uids, losses, blocks, 0.01)
    ci = bootstrap_win_rate_ci(uids, losses, blocks, 0.01, n_boot=100, seed=3)
    assert rates[1] == 1.0
    assert ci[1][0] <= rates[1] <= ci[1][1]
    assert ci[1] == (1.0, 1.0)
    for uid in uids:
        assert ci[uid][0] <= ci[uid][1]
    assert bootstrap_win_rate_ci(uids, losses, blocks, 0.01, n_boot=100, seed=3) == ci
    other = bootstrap_win_rate_ci(uids, losses, blocks, 0.01, n_boot=100, seed=4)
    assert other != ci  # the others' intervals depend on the draws


def test_bootstrap_degenerate_cases_and_bad_input() -> None:
    assert bootstrap_win_rate_ci([7], {7: [1.0, 2.0]}, {7: 1}) == {7: (1.0, 1.0)}
    assert bootstrap_win_rate_ci([1, 2], {1: [], 2: []}, {1: 1, 2: 2}) == {1: (0.0, 0.0), 2: (0.0, 0.0)}
    assert bootstrap_win_rate_ci([], {}, {}) == {}
    with pytest.raises(ValueError):
        bootstrap_win_rate_ci([1, 2], {1: [1.0], 2: [2.0]}, {1: 1, 2: 2}, n_boot=0)
    with pytest.raises(ValueError):
        bootstrap_win_rate_ci([1, 2], {1: [1.0], 2: [2.0]}, {1: 1, 2: 2}, level=1.0)


# ---------------------------------------------------------------------------------------------------
# Epsilon policy and the whole step.


def test_epsilon_for_uses_each_models_age() -> None:
    decay = LinearDecayEpsilon(value=0.01, minimum=0.002, start_blocks=100, period_blocks=400)
    blocks = {1: 1000, 2: 900, 3: 700, 4: 0, 5: 1200}
    got = epsilon_for([1, 2, 3, 4, 5], blocks, 1000, decay)
    want = {1: 0.01, 2: 0.01, 3: 0.01 - 0.008 * 200 / 400, 4: 0.002, 5: 0.01}
    assert got == pytest.approx(want, rel=1e-12)
    assert epsilon_for([1, 2], blocks, 1000, FixedEpsilon(0.03)) == {1: 0.03, 2: 0.03}


class _AgeEcho:
    """A policy that reveals the age it was given (epsilon = age / 1000)."""

    def epsilon(self, age_blocks: int) -> float:
        return age_blocks / 1000


def test_epsilon_for_passes_ages_and_clamps_future_commits_to_zero() -> None:
    got = epsilon_for([1, 2, 3], {1: 990, 2: 1000, 3: 1005}, 1000, _AgeEcho())
    assert got == {1: 0.01, 2: 0.0, 3: 0.0}


def _competition(share: float, policy: FixedEpsilon | LinearDecayEpsilon) -> Competition:
    return Competition(
        id="t",
        architectures=("LlamaForCausalLM",),
        max_params=10,
        tokenizer="x",
        reward_share=share,
        epsilon_policy=policy,
    )


def test_score_step_composes_the_rules() -> None:
    rng = np.random.default_rng(11)
    policy = LinearDecayEpsilon(value=0.2, minimum=0.0, start_blocks=2, period_blocks=5)
    for _ in range(30):
        n = int(rng.integers(1, 9))
        uids, losses, blocks, _ = random_case(
            rng, n, int(rng.integers(1, 6)), discrete=True, eps_mapping=False
        )
        hashes: dict[int, str | None] = {u: f"h{int(rng.integers(0, 5))}" for u in uids}
        current = 8
        result = score_step(
            uids, losses, blocks, hashes, competition=_competition(0.4, policy), current_block=current
        )

        kept, dropped = ref_deduplicate(uids, hashes, blocks)
        eps = {u: policy.epsilon(max(0, current - blocks[u])) for u in kept}
        # only models that scored at least one sample take part in the match and share the reward
        playing = [u for u in kept if any(math.isfinite(x) for x in losses[u])]
        wins, rates = ref_compute_wins(playing, losses, blocks, eps)
        out = [u for u in kept if u not in playing]
        assert (result.kept, result.duplicates) == (kept, dropped)
        assert result.epsilon == pytest.approx(eps)
        assert result.wins == {**wins, **dict.fromkeys(out, 0)}
        assert result.win_rate == {**rates, **dict.fromkeys(out, 0.0)}
        assert result.ci.keys() == set(kept)
        assert list(result.weights) == uids
        scorable = {u: rates[u] for u in playing}
        soft = ref_softmax(scorable, 0.08) if scorable else {}
        for u in uids:
            assert result.weights[u] == pytest.approx(soft[u] * 0.4 if u in soft else 0.0, rel=1e-12)
        assert sum(result.weights.values()) == pytest.approx(0.4 if scorable else 0.0)


def test_score_step_gives_nothing_to_models_without_a_finite_loss() -> None:
    inf, competition = math.inf, _competition(0.6, FixedEpsilon(0.01))
    lone = score_step([7], {7: [inf, inf]}, {7: 1}, {7: "a"}, competition=competition, current_block=5)
    assert lone.win_rate == {7: 0.0} and lone.weights == {7: 0.0}
    failed = score_step(
        [1, 2], {1: [inf], 2: [math.nan]}, {1: 1, 2: 2}, {1: "a", 2: "b"}, competition=competition,
        current_block=5,
    )  # fmt: skip
    assert failed.weights == {1: 0.0, 2: 0.0}
    mixed = score_step(
        [1, 2], {1: [inf, inf], 2: [3.0, inf]}, {1: 1, 2: 2}, {1: "a", 2: "b"}, competition=competition,
        current_block=5,
    )  # fmt: skip
    assert mixed.weights == {1: 0.0, 2: pytest.approx(0.6)}


def test_score_step_copy_gets_nothing_and_does_not_dilute() -> None:
    uids = [1, 2, 3]
    losses = {1: [1.0, 1.0], 2: [1.0, 1.0], 3: [2.0, 2.0]}
    blocks = {1: 5, 2: 3, 3: 4}
    hashes: dict[int, str | None] = {1: "same", 2: "same", 3: "other"}
    result = score_step(
        uids, losses, blocks, hashes, competition=_competition(1.0, FixedEpsilon()), current_block=9
    )
    assert result.duplicates == [1]
    assert result.weights[1] == 0.0
    assert result.win_rate == {2: 1.0, 3: 0.0}
    assert result.weights[2] > result.weights[3] > 0.0
    assert sum(result.weights.values()) == pytest.approx(1.0)


def test_score_step_broken_models_leave_the_match() -> None:
    """The issue's case: three scored models A > B > C on every sample, plus two that could not be
    scored. Kept as inf opponents they lift B from 0.0019 to 0.042 of the weight (22x); out of the
    match, every weight is exactly what it is without them."""
    inf, competition = math.inf, _competition(1.0, FixedEpsilon(0.0))
    losses: dict[int, list[float]] = {0: [1.0] * 4, 1: [2.0] * 4, 2: [3.0] * 4}
    blocks = {0: 1, 1: 2, 2: 3}
    hashes: dict[int, str | None] = {0: "a", 1: "b", 2: "c"}
    alone = score_step([0, 1, 2], losses, blocks, hashes, competition=competition, current_block=9)
    assert alone.weights[1] == pytest.approx(0.0019, abs=5e-5)
    broken = {10: [inf] * 4, 11: [inf] * 4}
    crowd = score_step(
        [0, 1, 2, 10, 11], {**losses, **broken}, {**blocks, 10: 4, 11: 5}, {**hashes, 10: "x", 11: "y"},
        competition=competition, current_block=9,
    )  # fmt: skip
    assert {uid: crowd.weights[uid] for uid in (0, 1, 2)} == alone.weights
    assert crowd.weights[10] == crowd.weights[11] == 0.0
    assert crowd.win_rate == {0: 1.0, 1: 0.5, 2: 0.0, 10: 0.0, 11: 0.0}
    assert crowd.wins[10] == crowd.wins[11] == 0
    # an inf sample of a scored model still counts as lost: B's inf on sample 0 loses it to C there
    partial = score_step(
        [0, 1, 2], {**losses, 1: [inf, 2.0, 2.0, 2.0]}, blocks, hashes, competition=competition,
        current_block=9,
    )  # fmt: skip
    assert partial.wins == {0: 8, 1: 3, 2: 1}
