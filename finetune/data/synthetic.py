"""A deterministic generator of small tasks that a tiny model learns within minutes on a CPU.

Tasks: small additions and subtractions, reversing a short word list, sorting a few numbers, key/value
recall, counting items, copying or upper-casing words; each in several phrasings, with short answers.
``extra_tasks`` adds tasks that evaluation tasks judge by generation (``word_sorting``: sort a few words
alphabetically, in the exact words of the word-sorting evaluation task), so miners of a multi-task
competition can train on them; without it the samples are the same as ever.

Train and held-out splits partition the *task parameter space*: every example has a canonical key (the
task and its parameters, not the phrasing), and SHA-256 of the key decides its split
(``HELDOUT_PERCENT`` of keys are held out). A held-out problem is therefore never seen in training, in
any phrasing. The generator is ``random.Random`` seeded from ``(seed, split)`` with SHA-256, so the same
seed gives the same samples in every process.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Literal

from finetune.data.protocol import Sample
from finetune.data.seeding import derive_seed
from finetune.tasks.rules import SortedWords

Split = Literal["train", "heldout"]
Example = tuple[str, str, str]
"""(canonical key, prompt, response)."""

HELDOUT_PERCENT = 10
MAX_TRIES_PER_SAMPLE = 10_000

WORDS: tuple[str, ...] = (
    "apple", "river", "stone", "cloud", "tiger", "green", "music", "paper", "light", "house",
    "table", "chair", "bread", "water", "horse", "queen", "storm", "glass", "snake", "piano",
    "lemon", "ocean", "tower", "candle", "garden", "mirror", "rocket", "silver", "window", "forest",
    "pencil", "rabbit", "island", "planet", "orange", "yellow", "castle", "dragon", "basket", "button",
)  # fmt: skip
ITEMS: tuple[str, ...] = ("apple", "pear", "plum", "fig", "kiwi", "lime")


def split_of(key: str) -> Split:
    """The split that owns the task parameters ``key``."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 100
    return "heldout" if bucket < HELDOUT_PERCENT else "train"


def _arithmetic(rng: random.Random) -> Example:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    if rng.random() < 0.5:
        phrasings = ("What is {a} + {b}?", "Compute {a} plus {b}.", "Add {a} and {b}.", "{a} + {b} = ?")
        key, answer = f"add:{a}:{b}", a + b
    else:
        a, b = max(a, b), min(a, b)
        phrasings = (
            "What is {a} - {b}?",
            "Compute {a} minus {b}.",
            "Subtract {b} from {a}.",
            "{a} - {b} = ?",
        )
        key, answer = f"sub:{a}:{b}", a - b
    return key, rng.choice(phrasings).format(a=a, b=b), str(answer)


def _reverse(rng: random.Random) -> Example:
    words = rng.sample(WORDS, rng.randint(3, 5))
    text = " ".join(words)
    phrasings = (
        "Reverse the words: {w}",
        "Write these words in reverse order: {w}",
        "Reverse the order of the words in: {w}",
    )
    return f"reverse:{text}", rng.choice(phrasings).format(w=text), " ".join(reversed(words))


def _sort(rng: random.Random) -> Example:
    numbers = [rng.randint(0, 99) for _ in range(rng.randint(3, 6))]
    descending = rng.random() < 0.3
    listed = ", ".join(map(str, numbers))
    if descending:
        phrasings: tuple[str, ...] = (
            "Sort these numbers in descending order: {n}",
            "Sort from largest to smallest: {n}",
        )
    else:
        phrasings = (
            "Sort these numbers in ascending order: {n}",
            "Sort from smallest to largest: {n}",
            "Put these numbers in increasing order: {n}",
        )
    key = f"sort:{'desc' if descending else 'asc'}:{listed}"
    answer = ", ".join(map(str, sorted(numbers, reverse=descending)))
    return key, rng.choice(phrasings).format(n=listed), answer


def _recall(rng: random.Random) -> Example:
    keys = rng.sample(WORDS, rng.randint(2, 4))
    values = {k: rng.randint(0, 99) for k in keys}
    query = rng.choice(keys)
    style = rng.randrange(3)
    if style == 0:
        facts = ", ".join(f"{k}={v}" for k, v in values.items())
        prompt = f"Remember: {facts}. What is the value of {query}?"
    elif style == 1:
        facts = ", ".join(f"{k} is {v}" for k, v in values.items())
        prompt = f"{facts}. What is {query}?"
    else:
        facts = "; ".join(f"{k}: {v}" for k, v in values.items())
        prompt = f"Given {facts}. Recall {query}."
    key = "recall:" + ",".join(f"{k}={v}" for k, v in values.items()) + f"?{query}"
    return key, prompt, str(values[query])


