"""Sample types and source ports of the evaluation tasks other than response loss.

Each port is the :class:`~finetune.data.protocol.SampleSource` shape with its own sample type:
``sample(n, *, seed, cutoff=None)`` returns up to ``n`` samples, deterministic in ``seed`` (validators
seed it from the step's sync block, so all of them draw the same samples; ``cutoff``, the sync block's
time, is ignored by these sources, whose data is fixed), and raises
:class:`~utilities.errors.DataSourceError` when the source fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from finetune.tasks.rules import Rule

__all__ = ["ChoiceSample", "ChoiceSource", "RuleSample", "RuleSource", "TextSource"]


@dataclass(frozen=True)
class ChoiceSample:
    """A multiple-choice question: the prompt, its choices (as the assistant's answer), the right index."""

    prompt: str
    choices: tuple[str, ...]
    answer: int

    def __post_init__(self) -> None:
        if len(self.choices) < 2 or not 0 <= self.answer < len(self.choices):
            raise ValueError(f"need two or more choices and an answer among them, got {self}")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"choices must be distinct, got {self.choices}")


@dataclass(frozen=True)
class RuleSample:
    """A generation prompt, the rules its answer is checked by, and an answer that meets them (for
    training; validators never show it to a model)."""

    prompt: str
    rules: tuple[Rule, ...]
    reference: str


@runtime_checkable
class ChoiceSource(Protocol):
    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[ChoiceSample]: ...


@runtime_checkable
class RuleSource(Protocol):
    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[RuleSample]: ...


@runtime_checkable
class TextSource(Protocol):
    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[str]: ...
