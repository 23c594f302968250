"""Wins per task, combined by the tasks' weights: the mechanism of a step judged on several tasks.

For every task, each ordered pair of models (i, j), i != j, meets on every sample of the task:

- a **loss** task (lower is better): i wins when its loss, times ``1 - eps_i`` if i committed at an
  earlier block than j, is strictly below j's loss, likewise scaled if j is the earlier one. This is
  ``finetune.validation.compute_wins``'s rule, unchanged; ``inf``/``nan`` compare as plain floats.
- a **score** task (higher is better: multiple-choice accuracy, rules met): i wins when its score is
  higher, or equal and i committed at an earlier block (the tie goes to the earlier commit, which is
  what the epsilon does for losses). ``nan`` (not scored: the model crashed, hung, generated nothing)
  never wins and loses to every scored value.

A model with no finite value in a task (it crashed, hung or could not load for that task) leaves that
task's match, as in ``score_step``: it has 0 wins and win rate 0 there, and the others meet only each
other (``m`` models in the task's match). A model's task win rate is its wins over its matches,
``(m - 1) * B_t``; its combined win rate is the task-weighted sum of its task win rates (weights sum to
1, so it stays in [0, 1]). Then, as for one task: softmax at the temperature, times the reward share,
over the models that scored at least one sample of some task. Identical models count once (earliest
commit). With a single task this is exactly :func:`finetune.validation.score_step` (same wins, win
rates, interval and weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from constants import TEMPERATURE
from constants.competitions import EpsilonPolicy
from constants.tasks import EvalTask, check_tasks
from finetune.validation import competition_weights, deduplicate, epsilon_for

__all__ = [
    "TaskStepResult",
    "combine_win_rates",
    "loss_wins_per_sample",
    "score_tasks",
    "score_wins_per_sample",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def loss_wins_per_sample(losses: FloatArray, blocks: IntArray, eps: FloatArray) -> IntArray:
    """Wins (n, B) of each model on each sample, lower loss winning, the earlier commit's loss scaled
    by ``1 - eps`` against later ones (``compute_wins``'s rule)."""
    n, n_samples = losses.shape
    out: IntArray = np.zeros((n, n_samples), dtype=np.int64)
    with np.errstate(all="ignore"):
        for k in range(n):
            earlier = blocks[k] < blocks  # k is the earlier one: k's loss is scaled
            later = blocks < blocks[k]  # the opponent is the earlier one: its loss is scaled
            mine = np.where(earlier[:, None], losses[k] * (1.0 - eps[k]), losses[k])
            theirs = np.where(later[:, None], losses * (1.0 - eps)[:, None], losses)
            beats = mine < theirs
            beats[k] = False
            out[k] = beats.sum(0)
    return out


def score_wins_per_sample(scores: FloatArray, blocks: IntArray) -> IntArray:
    """Wins (n, B) of each model on each sample, higher score winning, a tie to the earlier commit;
    ``nan`` never wins and loses to any scored value."""
    n, n_samples = scores.shape
    out: IntArray = np.zeros((n, n_samples), dtype=np.int64)
    missing = np.isnan(scores)
    with np.errstate(all="ignore"):
        for k in range(n):
            earlier = (blocks[k] < blocks)[:, None]
            beats = (scores[k] > scores) | ((scores[k] == scores) & earlier) | missing
            beats &= ~missing[k]
            beats[k] = False
            out[k] = beats.sum(0)
    return out


def _rates(wins: NDArray[np.int64], n_models: int, n_samples: int) -> FloatArray:
    """Wins over matches; 1.0 for a lone model, 0.0 for all when a task has no samples."""
    if n_models == 1:
        return np.ones(wins.shape, dtype=np.float64)
    if n_samples == 0:
        return np.zeros(wins.shape, dtype=np.float64)
    rates: FloatArray = wins / float((n_models - 1) * n_samples)
    return rates


def combine_win_rates(
    task_rates: Mapping[str, Mapping[int, float]], weights: Mapping[str, float]
) -> dict[int, float]:
    """The task-weighted sum of each uid's task win rates (every task must rate the same uids)."""
    uid_sets = {frozenset(rates) for rates in task_rates.values()}
    if len(uid_sets) > 1:
        raise ValueError("every task must rate the same uids")
    uids = next(iter(task_rates.values())).keys() if task_rates else []
    return {uid: math.fsum(weights[name] * rates[uid] for name, rates in task_rates.items()) for uid in uids}


@dataclass(frozen=True)
class TaskStepResult:
    """One competition's step judged on tasks. ``wins`` (summed over tasks), ``win_rate`` (combined),
    ``epsilon`` and ``ci`` cover the kept uids; ``task_*`` give each task's numbers for the kept uids
    (``task_mean``: the mean of a uid's scored values, ``nan`` if none); ``weights`` covers every uid
    and sums to the reward share when some model scored a sample (else to 0)."""

    kept: list[int]
    duplicates: list[int]
    epsilon: dict[int, float]
    wins: dict[int, int]
    win_rate: dict[int, float]
    ci: dict[int, tuple[float, float]]
    weights: dict[int, float]
    task_wins: dict[str, dict[int, int]]
    task_win_rate: dict[str, dict[int, float]]
    task_mean: dict[str, dict[int, float]]


def _matrix(name: str, uids: Sequence[int], values: Mapping[int, Sequence[float]]) -> FloatArray:
    missing = [uid for uid in uids if uid not in values]
    if missing:
        raise ValueError(f"task {name!r}: no values for uids {missing}")
    rows = [np.asarray(values[uid], dtype=np.float64) for uid in uids]
    if any(row.ndim != 1 for row in rows):
        raise ValueError(f"task {name!r}: each uid's values must be a flat sequence")
    lengths = {row.shape[0] for row in rows}
    if len(lengths) > 1:
        raise ValueError(f"task {name!r}: every uid needs the same number of values, got {sorted(lengths)}")
    return np.stack(rows) if rows else np.empty((0, 0), dtype=np.float64)


@dataclass(frozen=True)
class _TaskMatch:
    """One task's match: its weight, the rows (of the kept uids) of the models in it, and their wins
    on every sample (m, B)."""

    weight: float
    rows: IntArray
    wins: IntArray


def _bootstrap(
    matches: Sequence[_TaskMatch],
    n: int,
    point: FloatArray,
    *,
    n_boot: int,
    seed: int,
    level: float,
) -> tuple[FloatArray, FloatArray]:
    """Percentile interval of the combined win rate, resampling each task's samples (paired over the
    models in that task's match), tasks in order from one generator: with one task,
    ``bootstrap_win_rate_ci``'s draws over the models in the match. A task whose match has fewer than
    two models, or no samples, adds its point rate to every replicate and draws nothing."""
    if all(match.rows.shape[0] < 2 or match.wins.shape[1] == 0 for match in matches):
        return point, point
    rng = np.random.default_rng(seed)
    combined = np.zeros((n_boot, n), dtype=np.float64)
    for match in matches:
        m, n_samples = match.wins.shape
        if m == 0:
            continue
        if m == 1 or n_samples == 0:
            combined[:, match.rows] += match.weight * _rates(match.wins.sum(1), m, n_samples)
            continue
        picks = rng.integers(0, n_samples, size=(n_boot, n_samples))
        flat = (picks + n_samples * np.arange(n_boot)[:, None]).ravel()
        counts = np.bincount(flat, minlength=n_boot * n_samples).reshape(n_boot, n_samples)
        combined[:, match.rows] += match.weight * _rates(counts @ match.wins.T, m, n_samples)
    low, high = np.quantile(combined, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    return low, high


def score_tasks(
    uids: Sequence[int],
    values_per_task: Mapping[str, Mapping[int, Sequence[float]]],
    uid_to_block: Mapping[int, int],
    model_hash_per_uid: Mapping[int, str | None],
    *,
    tasks: Sequence[EvalTask],
    reward_share: float,
    epsilon_policy: EpsilonPolicy,
    current_block: int,
    temperature: float = TEMPERATURE,
    min_weight: float = 0.0,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.9,
) -> TaskStepResult:
    """The mechanism for one competition judged on ``tasks``; ``values_per_task[task.name][uid]`` are
    the uid's per-sample values of that task (losses, or scores when ``task.method.higher_is_better``)."""
    tasks = check_tasks(tasks)
    if set(values_per_task) != {task.name for task in tasks}:
        raise ValueError(
            f"values are for tasks {sorted(values_per_task)}, expected {[t.name for t in tasks]}"
        )
    if len(set(uids)) != len(uids):
        raise ValueError(f"uids must be distinct, got {list(uids)}")
    kept, duplicates = deduplicate(uids, model_hash_per_uid, uid_to_block)
    epsilon = epsilon_for(kept, uid_to_block, current_block, epsilon_policy)
    blocks = np.array([int(uid_to_block[uid]) for uid in kept], dtype=np.int64)
    eps = np.array([epsilon[uid] for uid in kept], dtype=np.float64)
    if not np.all((eps >= 0.0) & (eps < 1.0)):
        raise ValueError(f"epsilon must be in [0, 1), got {eps.tolist()}")
    n = len(kept)
    task_wins: dict[str, dict[int, int]] = {}
    task_rates: dict[str, dict[int, float]] = {}
    task_mean: dict[str, dict[int, float]] = {}
    matches: list[_TaskMatch] = []
    scored: set[int] = set()
    for task in tasks:
        values = _matrix(task.name, kept, values_per_task[task.name])
        n_samples = values.shape[1] if n else 0
        values = values.reshape(n, n_samples)
        usable = np.isfinite(values)
        # A model with no finite value in this task (crashed, hung, could not load) leaves this task's
        # match, as score_step does for one task: an opponent that loses every sample would lift the
        # others' win rates and flatten the softmax. It has 0 wins and win rate 0 in this task.
        rows = np.flatnonzero(usable.any(1)).astype(np.int64)
        inside = values[rows]
        if task.method.higher_is_better:
            wins = score_wins_per_sample(inside, blocks[rows])
        else:
            wins = loss_wins_per_sample(inside, blocks[rows], eps[rows])
        matches.append(_TaskMatch(task.weight, rows, wins))
        totals = np.zeros(n, dtype=np.int64)
        totals[rows] = wins.sum(1)
        rates = np.zeros(n, dtype=np.float64)
        if rows.shape[0]:
            rates[rows] = _rates(wins.sum(1), rows.shape[0], n_samples)
        task_wins[task.name] = {uid: int(w) for uid, w in zip(kept, totals, strict=True)}
        task_rates[task.name] = {uid: float(r) for uid, r in zip(kept, rates, strict=True)}
        task_mean[task.name] = {
            uid: float(values[row][usable[row]].mean()) if usable[row].any() else math.nan
            for row, uid in enumerate(kept)
        }
        scored |= {kept[int(row)] for row in rows}
    win_rate = combine_win_rates(task_rates, {task.name: task.weight for task in tasks}) if n else {}
    point = np.array([win_rate[uid] for uid in kept], dtype=np.float64)
    low, high = _bootstrap(matches, n, point, n_boot=n_boot, seed=seed, level=level)
    weights: dict[int, float] = {}
    scorable = {uid: win_rate[uid] for uid in kept if uid in scored}
    if scorable:
        weights = competition_weights(scorable, reward_share, temperature=temperature, min_weight=min_weight)
    return TaskStepResult(
        kept=kept,
        duplicates=duplicates,
        epsilon=epsilon,
        wins={uid: sum(task_wins[t.name][uid] for t in tasks) for uid in kept},
        win_rate=win_rate,
        ci={uid: (float(lo), float(hi)) for uid, lo, hi in zip(kept, low, high, strict=True)},
        weights={uid: weights.get(uid, 0.0) for uid in uids},
        task_wins=task_wins,
        task_win_rate=task_rates,
        task_mean=task_mean,
    )
