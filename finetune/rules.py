"""The rules of a validator step around the pairwise mechanism (:func:`finetune.validation.score_step`).

Each is a pure function keyed by hotkey (a uid may change hands), so each is tested on its own and
:meth:`finetune.validator.validator.Validator.step` keeps only I/O and orchestration. In the order a
step applies them:

1. :func:`sync_window`: the competition's sync block (the latest *finalized* block that is a multiple
   of its ``sync_interval_blocks``) seeds the samples, so validators stepping at different blocks of
   one window evaluate the same data.
2. :func:`split_eligible`: only models committed at least ``eval_delay_blocks`` before the sync block
   take part; the others wait, with the reason.
3. :func:`choose_models`: the kept models of the last step, the best by score, then models this
   validator has not evaluated yet, consensus leaders first.
4. ``score_step`` (in :mod:`finetune.validation`): this step's weights.
5. :func:`consensus_start` and :func:`window_scores` (:func:`step_scores` once per window): a
   competition's first scored step starts its moving average from the chain's consensus; the average
   moves once per sync window; :func:`window_losses` keeps the per-sample losses of every model
   evaluated in the window (the samples are the same), so each step scores the union of the window's
   evaluations and the result does not depend on how they were split into steps; a step where nothing
   scored changes nothing.
6. :func:`weight_targets` and :func:`chain_weights`: what is sent to the chain, with a competition not
   yet scored by this validator following consensus, and enough non-zero entries for the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from constants import ALPHA
from constants.competitions import Competition
from finetune.validation import update_scores

__all__ = [
    "U16_MAX",
    "Candidate",
    "SyncWindow",
    "WindowLosses",
    "chain_weights",
    "choose_models",
    "consensus_start",
    "samples_digest",
    "split_eligible",
    "step_scores",
    "sync_window",
    "weight_targets",
    "window_losses",
    "window_scores",
]

U16_MAX = 65535
"""The chain stores weights as u16 scaled to the largest: anything under ``max / 65535 / 2`` becomes 0."""


# ---- 1-2. the sync window and who is old enough for it ---------------------------------------------
@dataclass(frozen=True)
class SyncWindow:
    """One competition's evaluation window: its sync block and the evaluation delay."""

    sync_block: int
    eval_delay_blocks: int

    @property
    def cutoff(self) -> int:
        """The last commit block that takes part in this window."""
        return self.sync_block - self.eval_delay_blocks


