"""Evaluation tasks: how a competition judges its models, as plain data.

A competition is judged on one or more tasks. A task names its data (a :class:`SourceSpec`: a source
kind and its options, built by ``finetune.tasks.sources.build_source``), the method that scores a
model on that data (:class:`Method`), its weight in the combined win rate, and the method's options
(``max_new_tokens`` for generation, say). A tuple of tasks is checked by :func:`check_tasks`: distinct
names, positive weights summing to 1.

This module lives in ``constants`` (and imports nothing from ``finetune``) so that the competitions
table can hold tasks: adding a task to a competition is a data change here and in
``constants/competitions.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

WEIGHT_TOLERANCE = 1e-9


class Method(StrEnum):
    """How a model is scored on a task's samples (``finetune.tasks`` implements each)."""

    RESPONSE_LOSS = "response_loss"
    """Mean cross-entropy of the response tokens of a (prompt, response) chat (today's ``compute_losses``)."""
    TEXT_LOSS = "text_loss"
    """Mean cross-entropy over a whole passage of plain text."""
    MULTIPLE_CHOICE = "multiple_choice"
    """1 when the choice with the lowest mean continuation loss is the right one, else 0."""
    GENERATION_RULES = "generation_rules"
    """Greedy generation checked by deterministic rules: the fraction of the prompt's rules met."""

    @property
    def higher_is_better(self) -> bool:
        """Scores (accuracy, rules met) rather than losses: the higher value wins a comparison."""
        return self in (Method.MULTIPLE_CHOICE, Method.GENERATION_RULES)


_Options = tuple[tuple[str, Any], ...]


def _freeze(options: Mapping[str, Any] | _Options, what: str) -> _Options:
    """Options as a sorted tuple of (name, value) pairs (hashable, order-independent)."""
    pairs = tuple(options.items()) if isinstance(options, Mapping) else tuple(options)
    names = [name for name, _ in pairs]
    if any(not isinstance(name, str) or not name for name in names):
        raise ValueError(f"{what}: option names must be non-empty strings, got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: duplicate option names {names}")
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class SourceSpec:
    """Where a task's samples come from: a source ``kind`` and the keyword options that build it."""

    kind: str
    options: Mapping[str, Any] | _Options = ()
    """Keyword options of the source; stored as a sorted tuple of pairs (hashable)."""

    def __post_init__(self) -> None:
        if not self.kind.strip():
            raise ValueError("a source needs a kind")
        object.__setattr__(self, "options", _freeze(self.options, f"source {self.kind!r}"))

    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments."""
        return dict(self.options)


@dataclass(frozen=True)
class EvalTask:
    """One way a competition judges models: data, method, weight in the combined win rate, options."""

    name: str
    source: SourceSpec
    method: Method
    weight: float = 1.0
    options: Mapping[str, Any] | _Options = ()
    """Options of the method (and of the step: ``samples``, ``timeout_s``); stored as a sorted tuple."""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a task needs a name")
        object.__setattr__(self, "method", Method(self.method))
        if not (math.isfinite(self.weight) and 0.0 < self.weight <= 1.0):
            raise ValueError(f"task {self.name!r}: weight must be in (0, 1], got {self.weight}")
        object.__setattr__(self, "options", _freeze(self.options, f"task {self.name!r}"))

    def kwargs(self) -> dict[str, Any]:
        """The method's options as keyword arguments."""
        return dict(self.options)


def check_tasks(tasks: Sequence[EvalTask]) -> tuple[EvalTask, ...]:
    """``tasks`` as a tuple, after checking it judges a competition: at least one task, distinct
    names, weights summing to 1 (within ``WEIGHT_TOLERANCE``); ``ValueError`` otherwise."""
    checked = tuple(tasks)
    if not checked:
        raise ValueError("a competition needs at least one evaluation task")
    if any(not isinstance(task, EvalTask) for task in checked):
        raise ValueError(f"tasks must be EvalTask, got {[type(t).__name__ for t in checked]}")
    names = [task.name for task in checked]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be distinct, got {names}")
    total = math.fsum(task.weight for task in checked)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        weights = {task.name: task.weight for task in checked}
        raise ValueError(f"task weights sum to {total}, not 1: {weights}")
    return checked


def response_loss_task(source: SourceSpec, *, name: str = "responses") -> tuple[EvalTask, ...]:
    """The single task every competition had before tasks existed: response loss, weight 1."""
    return check_tasks((EvalTask(name, source, Method.RESPONSE_LOSS, 1.0),))


__all__ = ["WEIGHT_TOLERANCE", "EvalTask", "Method", "SourceSpec", "check_tasks", "response_loss_task"]
