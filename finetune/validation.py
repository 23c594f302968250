"""The validator's scoring rules (design.md §4, steps 4-5), as small pure functions.

The per-sample losses these rules start from come from :func:`compute_losses` (contract, implemented
in :mod:`finetune.losses`: batched, response positions only). Read :func:`score_step` top to bottom
for the whole mechanism: deduplicate identical models, give each model its epsilon from the
competition's policy, count pairwise wins per sample, turn win rates into weights with a softmax
scaled by the competition's reward share. :func:`update_scores` folds a step's
weights into the validator's moving average and :func:`normalize` is applied only when setting weights.

Edge cases, decided once for every function here:

- Losses are compared as float64 (Python ``float`` semantics): ``inf``/``nan`` behave exactly as plain
  float comparisons do (``nan`` never wins and is never beaten; ``inf * (1 - eps)`` is ``inf``).
- Equal commit blocks: neither model gets the epsilon advantage.
- A lone model (no opponent) has win rate 1.0, whatever the number of samples: it is unopposed.
- No samples (B == 0) with two or more models: 0 wins and win rate 0.0 for every model.
- Epsilon must lie in [0, 1) (what the competitions' policies allow); anything else is a ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from constants import ALPHA, TEMPERATURE, TIMESTAMP_EPSILON
from constants.competitions import Competition, EpsilonPolicy
from finetune.losses import compute_losses

__all__ = [
    "StepResult",
    "bootstrap_win_rate_ci",
    "competition_weights",
    "compute_losses",
    "compute_wins",
    "deduplicate",
    "epsilon_for",
    "normalize",
    "score_step",
    "update_scores",
    "win_rate_weights",
]

Epsilon = float | Mapping[int, float]
"""One advantage for every model, or the advantage of each uid when it is the earlier model."""

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _as_arrays(
    uids: Sequence[int],
    losses_per_uid: Mapping[int, Sequence[float]],
    uid_to_block: Mapping[int, int],
    epsilon: Epsilon,
) -> tuple[FloatArray, IntArray, FloatArray]:
    """Losses (n, B), blocks (n,) and epsilons (n,) in the order of ``uids``, validated."""
    if len(set(uids)) != len(uids):
        raise ValueError(f"uids must be distinct, got {list(uids)}")
    for uid in uids:
        if uid not in losses_per_uid:
            raise ValueError(f"no losses for uid {uid}")
        if uid_to_block.get(uid) is None:
            raise ValueError(f"no commit block for uid {uid}")
    rows = [np.asarray(losses_per_uid[uid], dtype=np.float64) for uid in uids]
    if any(row.ndim != 1 for row in rows):
        raise ValueError("each uid's losses must be a flat sequence")
    lengths = {row.shape[0] for row in rows}
    if len(lengths) > 1:
        raise ValueError(f"every uid needs the same number of losses, got lengths {sorted(lengths)}")
    n_samples = lengths.pop() if lengths else 0
    losses = np.stack(rows) if rows else np.empty((0, n_samples), dtype=np.float64)
    blocks = np.array([int(uid_to_block[uid]) for uid in uids], dtype=np.int64)
    if isinstance(epsilon, Mapping):
        missing = [uid for uid in uids if uid not in epsilon]
        if missing:
            raise ValueError(f"no epsilon for uids {missing}")
        eps = np.array([float(epsilon[uid]) for uid in uids], dtype=np.float64)
    else:
        eps = np.full(len(uids), float(epsilon), dtype=np.float64)
    if not np.all((eps >= 0.0) & (eps < 1.0)):
        raise ValueError(f"epsilon must be in [0, 1), got {eps[~((eps >= 0.0) & (eps < 1.0))].tolist()}")
    return losses, blocks, eps


def _wins(losses: FloatArray, blocks: IntArray, eps: FloatArray, *, per_sample: bool) -> IntArray:
    """Wins of each model: shape (n,) in total, or (n, B) per sample when ``per_sample``.

    Models are sorted by block, so for model k the later models are a contiguous suffix (k's loss is
    scaled by 1 - eps_k against them), the earlier ones a prefix (their losses are scaled), and the
    same-block ones a slice in between (no scaling). One loop over models, each comparing one row with
    the (n, B) matrix; comparing a model with itself is never a win (``x < x`` is False, even for nan).
    """
    n, n_samples = losses.shape
    order = np.argsort(blocks, kind="stable")
    sorted_blocks = blocks[order]
    plain = losses[order]
    with np.errstate(all="ignore"):
        scaled = plain * (1.0 - eps[order])[:, None]
    first = np.searchsorted(sorted_blocks, sorted_blocks, side="left")
    after = np.searchsorted(sorted_blocks, sorted_blocks, side="right")
    out: IntArray = np.zeros((n, n_samples) if per_sample else (n,), dtype=np.int64)
    with np.errstate(all="ignore"):
        for k in range(n):
            a, z = int(first[k]), int(after[k])
            against_later = scaled[k] < plain[z:]
            against_earlier = plain[k] < scaled[:a]
            against_same = plain[k] < plain[a:z]
            if per_sample:
                out[order[k]] = against_later.sum(0) + against_earlier.sum(0) + against_same.sum(0)
            else:
                out[order[k]] = (
                    np.count_nonzero(against_later)
                    + np.count_nonzero(against_earlier)
                    + np.count_nonzero(against_same)
                )
    return out


def _rates(wins: NDArray[np.int64], n_models: int, n_samples: int) -> NDArray[np.float64]:
    """Wins over matches, with the module's conventions for a lone model and for B == 0."""
    if n_models == 1:
        return np.ones(wins.shape, dtype=np.float64)
    if n_samples == 0:
        return np.zeros(wins.shape, dtype=np.float64)
    return wins / float((n_models - 1) * n_samples)


