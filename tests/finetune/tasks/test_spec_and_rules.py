"""The task spec's checks, the rules' checks, and building a task's source from its spec."""

from __future__ import annotations

import dataclasses

import pytest

from constants.tasks import EvalTask, Method, SourceSpec, check_tasks, response_loss_task
from finetune.data import SyntheticSource
from finetune.data.generated import InstructionSource, SyntheticChoiceSource, WordSortingSource
from finetune.tasks.rules import BulletCount, Casing, Keyword, SortedWords, WordCount, rule_score
from finetune.tasks.sources import build_source, build_task_source
from utilities.errors import ConfigError

SYNTHETIC = SourceSpec("synthetic", {"split": "heldout"})


def test_tasks_are_frozen_hashable_data_with_order_free_options() -> None:
    a = EvalTask("t", SourceSpec("word_sorting", {"min_words": 3, "split": "train"}), "generation_rules", 0.5)
    b = EvalTask(
        "t", SourceSpec("word_sorting", (("split", "train"), ("min_words", 3))), Method.GENERATION_RULES, 0.5
    )
    assert a == b and hash(a) == hash(b)
    assert a.method is Method.GENERATION_RULES and a.method.higher_is_better
    assert not Method.TEXT_LOSS.higher_is_better and not Method.RESPONSE_LOSS.higher_is_better
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.weight = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("weight", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_a_task_weight_must_be_in_zero_one(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        EvalTask("t", SYNTHETIC, Method.RESPONSE_LOSS, weight)


def test_bad_tasks_are_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        EvalTask("t", SYNTHETIC, "no_such_method", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        EvalTask(" ", SYNTHETIC, Method.RESPONSE_LOSS, 1.0)
    with pytest.raises(ValueError, match="kind"):
        SourceSpec("")
    with pytest.raises(ValueError, match="duplicate"):
        SourceSpec("synthetic", (("split", "a"), ("split", "b")))


def test_task_tuples_need_weights_summing_to_one_and_distinct_names() -> None:
    one = EvalTask("a", SYNTHETIC, Method.RESPONSE_LOSS, 0.7)
    two = EvalTask("b", SYNTHETIC, Method.RESPONSE_LOSS, 0.3)
    assert check_tasks([one, two]) == (one, two)
    thirds = [EvalTask(f"t{i}", SYNTHETIC, Method.RESPONSE_LOSS, 1 / 3) for i in range(3)]
    assert len(check_tasks(thirds)) == 3  # rounding is tolerated
    with pytest.raises(ValueError, match="sum to"):
        check_tasks([one])
    with pytest.raises(ValueError, match="distinct"):
        check_tasks([one, dataclasses.replace(two, name="a")])
    with pytest.raises(ValueError, match="at least one"):
        check_tasks([])
    (single,) = response_loss_task(SYNTHETIC)
    assert single.method is Method.RESPONSE_LOSS and single.weight == 1.0


def test_sources_are_built_from_their_spec_and_checked_against_the_method() -> None:
    assert isinstance(build_source(SYNTHETIC), SyntheticSource)
    assert isinstance(build_source(SourceSpec("synthetic_choice", {"choices": 3})), SyntheticChoiceSource)
    task = EvalTask("sorting", SourceSpec("word_sorting"), Method.GENERATION_RULES, 1.0)
    assert isinstance(build_task_source(task), WordSortingSource)
    assert isinstance(build_source(SourceSpec("instructions")), InstructionSource)
    with pytest.raises(ConfigError, match="unknown source kind"):
        build_source(SourceSpec("nope"))
    with pytest.raises(ConfigError, match="invalid options"):
        build_source(SourceSpec("word_sorting", {"colour": "red"}))
    with pytest.raises(ConfigError, match="invalid options"):
        build_source(SourceSpec("synthetic_choice", {"choices": 1}))
    with pytest.raises(ConfigError, match="feeds"):
        build_task_source(EvalTask("x", SourceSpec("word_sorting"), Method.MULTIPLE_CHOICE, 1.0))
    with pytest.raises(ConfigError, match="pinned revision"):
        build_source(SourceSpec("dataset_text", {"path_or_name": "someone/some-dataset"}))


def test_sorted_words() -> None:
    rule = SortedWords(("pear", "Apple", "fig"))
    assert (
        rule.check("apple fig pear")
        and rule.check(" Apple, fig, pear.")
        and rule.check("- apple\n- fig\n- pear")
    )
    assert (
        not rule.check("fig apple pear")
        and not rule.check("apple fig")
        and not rule.check("apple fig pear kiwi")
    )
    assert rule.describe().endswith("pear Apple fig")


def test_word_count_casing_keyword_bullets() -> None:
    assert WordCount(2, 3).check("one two") and WordCount(2, 3).check("one, two three!")
    assert not WordCount(2, 3).check("one") and not WordCount(2, 3).check("a b c d")
    assert Casing("upper").check("HELLO, WORLD 42") and not Casing("upper").check("Hello")
    assert Casing("lower").check("hello world") and not Casing("lower").check("123")  # no letter at all
    assert Keyword("river").check("The River flows.") and not Keyword("river").check("rivers flow")
    text = "Here:\n- one\n* two\n  - three\nnot - a bullet\n-missing space"
    assert BulletCount(3).check(text) and not BulletCount(2).check(text)
    for bad in (
        lambda: WordCount(3, 2),
        lambda: Casing("title"),
        lambda: Keyword("two words"),
        lambda: BulletCount(0),
    ):
        with pytest.raises(ValueError):
            bad()


def test_rule_score_is_the_fraction_met() -> None:
    rules = (WordCount(1, 2), Casing("upper"), Keyword("fig"))
    assert rule_score("FIG", rules) == 1.0
    assert rule_score("fig", rules) == pytest.approx(2 / 3)
    assert rule_score("", rules) == 0.0
    assert rule_score("x", ()) != rule_score("x", ())  # nan: nothing to judge


def test_the_local_multi_task_definition_builds_every_source() -> None:
    from constants.tasks_local import LOCAL_EXTRA_TASKS, LOCAL_MULTI_TASKS
    from finetune.data import make_source

    assert [t.method for t in LOCAL_MULTI_TASKS] == [
        Method.RESPONSE_LOSS,
        Method.MULTIPLE_CHOICE,
        Method.GENERATION_RULES,
    ]
    for task in LOCAL_MULTI_TASKS:
        assert len(build_task_source(task).sample(3, seed=1)) == 3
    training = make_source("synthetic", split="train", extra_tasks=LOCAL_EXTRA_TASKS)
    assert any(p.startswith("Sort the following words") for p, _ in training.sample(100, seed=2))
