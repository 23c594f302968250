"""Building a task's sample source from its :class:`~constants.tasks.SourceSpec`.

Kinds: the response sources of ``finetune.data.make_source`` (``cortex``, ``dataset``, ``synthetic``)
and the task sources: ``synthetic_choice`` and ``dataset_choice`` (multiple choice), ``word_sorting``
and ``instructions`` (generation checked by rules), ``synthetic_text`` and ``dataset_text`` (text loss).
Which method a kind can feed is checked too, so a competition table that pairs a method with data of
the wrong shape fails at start-up, not in a step.
"""

from __future__ import annotations

from typing import Any

from constants.tasks import EvalTask, Method, SourceSpec
from finetune.data import SOURCE_KINDS
from finetune.data.generated import (
    InstructionSource,
    SyntheticChoiceSource,
    SyntheticTextSource,
    WordSortingSource,
)
from finetune.data.pinned import DatasetChoiceSource, DatasetTextSource
from utilities.errors import ConfigError

__all__ = ["TASK_SOURCE_KINDS", "build_source", "build_task_source"]

TASK_SOURCE_KINDS: dict[str, tuple[type[Any], Method]] = {
    **{kind: (cls, Method.RESPONSE_LOSS) for kind, cls in SOURCE_KINDS.items()},
    "synthetic_choice": (SyntheticChoiceSource, Method.MULTIPLE_CHOICE),
    "dataset_choice": (DatasetChoiceSource, Method.MULTIPLE_CHOICE),
    "word_sorting": (WordSortingSource, Method.GENERATION_RULES),
    "instructions": (InstructionSource, Method.GENERATION_RULES),
    "synthetic_text": (SyntheticTextSource, Method.TEXT_LOSS),
    "dataset_text": (DatasetTextSource, Method.TEXT_LOSS),
}
"""Each source kind, its class and the method its samples are shaped for."""


def build_source(spec: SourceSpec) -> Any:
    """The source ``spec`` names, built with its options; ``ConfigError`` for an unknown kind or option."""
    try:
        cls, _ = TASK_SOURCE_KINDS[spec.kind.strip().lower()]
    except KeyError:
        raise ConfigError(
            f"unknown source kind {spec.kind!r}; expected one of {sorted(TASK_SOURCE_KINDS)}"
        ) from None
    try:
        return cls(**spec.kwargs())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid options for source {spec.kind!r}: {exc}") from exc


def build_task_source(task: EvalTask) -> Any:
    """The source of ``task``, after checking its samples fit the task's method."""
    kind = task.source.kind.strip().lower()
    method = TASK_SOURCE_KINDS.get(kind, (None, None))[1]
    if method is not None and method is not task.method:
        raise ConfigError(
            f"task {task.name!r}: source {task.source.kind!r} feeds {method}, not {task.method}"
        )
    return build_source(task.source)