def compute_wins(
    uids: Sequence[int],
    losses_per_uid: Mapping[int, Sequence[float]],
    uid_to_block: Mapping[int, int],
    epsilon: Epsilon = TIMESTAMP_EPSILON,
) -> tuple[dict[int, int], dict[int, float]]:
    """Pairwise wins per sample, and win rates.

    For every ordered pair (i, j), i != j, and sample b, i wins when
    ``loss_i * (1 - eps_i if block_i < block_j else 1) < loss_j * (1 - eps_j if block_j < block_i else 1)``.
    ``wins[i]`` counts those wins; ``win_rate[i] = wins[i] / ((n - 1) * B)`` (1.0 for a lone model,
    0.0 for all when B == 0).
    """
    losses, blocks, eps = _as_arrays(uids, losses_per_uid, uid_to_block, epsilon)
    n, n_samples = losses.shape
    wins = _wins(losses, blocks, eps, per_sample=False)
    rates = _rates(wins, n, n_samples)
    return (
        {uid: int(w) for uid, w in zip(uids, wins, strict=True)},
        {uid: float(r) for uid, r in zip(uids, rates, strict=True)},
    )


def bootstrap_win_rate_ci(
    uids: Sequence[int],
    losses_per_uid: Mapping[int, Sequence[float]],
    uid_to_block: Mapping[int, int],
    epsilon: Epsilon = TIMESTAMP_EPSILON,
    *,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.9,
) -> dict[int, tuple[float, float]]:
    """Percentile interval of each win rate under a paired bootstrap over samples.

    Each replicate draws B sample indices with replacement, the same indices for every model, and
    recomputes the win rates; the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles.
    Deterministic for a given ``seed``. For logs only, never used in weights. A lone model or B == 0
    gives the degenerate interval (rate, rate).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    losses, blocks, eps = _as_arrays(uids, losses_per_uid, uid_to_block, epsilon)
    n, n_samples = losses.shape
    if n == 1 or n_samples == 0:
        point = _rates(np.zeros(n, dtype=np.int64), n, n_samples)
        return {uid: (float(r), float(r)) for uid, r in zip(uids, point, strict=True)}
    per_sample = _wins(losses, blocks, eps, per_sample=True)  # (n, B)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_samples, size=(n_boot, n_samples))
    flat = (picks + n_samples * np.arange(n_boot)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_boot * n_samples).reshape(n_boot, n_samples)
    rates = _rates(counts @ per_sample.T, n, n_samples)  # (n_boot, n)
    low, high = np.quantile(rates, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    return {uid: (float(lo), float(hi)) for uid, lo, hi in zip(uids, low, high, strict=True)}


def epsilon_for(
    uids: Sequence[int], uid_to_block: Mapping[int, int], current_block: int, policy: EpsilonPolicy
) -> dict[int, float]:
    """Each uid's epsilon from the competition's policy, given its age ``current_block - block``
    (an age below 0, a commit seen ahead of our block, counts as 0)."""
    return {uid: float(policy.epsilon(max(0, current_block - int(uid_to_block[uid])))) for uid in uids}


def win_rate_weights(win_rate: Mapping[int, float], *, temperature: float = TEMPERATURE) -> dict[int, float]:
    """``softmax(win_rate / temperature)`` over the given uids (shifted by the maximum, so stable);
    the weights sum to 1. Temperature must be > 0 and win rates finite."""
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not win_rate:
        return {}
    uids = list(win_rate)
    logits = np.array([float(win_rate[uid]) for uid in uids], dtype=np.float64) / temperature
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"win rates must be finite, got {dict(win_rate)}")
    exp = np.exp(logits - logits.max())
    weights = exp / exp.sum()
    return {uid: float(w) for uid, w in zip(uids, weights, strict=True)}


def competition_weights(
    win_rate: Mapping[int, float],
    reward_share: float,
    *,
    temperature: float = TEMPERATURE,
    min_weight: float = 0.0,
) -> dict[int, float]:
    """Softmax weights times the competition's reward share.

    With ``min_weight`` > 0, a uid whose softmax weight (its fraction within the competition, before
    the share) is strictly below it gets 0, except the uids holding the highest weight, which are always
    kept; the rest are renormalized so the competition's weights still sum to ``reward_share``.
    """
    if not 0.0 < reward_share <= 1.0:
        raise ValueError(f"reward_share must be in (0, 1], got {reward_share}")
    if not 0.0 <= min_weight <= 1.0:
        raise ValueError(f"min_weight must be in [0, 1], got {min_weight}")
    soft = win_rate_weights(win_rate, temperature=temperature)
    if not soft:
        return {}
    uids = list(soft)
    weights = np.array([soft[uid] for uid in uids], dtype=np.float64)
    keep = (weights >= min_weight) | (weights == weights.max())
    weights = np.where(keep, weights, 0.0)
    weights = weights / weights.sum() * reward_share
    return {uid: float(w) for uid, w in zip(uids, weights, strict=True)}


def deduplicate(
    uids: Sequence[int], model_hash_per_uid: Mapping[int, str | None], uid_to_block: Mapping[int, int]
) -> tuple[list[int], list[int]]:
    """Split uids into (kept, dropped): among uids with identical content hash only the earliest commit
    (lowest block; tie: lowest uid) is kept. A hash of None (unknown) is never a duplicate. Both lists
    keep the order of ``uids``."""
    owner: dict[str, int] = {}
    for uid in uids:
        if uid not in model_hash_per_uid:
            raise ValueError(f"no model hash for uid {uid}")
        content = model_hash_per_uid[uid]
        if content is None:
            continue
        current = owner.get(content)
        if current is None or (uid_to_block[uid], uid) < (uid_to_block[current], current):
            owner[content] = uid
    winners = set(owner.values())
    kept = [uid for uid in uids if model_hash_per_uid[uid] is None or uid in winners]
    dropped = [uid for uid in uids if not (model_hash_per_uid[uid] is None or uid in winners)]
    return kept, dropped


def _check_weight_vector(name: str, values: NDArray[np.float64]) -> NDArray[np.float64]:
    """``values`` as float64 with NaN read as 0; ValueError on a negative or infinite entry."""
    raw = np.asarray(values, dtype=np.float64)
    clean: NDArray[np.float64] = np.where(np.isnan(raw), 0.0, raw)
    if np.any(np.isinf(clean)) or np.any(clean < 0.0):
        raise ValueError(f"{name} must be finite and >= 0 (NaN is read as 0)")
    return clean


def update_scores(
    scores: NDArray[np.float64], new_weights: NDArray[np.float64], *, alpha: float = ALPHA
) -> NDArray[np.float64]:
    """Moving average ``alpha * scores + (1 - alpha) * new_weights``, a new array (inputs untouched).

    NaN in either input is read as 0; shapes must be equal and 1-D. The result is NOT normalized: the
    validator keeps the raw average and calls :func:`normalize` only when it sets weights.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    old = np.asarray(scores)
    new = np.asarray(new_weights)
    if old.ndim != 1 or old.shape != new.shape:
        raise ValueError(f"scores and new_weights must be 1-D of equal shape, got {old.shape}, {new.shape}")
    result: NDArray[np.float64] = alpha * _check_weight_vector("scores", old) + (
        1.0 - alpha
    ) * _check_weight_vector("new_weights", new)
    return result


