"""A step judged on every task of its competition: sources, samples, evaluation, the mechanism.

For each task of ``competition.tasks``: its sample source (the validator's own for
``VALIDATOR_SOURCE``, else the one its spec names, built once and given the same draw deadline), its
samples drawn with the step's seed and tokenized its method's way, every chosen model scored in the
evaluator's workers, and :func:`finetune.tasks.combine.score_tasks` over the per-task values. A
one-task competition draws, evaluates and scores exactly as the validator did before tasks existed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from constants.competitions import VALIDATOR_SOURCE, Competition
from constants.tasks import EvalTask
from finetune.data import SampleSource
from finetune.evaluation import EvalResult
from finetune.tasks.combine import TaskStepResult, score_tasks
from finetune.tasks.sources import build_task_source
from finetune.tasks.step import PreparedTask, prepare_task, values_per_task
from finetune.validator.deadline import DeadlineSource
from finetune.validator.plan import metadata_of, model_name
from finetune.validator.records import ModelRow, task_scores
from model.tracker import ModelRecord

__all__ = ["TaskSources", "model_row", "prepare_step", "score_step_tasks"]


class TaskSources:
    """Each task's sample source: the validator's for ``VALIDATOR_SOURCE``, else built from the task's
    spec once (``build``) and wrapped in the same draw deadline."""

    def __init__(
        self,
        default: SampleSource,
        *,
        timeout_s: float,
        build: Callable[[EvalTask], Any] = build_task_source,
    ) -> None:
        self._default, self._timeout_s, self._build = default, timeout_s, build
        self._built: dict[tuple[str, Any], SampleSource] = {}

    def source_for(self, task: EvalTask) -> SampleSource:
        if task.source == VALIDATOR_SOURCE:
            return self._default
        key = (task.name, task.source)
        if key not in self._built:
            self._built[key] = DeadlineSource(self._build(task), timeout_s=self._timeout_s)
        return self._built[key]


def prepare_step(
    competition: Competition,
    sources: TaskSources,
    tokenizer: Any,
    *,
    seed: int,
    samples_per_step: int,
    cutoff: float | None = None,
) -> list[PreparedTask]:
    """Every task's samples for this step, drawn with ``seed`` and ``cutoff`` (the sync block's time)
    (``DataSourceError`` from any source propagates: the caller skips the step).
    ``competition.samples_per_step``, when set, replaces the validator's."""
    per_step = competition.samples_per_step or samples_per_step
    return [
        prepare_task(
            task,
            sources.source_for(task),
            tokenizer,
            seed=seed,
            samples_per_step=per_step,
            sequence_length=competition.sequence_length,
            cutoff=cutoff,
        )
        for task in competition.tasks
    ]


def score_step_tasks(
    competition: Competition,
    results: Mapping[str, Mapping[str, EvalResult]],
    chosen: Sequence[str],
    uid_of: Mapping[str, int],
    *,
    blocks: Mapping[str, int],
    hashes: Mapping[str, str | None],
    current_block: int,
    temperature: float,
    seed: int,
) -> TaskStepResult:
    """The mechanism over the chosen hotkeys' per-task values (keyed by uid, as the chain sees them)."""
    return score_tasks(
        [uid_of[hk] for hk in chosen],
        values_per_task(results, uid_of),
        {uid_of[hk]: blocks[hk] for hk in chosen},
        {uid_of[hk]: hashes[hk] for hk in chosen},
        tasks=competition.tasks,
        reward_share=competition.reward_share,
        epsilon_policy=competition.epsilon_policy,
        current_block=current_block,
        temperature=temperature,
        seed=seed,
    )


def model_row(
    hotkey: str,
    uid: int,
    record: ModelRecord,
    *,
    tasks: tuple[EvalTask, ...],
    results: Mapping[str, Mapping[str, EvalResult]],
    result: TaskStepResult,
    score: float,
) -> ModelRow:
    """The report's row of one evaluated model: the loss columns show the first loss task (the only
    task of a one-task competition), ``tasks`` every task's numbers when there are several."""
    first = next((t for t in tasks if not t.method.higher_is_better), tasks[0])
    evaluation = results[first.name][hotkey]
    finite = [x for x in evaluation.losses if math.isfinite(x)]
    failed = [(t.name, results[t.name][hotkey].error) for t in tasks if results[t.name][hotkey].error]
    errors = [str(e) if len(tasks) == 1 else f"{name}: {e}" for name, e in failed]
    note = "same model as an earlier commit" if uid in result.duplicates else "; ".join(errors)
    return ModelRow(
        uid=uid,
        hotkey=hotkey,
        model=model_name(record),
        block=metadata_of(record).block,
        mean_loss=float(np.mean(finite)) if finite else math.inf,
        win_rate=result.win_rate.get(uid, 0.0),
        ci=result.ci.get(uid, (0.0, 0.0)),
        weight=result.weights.get(uid, 0.0),
        score=score,
        note=note,
        losses=tuple(evaluation.losses),
        tasks=task_scores(tasks, result, uid) if len(tasks) > 1 else (),
    )
