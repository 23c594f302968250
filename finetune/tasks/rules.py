"""Deterministic rules a generated answer is checked against (word sorting, instruction constraints).

Each rule is a frozen dataclass with ``check(text) -> bool`` and a ``describe()`` that the prompt
generators put in the instruction, so the prompt and the check cannot drift apart. Words are runs of
letters (``[A-Za-z]+``); checks ignore surrounding whitespace.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "BulletCount",
    "Casing",
    "Keyword",
    "Rule",
    "SortedWords",
    "WordCount",
    "bullet_lines",
    "rule_score",
    "words_of",
]

_WORD = re.compile(r"[A-Za-z]+")
_BULLET = re.compile(r"^\s*[-*]\s+\S")


class Rule(Protocol):
    """A deterministic check of a generated text."""

    def check(self, text: str) -> bool: ...

    def describe(self) -> str: ...


def words_of(text: str) -> list[str]:
    """The words of ``text``: runs of ASCII letters, in order."""
    return _WORD.findall(text)


def bullet_lines(text: str) -> int:
    """Lines that are bullet points (``- item`` or ``* item``)."""
    return sum(1 for line in text.splitlines() if _BULLET.match(line))


@dataclass(frozen=True)
class SortedWords:
    """The answer lists exactly ``words``, sorted alphabetically (case-insensitive), nothing else."""

    words: tuple[str, ...]

    def check(self, text: str) -> bool:
        return [w.lower() for w in words_of(text)] == sorted(w.lower() for w in self.words)

    def describe(self) -> str:
        return "Sort the following words alphabetically: " + " ".join(self.words)


@dataclass(frozen=True)
class WordCount:
    """Between ``minimum`` and ``maximum`` words, inclusive."""

    minimum: int
    maximum: int

    def __post_init__(self) -> None:
        if not 0 <= self.minimum <= self.maximum:
            raise ValueError(f"need 0 <= minimum <= maximum, got {self.minimum}, {self.maximum}")

    def check(self, text: str) -> bool:
        return self.minimum <= len(words_of(text)) <= self.maximum

    def describe(self) -> str:
        if self.minimum == self.maximum:
            return f"Answer in exactly {self.minimum} words."
        return f"Answer in {self.minimum} to {self.maximum} words."


@dataclass(frozen=True)
class Casing:
    """Every letter lower case (``"lower"``) or upper case (``"upper"``); at least one letter."""

    case: Literal["lower", "upper"]

    def __post_init__(self) -> None:
        if self.case not in ("lower", "upper"):
            raise ValueError(f"case must be 'lower' or 'upper', got {self.case!r}")

    def check(self, text: str) -> bool:
        letters = "".join(words_of(text))
        return bool(letters) and letters == (letters.lower() if self.case == "lower" else letters.upper())

    def describe(self) -> str:
        return f"Write only in {self.case} case letters."


@dataclass(frozen=True)
class Keyword:
    """``word`` appears as a whole word (case-insensitive)."""

    word: str

    def __post_init__(self) -> None:
        if not _WORD.fullmatch(self.word):
            raise ValueError(f"a keyword is one word of letters, got {self.word!r}")

    def check(self, text: str) -> bool:
        return self.word.lower() in {w.lower() for w in words_of(text)}

    def describe(self) -> str:
        return f'Include the word "{self.word}".'


@dataclass(frozen=True)
class BulletCount:
    """Exactly ``count`` bullet lines (``- item`` or ``* item``)."""

    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")

    def check(self, text: str) -> bool:
        return bullet_lines(text) == self.count

    def describe(self) -> str:
        return f"Answer with exactly {self.count} bullet points, each on its own line starting with '- '."


def rule_score(text: str, rules: Sequence[Rule]) -> float:
    """The fraction of ``rules`` that ``text`` meets (``nan`` for no rules: nothing to judge)."""
    if not rules:
        return math.nan
    return sum(1 for rule in rules if rule.check(text)) / len(rules)