def normalize(weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weights divided by their sum (sum 1), for setting weights on chain; NaN read as 0. All zero (or
    empty) stays all zero: there is nothing to distribute, and the caller decides what to set."""
    clean = _check_weight_vector("weights", np.asarray(weights))
    total = clean.sum()
    if total <= 0.0:
        return np.zeros_like(clean)
    result: NDArray[np.float64] = clean / total
    return result


def _any_finite(losses: Sequence[float]) -> bool:
    return bool(np.isfinite(np.asarray(losses, dtype=np.float64)).any())


@dataclass(frozen=True)
class StepResult:
    """One competition's scoring step. ``wins``, ``win_rate``, ``epsilon`` and ``ci`` cover the kept
    uids only (a kept model with no finite loss took no part in the match: 0 wins, win rate 0, interval
    (0, 0)); ``weights`` covers every uid (duplicates and models with no finite loss 0.0) and sums to
    the reward share when at least one model scored a sample (else to 0)."""

    kept: list[int]
    duplicates: list[int]
    epsilon: dict[int, float]
    wins: dict[int, int]
    win_rate: dict[int, float]
    ci: dict[int, tuple[float, float]]
    weights: dict[int, float]


def score_step(
    uids: Sequence[int],
    losses_per_uid: Mapping[int, Sequence[float]],
    uid_to_block: Mapping[int, int],
    model_hash_per_uid: Mapping[int, str | None],
    *,
    competition: Competition,
    current_block: int,
    temperature: float = TEMPERATURE,
    min_weight: float = 0.0,
    n_boot: int = 200,
    seed: int = 0,
) -> StepResult:
    """The mechanism for one competition, given every evaluated model's per-sample losses."""
    # 1. Identical content counts once: the earliest commit keeps the credit, copies get weight 0
    #    and take no part in the comparison (they would otherwise change everyone's match count).
    kept, duplicates = deduplicate(uids, model_hash_per_uid, uid_to_block)
    # 2. A model with no finite loss (crashed, timed out, could not load) leaves the match, as in the
    #    seed (an empty loss list): as an opponent that loses every sample it would lift every other
    #    win rate towards 1 and flatten the softmax, so registering broken models would pay a weak
    #    miner. A single inf sample of an otherwise scored model still counts as a lost sample.
    scorable = [uid for uid in kept if _any_finite(losses_per_uid[uid])]
    # 3. Each model's advantage when it is the earlier one, from the competition's policy and its age.
    epsilon = epsilon_for(kept, uid_to_block, current_block, competition.epsilon_policy)
    # 4. Pairwise wins on every sample among the scorable models, and win rates; a bootstrap interval
    #    for the logs. A model out of the match has 0 wins and win rate 0.
    wins, win_rate = compute_wins(scorable, losses_per_uid, uid_to_block, epsilon)
    ci = bootstrap_win_rate_ci(scorable, losses_per_uid, uid_to_block, epsilon, n_boot=n_boot, seed=seed)
    # 5. Softmax of win rates within the competition, scaled to its reward share, over the scorable
    #    models: one with no finite loss earns nothing, even alone or when every model failed.
    weights: dict[int, float] = {}
    if scorable:
        weights = competition_weights(
            win_rate, competition.reward_share, temperature=temperature, min_weight=min_weight
        )
    return StepResult(
        kept=kept,
        duplicates=duplicates,
        epsilon=epsilon,
        wins={uid: wins.get(uid, 0) for uid in kept},
        win_rate={uid: win_rate.get(uid, 0.0) for uid in kept},
        ci={uid: ci.get(uid, (0.0, 0.0)) for uid in kept},
        weights={uid: weights.get(uid, 0.0) for uid in uids},
    )
