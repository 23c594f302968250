"""The task data: seeded generators (same samples from the same seed, correct answers, splits kept apart)
and pinned JSONL sources, read through the real ``datasets`` library."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from finetune.data.generated import (
    CATEGORIES,
    InstructionSource,
    SyntheticChoiceSource,
    SyntheticTextSource,
    WordSortingSource,
)
from finetune.data.pinned import DatasetChoiceSource, DatasetTextSource
from finetune.data.synthetic import SyntheticSource
from finetune.tasks.rules import BulletCount, Casing, Keyword, SortedWords, WordCount, rule_score
from utilities.errors import ConfigError, DataSourceError

GENERATORS = [SyntheticChoiceSource, WordSortingSource, InstructionSource, SyntheticTextSource]


@pytest.mark.parametrize("cls", GENERATORS)
def test_the_same_seed_gives_the_same_samples_in_every_validator(cls: type) -> None:
    first, second = cls(), cls()  # two validators
    assert first.sample(40, seed=123) == second.sample(40, seed=123)
    assert first.sample(40, seed=123) != first.sample(40, seed=124)
    assert cls("train").sample(40, seed=123) != first.sample(40, seed=123)
    assert len(first.sample(40, seed=1)) == 40


def test_choice_questions_hold_the_synthetic_answer_among_distinct_wrong_ones() -> None:
    source = SyntheticChoiceSource("heldout", choices=4)
    samples = source.sample(300, seed=7)
    answers = [response for _, _, response in SyntheticSource("heldout").examples(300, seed=7)]
    positions = set()
    for sample, answer in zip(samples, answers, strict=True):
        assert len(sample.choices) == 4 and len(set(sample.choices)) == 4
        assert sample.choices[sample.answer] == answer
        positions.add(sample.answer)
    assert positions == {0, 1, 2, 3}  # the right answer is not always in one place


def test_word_sorting_references_meet_their_rule_and_the_splits_are_disjoint() -> None:
    train = WordSortingSource("train").sample(500, seed=1)
    heldout = WordSortingSource("heldout").sample(500, seed=1)
    for sample in train + heldout:
        (rule,) = sample.rules
        assert isinstance(rule, SortedWords) and 3 <= len(rule.words) <= 5
        assert rule.check(sample.reference) and sample.prompt == rule.describe()
    assert not {s.prompt for s in train} & {s.prompt for s in heldout}


def test_instruction_references_meet_every_rule_and_every_rule_kind_appears() -> None:
    samples = InstructionSource("heldout").sample(400, seed=2)
    kinds = set()
    for sample in samples:
        assert rule_score(sample.reference, sample.rules) == 1.0
        assert all(rule.describe() in sample.prompt for rule in sample.rules)
        kinds |= {type(rule) for rule in sample.rules}
        assert any(c in sample.prompt for c in CATEGORIES)
    assert kinds == {BulletCount, WordCount, Keyword, Casing}


def test_text_passages_are_prose_from_the_synthetic_tasks() -> None:
    passages = SyntheticTextSource(problems=2).sample(5, seed=3)
    assert len(passages) == 5 and all(p.count("Question:") == 2 for p in passages)


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_pinned_jsonl_choice_file_is_read_and_a_changed_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mc.jsonl"
    digest = write_jsonl(
        path,
        [
            {"question": "2 + 2?", "choices": ["3", "4"], "answer": 1},
            {"question": "Colour of the sky?", "choices": ["blue", "green", "red"], "answer": "A"},
            {"question": "Larger?", "choices": ["small", "large"], "answer": "large"},
            {"question": "bad: one choice", "choices": ["x"], "answer": 0},
            {"question": "bad: no such answer", "choices": ["x", "y"], "answer": 5},
        ],
    )
    source = DatasetChoiceSource(path, split="train", sha256=digest, cache_dir=tmp_path / "cache")
    samples = source.sample(10, seed=0)
    assert {(s.prompt, s.choices[s.answer]) for s in samples} == {
        ("2 + 2?", "4"),
        ("Colour of the sky?", "blue"),
        ("Larger?", "large"),
    }
    assert DatasetChoiceSource(path, split="train", cache_dir=tmp_path / "c2").sample(10, seed=0) == samples
    path.write_text(
        path.read_text() + json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}) + "\n"
    )
    changed = DatasetChoiceSource(path, split="train", sha256=digest, cache_dir=tmp_path / "c3", attempts=1)
    with pytest.raises(DataSourceError, match="SHA-256"):
        changed.sample(10, seed=0)


def test_a_jsonl_text_file_gives_its_passages_in_a_seeded_order(tmp_path: Path) -> None:
    path = tmp_path / "text.jsonl"
    write_jsonl(path, [{"text": f"passage number {i}"} for i in range(30)] + [{"text": "  "}, {"other": 1}])
    source = DatasetTextSource(path, split="train", cache_dir=tmp_path / "cache")
    first = source.sample(10, seed=5)
    assert len(first) == 10 and all(t.startswith("passage number") for t in first)
    assert source.sample(10, seed=5) == first and source.sample(10, seed=6) != first
    assert len(source.sample(100, seed=5)) == 30


def test_an_unpinned_hub_dataset_and_an_empty_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pinned revision"):
        DatasetChoiceSource("someone/mmlu")
    path = tmp_path / "empty.jsonl"
    write_jsonl(path, [{"text": ""}])
    with pytest.raises(DataSourceError, match="no 'text'"):
        DatasetTextSource(path, split="train", cache_dir=tmp_path / "cache").sample(3, seed=0)
    hub = DatasetTextSource(
        "someone/missing-dataset", revision="0" * 40, cache_dir=tmp_path / "c", attempts=1
    )
    with pytest.raises(DataSourceError):  # HF_HUB_OFFLINE=1: the real library fails fast
        hub.sample(3, seed=0)
