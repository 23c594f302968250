"""Seeded generators for the evaluation tasks: multiple choice over the synthetic tasks, word sorting,
instruction constraints, and plain text passages.

Every generator is ``random.Random`` seeded with SHA-256 of ``(seed, its name, its split)``, so the same
seed gives the same samples in every process. The multiple-choice and text generators reuse the
synthetic tasks (:mod:`finetune.data.synthetic`) and their train / held-out partition of the task
space; word sorting and the instructions are split the same way, by SHA-256 of the problem's key.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal, TypeVar

from finetune.data.seeding import derive_seed
from finetune.data.synthetic import ITEMS, WORDS, SyntheticSource, split_of, word_sorting_example
from finetune.data.task_samples import ChoiceSample, RuleSample
from finetune.tasks.rules import BulletCount, Casing, Keyword, Rule, SortedWords, WordCount

__all__ = [
    "CATEGORIES",
    "InstructionSource",
    "SyntheticChoiceSource",
    "SyntheticTextSource",
    "WordSortingSource",
]

MAX_TRIES = 10_000
Split = Literal["train", "heldout"]
T = TypeVar("T")


def _split(split: str) -> Split:
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    return "train" if split == "train" else "heldout"


def _draw(rng: random.Random, split: Split, make: Callable[[random.Random], tuple[str, T]]) -> T:
    """The first generated item whose key falls in ``split``."""
    for _ in range(MAX_TRIES):
        key, item = make(rng)
        if split_of(key) == split:
            return item
    raise RuntimeError(f"no {split} item after {MAX_TRIES} tries")  # unreachable: keys spread over both


def _variant(rng: random.Random, answer: str) -> str:
    """A wrong answer shaped like ``answer``: its parts shuffled, or one part changed (a number moved
    by a little, a word replaced by another of the same case)."""
    joiner = ", " if ", " in answer else " "
    parts = answer.split(joiner)
    if len(parts) > 1 and rng.random() < 0.5:
        shuffled = parts[:]
        rng.shuffle(shuffled)
        return joiner.join(shuffled)
    index = rng.randrange(len(parts))
    part = parts[index]
    if part.lstrip("-").isdigit():
        replacement = str(max(0, int(part) + rng.choice([-3, -2, -1, 1, 2, 3, 10])))
    else:
        word = rng.choice(WORDS)
        replacement = word.upper() if part.isupper() else word
    parts[index] = replacement
    return joiner.join(parts)


class SyntheticChoiceSource:
    """Multiple choice over the synthetic tasks: the right answer among ``choices - 1`` wrong ones of
    the same shape, at a random position."""

    def __init__(self, split: str = "heldout", *, choices: int = 4) -> None:
        if choices < 2:
            raise ValueError(f"choices must be >= 2, got {choices}")
        self.split = _split(split)
        self.choices = choices
        self._tasks = SyntheticSource(self.split)

    def __repr__(self) -> str:
        return f"SyntheticChoiceSource(split={self.split!r}, choices={self.choices})"

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[ChoiceSample]:
        rng = random.Random(derive_seed(seed, "choice", self.split))
        samples: list[ChoiceSample] = []
        for _, prompt, answer in self._tasks.examples(n, seed=seed):
            wrong: list[str] = []
            for _ in range(MAX_TRIES):
                if len(wrong) == self.choices - 1:
                    break
                candidate = _variant(rng, answer)
                if candidate != answer and candidate not in wrong:
                    wrong.append(candidate)
            if len(wrong) < self.choices - 1:
                continue  # unreachable for the synthetic tasks: every answer has many variants
            position = rng.randrange(self.choices)
            options = [*wrong[:position], answer, *wrong[position:]]
            samples.append(ChoiceSample(prompt, tuple(options), position))
        return samples


class WordSortingSource:
    """Sort ``min_words`` to ``max_words`` distinct words alphabetically; checked by
    :class:`~finetune.tasks.rules.SortedWords` on the generated answer."""

    def __init__(self, split: str = "heldout", *, min_words: int = 3, max_words: int = 5) -> None:
        if not 2 <= min_words <= max_words <= len(WORDS):
            raise ValueError(
                f"need 2 <= min_words <= max_words <= {len(WORDS)}, got {min_words}, {max_words}"
            )
        self.split = _split(split)
        self.min_words, self.max_words = min_words, max_words

    def __repr__(self) -> str:
        return f"WordSortingSource(split={self.split!r}, words={self.min_words}..{self.max_words})"

    def _make(self, rng: random.Random) -> tuple[str, RuleSample]:
        key, prompt, answer = word_sorting_example(rng, self.min_words, self.max_words)
        rule = SortedWords(tuple(key.removeprefix("wordsort:").split()))
        return key, RuleSample(prompt, (rule,), answer)

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[RuleSample]:
        rng = random.Random(derive_seed(seed, "word_sorting", self.split))
        return [_draw(rng, self.split, self._make) for _ in range(max(0, n))]


CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruits": ITEMS,
    "colors": ("red", "green", "blue", "yellow", "orange", "purple", "black", "white"),
    "animals": ("tiger", "horse", "rabbit", "snake", "dragon", "cat", "dog", "owl"),
    "things in a house": ("table", "chair", "window", "mirror", "candle", "piano", "basket", "lamp"),
}


class InstructionSource:
    """Instruction constraints: name a few things of a category, as bullet points or in an exact number
    of words, optionally in one letter case and including a given word."""

    def __init__(self, split: str = "heldout") -> None:
        self.split = _split(split)

    def __repr__(self) -> str:
        return f"InstructionSource(split={self.split!r})"

    def _make(self, rng: random.Random) -> tuple[str, RuleSample]:
        category = rng.choice(sorted(CATEGORIES))
        pool = CATEGORIES[category]
        count = rng.randint(2, 4)
        items = rng.sample(pool, count)
        rules: list[Rule] = []
        if rng.random() < 0.5:
            rules.append(BulletCount(count))
            answer = "\n".join(f"- {item}" for item in items)
        else:
            rules.append(WordCount(count, count))
            answer = " ".join(items)
        if rng.random() < 0.5:
            rules.append(Keyword(items[0]))
        if rng.random() < 0.5:
            case: Literal["lower", "upper"] = rng.choice(["lower", "upper"])
            rules.append(Casing(case))
            answer = answer.upper() if case == "upper" else answer.lower()
        prompt = f"Name {count} {category}. " + " ".join(rule.describe() for rule in rules)
        key = "instruct:" + prompt
        return key, RuleSample(prompt, tuple(rules), answer)

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[RuleSample]:
        rng = random.Random(derive_seed(seed, "instructions", self.split))
        return [_draw(rng, self.split, self._make) for _ in range(max(0, n))]


class SyntheticTextSource:
    """Plain-text passages for the text-loss method: a few synthetic problems written out as prose."""

    def __init__(self, split: str = "heldout", *, problems: int = 3) -> None:
        if problems < 1:
            raise ValueError(f"problems must be >= 1, got {problems}")
        self.split = _split(split)
        self.problems = problems
        self._tasks = SyntheticSource(self.split)

    def __repr__(self) -> str:
        return f"SyntheticTextSource(split={self.split!r}, problems={self.problems})"

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[str]:
        examples = self._tasks.examples(max(0, n) * self.problems, seed=derive_seed(seed, "text"))
        lines = [f"Question: {prompt} Answer: {answer}." for _, prompt, answer in examples]
        return [" ".join(lines[i : i + self.problems]) for i in range(0, len(lines), self.problems)]
