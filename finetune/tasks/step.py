"""One step of a competition judged on tasks, from samples to per-task values (the validator's glue).

For each task: draw its samples from its source with the step's seed (every validator draws the same;
a one-task competition draws exactly what it drew before tasks existed), tokenize them the method's
way (:mod:`finetune.tasks.tokenize`), score every model in the evaluator's crash-isolated workers, and
for generation check the decoded outputs against the rules here, in the validator. The result,
``values[task name][key]``, goes to :func:`finetune.tasks.combine.score_tasks`.

Task options read here: ``samples`` (how many to draw; default the caller's ``samples_per_step``) and
``timeout_s`` (the per-model limit of this task); the others go to the method (for generation:
``max_new_tokens``, ``batch_size``, ``time_limit_s``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from transformers import PreTrainedTokenizerBase

from constants.tasks import EvalTask, Method
from finetune.evaluation import EvalJob, EvalResult, Evaluator
from finetune.tasks.dispatch import failed_values
from finetune.tasks.generation import RulePrompt, score_outputs
from finetune.tasks.tokenize import (
    decoder,
    end_of_turn_ids,
    tokenize_choices,
    tokenize_rule_prompts,
    tokenize_texts,
)
from finetune.tokenization import tokenize_samples

logger = logging.getLogger(__name__)

__all__ = [
    "SAMPLES_OPTION",
    "TIMEOUT_OPTION",
    "PreparedTask",
    "evaluate_tasks",
    "prepare_task",
    "samples_for",
    "values_per_task",
]

SAMPLES_OPTION = "samples"
TIMEOUT_OPTION = "timeout_s"
_STEP_OPTIONS = frozenset({SAMPLES_OPTION, TIMEOUT_OPTION})


@dataclass(frozen=True)
class PreparedTask:
    """A task's tokenized samples for this step, in its method's shape, and the method's options."""

    task: EvalTask
    samples: list[Any]
    options: dict[str, Any] = field(default_factory=dict)
    rule_prompts: tuple[RulePrompt, ...] = ()
    decode: Callable[[list[int]], str] | None = None
    timeout_s: float | None = None


def samples_for(task: EvalTask, samples_per_step: int) -> int:
    """How many samples ``task`` draws per step."""
    return int(task.kwargs().get(SAMPLES_OPTION, samples_per_step))


def prepare_task(
    task: EvalTask,
    source: Any,
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int,
    samples_per_step: int,
    sequence_length: int,
    cutoff: float | None = None,
) -> PreparedTask:
    """Draw ``task``'s samples from ``source`` with the step's ``seed`` and ``cutoff`` (the sync block's
    time) and tokenize them. ``DataSourceError`` from the source propagates: the caller skips the step."""
    options = {k: v for k, v in task.kwargs().items() if k not in _STEP_OPTIONS}
    timeout = task.kwargs().get(TIMEOUT_OPTION)
    raw = source.sample(samples_for(task, samples_per_step), seed=seed, cutoff=cutoff)
    limit = None if timeout is None else float(timeout)
    if task.method is Method.RESPONSE_LOSS:
        tokenized = tokenize_samples(tokenizer, raw, sequence_length=sequence_length)
        return PreparedTask(task, samples=tokenized, options=options, timeout_s=limit)
    if task.method is Method.TEXT_LOSS:
        texts = tokenize_texts(tokenizer, raw, sequence_length=sequence_length)
        return PreparedTask(task, samples=texts, options=options, timeout_s=limit)
    if task.method is Method.MULTIPLE_CHOICE:
        questions = tokenize_choices(tokenizer, raw, sequence_length=sequence_length)
        return PreparedTask(task, samples=questions, options=options, timeout_s=limit)
    max_new = int(options.get("max_new_tokens", 64))
    prompts = tokenize_rule_prompts(tokenizer, raw, sequence_length=sequence_length, max_new_tokens=max_new)
    options.setdefault("eos_ids", end_of_turn_ids(tokenizer))
    options.setdefault("pad_id", int(tokenizer.pad_token_id or 0))
    return PreparedTask(
        task,
        samples=[p.prompt for p in prompts],
        options=options,
        rule_prompts=tuple(prompts),
        decode=decoder(tokenizer),
        timeout_s=limit,
    )


def _scored(prepared: PreparedTask, result: EvalResult) -> EvalResult:
    """A generation result with its outputs checked against the rules (values = fraction met)."""
    if prepared.decode is None:
        raise ValueError(f"task {prepared.task.name!r} has no decoder")
    if result.outputs is None:
        values = failed_values(prepared.task.method, len(prepared.rule_prompts))
    else:
        values = score_outputs(result.outputs, prepared.rule_prompts, decode=prepared.decode)
    return EvalResult(result.key, values, result.error, result.seconds, result.outputs)


def evaluate_tasks(
    evaluator: Evaluator,
    prepared: Sequence[PreparedTask],
    jobs: Sequence[EvalJob],
    *,
    on_result: Callable[[str, EvalResult], None] | None = None,
) -> dict[str, dict[str, EvalResult]]:
    """Every job's model on every task, task after task: ``results[task name][key]``. A model that
    fails a task (crash, hang, exception) has the method's failure value on it and is still scored
    on the other tasks."""
    results: dict[str, dict[str, EvalResult]] = {}
    for task in prepared:
        name = task.task.name
        report = None if on_result is None else partial(on_result, name)
        raw = evaluator.evaluate(
            jobs,
            task.samples,
            method=task.task.method,
            options=task.options,
            timeout_s=task.timeout_s,
            on_result=report,
        )
        if task.task.method is Method.GENERATION_RULES:
            raw = {key: _scored(task, result) for key, result in raw.items()}
        results[name] = raw
    return results


def values_per_task(
    results: Mapping[str, Mapping[str, EvalResult]], uid_of: Mapping[str, int]
) -> dict[str, dict[int, list[float]]]:
    """``results`` keyed by uid, the shape :func:`finetune.tasks.combine.score_tasks` takes."""
    return {
        name: {uid_of[key]: list(result.losses) for key, result in per_key.items()}
        for name, per_key in results.items()
    }