def _count(rng: random.Random) -> Example:
    items = [rng.choice(ITEMS) for _ in range(rng.randint(2, 9))]
    listed = " ".join(items)
    if rng.random() < 0.5:
        phrasings = ("How many words are in this list: {l}?", "Count the items: {l}")
        return f"count:{listed}", rng.choice(phrasings).format(l=listed), str(len(items))
    target = rng.choice(ITEMS)
    phrasings = ('How many times does "{t}" appear in: {l}?', "Count how many times {t} appears: {l}")
    answer = str(items.count(target))
    return f"count:{target}:{listed}", rng.choice(phrasings).format(t=target, l=listed), answer


def _copy(rng: random.Random) -> Example:
    text = " ".join(rng.sample(WORDS, rng.randint(1, 2)))
    if rng.random() < 0.5:
        phrasings = ("Repeat the text: {w}", "Copy this exactly: {w}", "Say {w}")
        return f"copy:{text}", rng.choice(phrasings).format(w=text), text
    phrasings = ("Write {w} in uppercase.", "Uppercase: {w}", "Convert to capital letters: {w}")
    return f"upper:{text}", rng.choice(phrasings).format(w=text), text.upper()


def word_sorting_example(rng: random.Random, min_words: int = 3, max_words: int = 5) -> Example:
    """Sort ``min_words`` to ``max_words`` distinct words alphabetically (the prompt is the rule's own
    instruction, :class:`~finetune.tasks.rules.SortedWords`)."""
    words = tuple(rng.sample(WORDS, rng.randint(min_words, max_words)))
    return "wordsort:" + " ".join(words), SortedWords(words).describe(), " ".join(sorted(words))


TASKS: dict[str, Callable[[random.Random], Example]] = {
    "arithmetic": _arithmetic,
    "reverse": _reverse,
    "sort": _sort,
    "recall": _recall,
    "count": _count,
    "copy": _copy,
}


EXTRA_TASKS: dict[str, Callable[[random.Random], Example]] = {"word_sorting": word_sorting_example}
"""Tasks added on request (``extra_tasks``), for competitions that judge them."""


class SyntheticSource:
    """Small generated tasks; ``split`` picks the train or the held-out part of the task space;
    ``extra_tasks`` names tasks of ``EXTRA_TASKS`` to mix in (each as likely as any other task)."""

    def __init__(self, split: str = "train", *, extra_tasks: Sequence[str] = ()) -> None:
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        unknown = sorted(set(extra_tasks) - set(EXTRA_TASKS))
        if unknown:
            raise ValueError(f"unknown extra tasks {unknown}; expected some of {sorted(EXTRA_TASKS)}")
        self.split: Split = "train" if split == "train" else "heldout"
        self.extra_tasks = tuple(dict.fromkeys(extra_tasks))

    def __repr__(self) -> str:
        extra = f", extra_tasks={self.extra_tasks!r}" if self.extra_tasks else ""
        return f"SyntheticSource(split={self.split!r}{extra})"

    def examples(self, n: int, *, seed: int) -> list[Example]:
        """``n`` (key, prompt, response) examples of this split, determined by ``seed``."""
        rng = random.Random(derive_seed(seed, "synthetic", self.split))
        tasks = list(TASKS.values()) + [EXTRA_TASKS[name] for name in self.extra_tasks]
        examples: list[Example] = []
        for _ in range(max(0, n)):
            for _ in range(MAX_TRIES_PER_SAMPLE):
                candidate = rng.choice(tasks)(rng)
                if split_of(candidate[0]) == self.split:
                    examples.append(candidate)
                    break
            else:  # unreachable with the tasks above: every task has keys in both splits
                raise RuntimeError(f"no {self.split} example after {MAX_TRIES_PER_SAMPLE} tries")
        return examples

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[Sample]:
        """``n`` (prompt, response) samples of this split, determined by ``seed``."""
        return [(prompt, response) for _, prompt, response in self.examples(n, seed=seed)]
