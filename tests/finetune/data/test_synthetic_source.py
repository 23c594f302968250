"""SyntheticSource: deterministic, correct answers, and a held-out split disjoint from train."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from finetune.data.synthetic import TASKS, SyntheticSource, split_of


def test_same_seed_same_samples_different_seed_different() -> None:
    train = SyntheticSource("train")
    assert train.sample(50, seed=11) == train.sample(50, seed=11)
    assert train.sample(50, seed=11) != train.sample(50, seed=12)
    assert SyntheticSource("heldout").sample(50, seed=11) != train.sample(50, seed=11)


def test_heldout_split_is_disjoint_from_train() -> None:
    train = SyntheticSource("train").examples(3000, seed=1)
    heldout = SyntheticSource("heldout").examples(3000, seed=2)
    assert {split_of(key) for key, _, _ in train} == {"train"}
    assert {split_of(key) for key, _, _ in heldout} == {"heldout"}
    assert not {key for key, _, _ in train} & {key for key, _, _ in heldout}
    assert not {prompt for _, prompt, _ in train} & {prompt for _, prompt, _ in heldout}


def test_every_task_appears_in_several_phrasings_with_short_answers() -> None:
    examples = SyntheticSource("train").examples(2000, seed=5)
    tasks = Counter(key.split(":")[0] for key, _, _ in examples)
    assert set(tasks) == {"add", "sub", "reverse", "sort", "recall", "count", "upper", "copy"}
    assert len(TASKS) == 6
    openings = {prompt.split(" ")[0] for _, prompt, _ in examples}
    assert len(openings) >= 15
    assert all(0 < len(response) <= 60 for _, _, response in examples)


def test_answers_are_correct() -> None:
    for key, prompt, response in SyntheticSource("heldout").examples(500, seed=9):
        kind, _, rest = key.partition(":")
        if kind in ("add", "sub"):
            a, b = map(int, rest.split(":"))
            assert int(response) == (a + b if kind == "add" else a - b) and str(a) in prompt
        elif kind == "reverse":
            assert response.split() == rest.split()[::-1]
        elif kind == "sort":
            order, _, listed = rest.partition(":")
            numbers = [int(x) for x in listed.split(", ")]
            assert [int(x) for x in response.split(", ")] == sorted(numbers, reverse=order == "desc")
        elif kind == "recall":
            facts, _, query = rest.partition("?")
            assert dict(f.split("=") for f in facts.split(","))[query] == response
        elif kind == "count":
            parts = rest.split(":")
            items = parts[-1].split()
            assert int(response) == (items.count(parts[0]) if len(parts) == 2 else len(items))
        elif kind == "upper":
            assert response == rest.upper() and re.search(re.escape(rest), prompt)
        else:
            assert kind == "copy" and response == rest


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError):
        SyntheticSource("test")


def test_word_sorting_can_be_mixed_in_for_multi_task_competitions() -> None:
    from finetune.data.generated import WordSortingSource
    from finetune.tasks.rules import SortedWords

    plain = SyntheticSource("train").examples(700, seed=4)
    assert not any(key.startswith("wordsort:") for key, _, _ in plain)
    mixed = SyntheticSource("train", extra_tasks=["word_sorting"]).examples(700, seed=4)
    sorting = [(key, prompt, answer) for key, prompt, answer in mixed if key.startswith("wordsort:")]
    assert 60 <= len(sorting) <= 150  # one task in seven
    for key, prompt, answer in sorting:
        rule = SortedWords(tuple(key.removeprefix("wordsort:").split()))
        assert prompt == rule.describe() and rule.check(answer) and split_of(key) == "train"
    # the evaluation task asks in the same words, and never a problem a miner trained on
    heldout = {s.prompt for s in WordSortingSource("heldout").sample(500, seed=4)}
    assert {prompt for _, prompt, _ in sorting}.isdisjoint(heldout)
    assert all(p.startswith("Sort the following words alphabetically: ") for p in heldout)
    with pytest.raises(ValueError, match="unknown extra tasks"):
        SyntheticSource("train", extra_tasks=["juggling"])