def sync_window(finalized_block: int, competition: Competition) -> SyncWindow:
    """The window of ``competition`` at ``finalized_block``: the latest multiple of its sync interval at
    or below that block (a finalized block's hash can no longer change, so every validator reads the
    same one)."""
    if finalized_block < 0:
        raise ValueError(f"finalized block must be >= 0, got {finalized_block}")
    interval = competition.sync_interval_blocks
    return SyncWindow(finalized_block // interval * interval, competition.eval_delay_blocks)


def split_eligible(commit_blocks: Mapping[str, int], window: SyncWindow) -> tuple[list[str], dict[str, str]]:
    """(eligible hotkeys in the order given, {waiting hotkey: reason}): a model takes part when it was
    committed at least ``eval_delay_blocks`` before the sync block."""
    eligible = [hk for hk, block in commit_blocks.items() if block <= window.cutoff]
    waiting: dict[str, str] = {}
    for hotkey, block in commit_blocks.items():
        if block <= window.cutoff:
            continue
        before = window.sync_block - block
        when = (
            f"committed {before} blocks before the sync block {window.sync_block}"
            if before >= 0
            else f"committed {-before} blocks after the sync block {window.sync_block}"
        )
        waiting[hotkey] = f"waiting: {when}, needs {window.eval_delay_blocks}"
    return eligible, waiting


# ---- 3. who is evaluated ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A hotkey's model that may be evaluated in this step."""

    block: int
    """Block of its commitment."""
    model: str
    """What the model is (commitment and block): a hotkey whose ``model`` differs from the one this
    validator last evaluated has a new model."""
    consensus: float = 0.0
    """The chain's consensus for the hotkey's uid (a fresh validator starts from what the chain ranks)."""
    incentive: float = 0.0


def choose_models(
    candidates: Mapping[str, Candidate],
    *,
    kept: Sequence[str],
    scores: Mapping[str, float],
    evaluated: Mapping[str, str],
    sample_min: int,
    max_new: int,
) -> tuple[list[str], dict[str, str]]:
    """(the hotkeys evaluated in this step, {every other candidate: why not}).

    In order: the kept models of the last step; the best ``sample_min`` by score (so one bad step, e.g.
    a worker crash, does not drop a good model for good); then up to ``max_new`` models this validator
    has not evaluated (never, or not since they changed), highest consensus first, then incentive,
    earliest commit, hotkey. After a lost state nothing counts as evaluated, so every model is
    evaluated again, ``max_new`` per step.
    """
    if sample_min < 0 or max_new < 0:
        raise ValueError(f"sample_min and max_new must be >= 0, got {sample_min}, {max_new}")
    chosen: list[str] = []
    for hotkey in kept:
        if hotkey in candidates and hotkey not in chosen:
            chosen.append(hotkey)
    by_score = sorted(
        (hk for hk in candidates if scores.get(hk, 0.0) > 0.0), key=lambda hk: (-scores[hk], hk)
    )
    for hotkey in by_score[:sample_min]:
        if hotkey not in chosen:
            chosen.append(hotkey)
    new = sorted(
        (hk for hk, c in candidates.items() if hk not in chosen and evaluated.get(hk) != c.model),
        key=lambda hk: (-candidates[hk].consensus, -candidates[hk].incentive, candidates[hk].block, hk),
    )
    chosen.extend(new[:max_new])
    queued = set(new[max_new:])
    skipped = {
        hk: (
            f"not evaluated this step: new, queued behind {max_new} other new models"
            if hk in queued
            else f"not evaluated this step: evaluated before and not among the best {sample_min}"
        )
        for hk in candidates
        if hk not in chosen
    }
    return chosen, skipped


# ---- 5. scores ---------------------------------------------------------------------------------------
def consensus_start(
    consensus: Mapping[str, float], members: Collection[str], reward_share: float
) -> dict[str, float]:
    """A competition's scores taken from the chain's consensus (the seed copies ``metagraph.C``): each
    member's consensus, rescaled so the members sum to the competition's reward share. Empty when the
    chain gives the members nothing (nothing to follow)."""
    values = {hk: max(0.0, float(consensus.get(hk, 0.0))) for hk in members}
    values = {hk: v if np.isfinite(v) else 0.0 for hk, v in values.items()}
    total = sum(values.values())
    if total <= 0.0:
        return {}
    return {hk: v / total * reward_share for hk, v in values.items()}


def step_scores(
    scores: Mapping[str, float],
    step_weights: Mapping[str, float],
    *,
    members: Collection[str],
    elsewhere: Collection[str] = (),
    changed: Collection[str] = (),
    alpha: float = ALPHA,
) -> dict[str, float]:
    """Every hotkey's score after one step of a competition (a new mapping; inputs untouched).

    Nothing scored (no positive step weight): nothing changes. Otherwise the moving average
    ``alpha * old + (1 - alpha) * weight`` applies to the competition's ``members`` and to every scored
    hotkey whose model is now in no competition (rejected, evicted, withdrawn), each towards its weight
    in this step (0 if it was not evaluated); hotkeys in another competition (``elsewhere``) and those
    whose model changed while the step ran (``changed``: the result belongs to the old model) keep
    their score.
    """
    if not any(w > 0.0 for w in step_weights.values()):
        return dict(scores)
    frozen = set(elsewhere) | set(changed)
    moving = sorted((set(members) | set(scores)) - frozen)
    old = np.array([scores.get(hk, 0.0) for hk in moving], dtype=np.float64)
    new = np.array([0.0 if hk in frozen else step_weights.get(hk, 0.0) for hk in moving])
    updated = update_scores(old, new, alpha=alpha)
    result = dict(scores)
    result.update({hk: float(s) for hk, s in zip(moving, updated, strict=True)})
    return result


WindowStart = tuple[int, dict[str, float]]
"""A competition's (sync block, scores before its first scored step in that window)."""


def window_scores(
    scores: Mapping[str, float],
    step_weights: Mapping[str, float],
    *,
    window_start: WindowStart | None,
    sync_block: int,
    members: Collection[str],
    elsewhere: Collection[str] = (),
    changed: Collection[str] = (),
    alpha: float = ALPHA,
) -> tuple[dict[str, float], WindowStart | None]:
    """(every hotkey's score, the competition's window start) after one of its steps.

    The moving average advances once per sync window: the first scored step of a window records the
    scores it starts from, and every later step of that window recomputes :func:`step_scores` from
    them, so its weights replace the earlier step's instead of adding a second move. Validators that
    step once or several times in a window (same samples, same models) end with the same scores.
    Hotkeys the step does not move (``elsewhere``, ``changed``) keep their current score. A step where
    nothing scored changes nothing, not even the window start.
    """
    if not any(w > 0.0 for w in step_weights.values()):
        return dict(scores), window_start
    if window_start is None or window_start[0] != sync_block:
        window_start = (sync_block, dict(scores))
    start = window_start[1]
    moved = step_scores(
        start, step_weights, members=members, elsewhere=elsewhere, changed=changed, alpha=alpha
    )
    touched = (set(members) | set(start)) - set(elsewhere) - set(changed)
    result = dict(scores)
    result.update({hk: moved[hk] for hk in touched})
    return result, window_start


WindowLosses = tuple[int, str, dict[str, tuple[str, list[float]]]]
"""A competition's (sync block, digest of the window's samples, {hotkey: (model, per-sample losses)})."""


def samples_digest(samples: Sequence[tuple[Sequence[int], int]]) -> str:
    """SHA-256 of a step's tokenized samples ((token ids, prompt length) each): equal digests, equal
    samples."""
    return hashlib.sha256(json.dumps([[list(ids), p] for ids, p in samples]).encode("utf-8")).hexdigest()


def window_losses(
    previous: WindowLosses | None,
    step: Mapping[str, tuple[str, Sequence[float]]],
    *,
    sync_block: int,
    samples: str,
    models: Mapping[str, str],
) -> WindowLosses:
    """The per-sample losses of every model evaluated in a competition's sync window, after a step that
    evaluated ``step`` ({hotkey: (model, losses)}) on the samples whose digest is ``samples``.

    The window's earlier losses are kept for hotkeys that still have the same model (``models``: each
    candidate's :attr:`Candidate.model`); a new window, or other samples (a source whose draw changed
    within the window), starts over with this step's. This step's losses replace earlier ones of the
    same hotkey. Scoring the union makes a window's result independent of how its evaluations were
    split into steps."""
    kept: dict[str, tuple[str, list[float]]] = {}
    if previous is not None and previous[0] == sync_block and previous[1] == samples:
        kept = {hk: entry for hk, entry in previous[2].items() if models.get(hk) == entry[0]}
    kept.update({hk: (model, [float(x) for x in losses]) for hk, (model, losses) in step.items()})
    return sync_block, samples, kept


# ---- 6. weights for the chain ------------------------------------------------------------------------
def weight_targets(
    scores: Mapping[str, float],
    *,
    members: Mapping[str, Collection[str]],
    reward_shares: Mapping[str, float],
    scored: Collection[str],
    consensus: Mapping[str, float],
) -> dict[str, float]:
    """What the weights are made from, by hotkey: this validator's scores, except that the members of a
    competition it has not scored yet (``members`` by competition id, not in ``scored``) take that
    competition's share from the chain's consensus, so a fresh validator agrees with the network
    instead of giving everything to the first competition it evaluates."""
    targets = dict(scores)
    for competition_id, hotkeys in members.items():
        if competition_id in scored:
            continue
        for hotkey in hotkeys:
            targets.pop(hotkey, None)
        targets.update(consensus_start(consensus, hotkeys, reward_shares[competition_id]))
    return targets


def chain_weights(hotkeys: Sequence[str], targets: Mapping[str, float], *, min_nonzero: int) -> list[float]:
    """The weights to set, in metagraph order, summing to 1 (all zero when there is nothing to set).

    The chain refuses a call with fewer than ``MinAllowedWeights`` non-zero entries after its u16
    quantization (each weight scaled to the largest; below half a step becomes 0), without capping that
    at the subnet size. So at least ``min(min_nonzero, n)`` entries are kept at or above one step of the
    largest weight: the largest targets below it are raised to it, then zero entries in metagraph order.
    The floor is 1/65535 of the top weight each, far below any real score.
    """
    if min_nonzero < 0:
        raise ValueError(f"min_nonzero must be >= 0, got {min_nonzero}")
    raw = np.array([float(targets.get(hk, 0.0)) for hk in hotkeys], dtype=np.float64)
    raw = np.where(np.isfinite(raw) & (raw > 0.0), raw, 0.0)
    if raw.size == 0 or raw.max() <= 0.0:
        return [0.0] * len(hotkeys)
    floor = raw.max() / U16_MAX
    needed = min(min_nonzero, raw.size) - int(np.count_nonzero(raw >= floor))
    if needed > 0:
        below = [i for i in np.argsort(-raw, kind="stable") if raw[i] < floor]
        for i in below[:needed]:
            raw[i] = floor
    total = raw.sum()
    return [float(w) for w in raw / total]
