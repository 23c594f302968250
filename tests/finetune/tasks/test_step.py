"""A multi-task step end to end: draw, tokenize (local tokenizer), score in the crash-isolated worker,
check generations by rules, combine; equal to running each method in this process."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from constants.competitions import LOCAL_ASSETS, FixedEpsilon
from constants.tasks import EvalTask, Method, SourceSpec, check_tasks
from finetune.evaluation import EvalJob, Evaluator
from finetune.losses import compute_losses
from finetune.tasks.choice import multiple_choice_scores
from finetune.tasks.combine import score_tasks
from finetune.tasks.generation import generation_scores
from finetune.tasks.sources import build_task_source
from finetune.tasks.step import evaluate_tasks, prepare_task, values_per_task
from tests.finetune.eval_loaders import local_model

TASKS = check_tasks(
    (
        EvalTask("responses", SourceSpec("synthetic", {"split": "heldout"}), Method.RESPONSE_LOSS, 0.5),
        EvalTask("choice", SourceSpec("synthetic_choice"), Method.MULTIPLE_CHOICE, 0.3, {"samples": 6}),
        EvalTask("sorting", SourceSpec("word_sorting"), Method.GENERATION_RULES, 0.2, {"max_new_tokens": 6}),
    )
)


@pytest.mark.slow
def test_three_tasks_scored_in_the_worker_equal_the_methods_in_process(tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(LOCAL_ASSETS))
    prepared = [
        prepare_task(
            task, build_task_source(task), tokenizer, seed=77, samples_per_step=4, sequence_length=512
        )
        for task in TASKS
    ]
    assert [len(p.samples) for p in prepared] == [4, 6, 4]
    jobs = [EvalJob("a", tmp_path / "local-1"), EvalJob("b", tmp_path / "local-2")]
    seen: list[tuple[str, str]] = []
    with Evaluator(["cpu"], loader="tests.finetune.eval_loaders:local_loader") as evaluator:
        results = evaluate_tasks(
            evaluator, prepared, jobs, on_result=lambda name, r: seen.append((name, r.key))
        )
    assert sorted(seen) == sorted((t.name, j.key) for t in TASKS for j in jobs)
    responses, choice, sorting = prepared
    for key, seed in (("a", 1), ("b", 2)):
        model = local_model(seed)
        assert results["responses"][key].losses == pytest.approx(
            compute_losses(model, responses.samples, "cpu"), abs=1e-5
        )
        assert results["choice"][key].losses == multiple_choice_scores(model, choice.samples, "cpu")
        assert sorting.decode is not None
        want = generation_scores(
            model, list(sorting.rule_prompts), "cpu", decode=sorting.decode, **sorting.options
        )
        assert results["sorting"][key].losses == want
        assert results["sorting"][key].outputs is not None
    values = values_per_task(results, {"a": 1, "b": 2})
    step = score_tasks(
        [1, 2], values, {1: 10, 2: 20}, {1: "x", 2: "y"}, tasks=TASKS, reward_share=1.0,
        epsilon_policy=FixedEpsilon(), current_block=30,
    )  # fmt: skip
    assert sum(step.weights.values()) == pytest.approx(1.0)
    assert set(step.task_win_rate) == {"responses", "choice", "sorting"}
    for uid in (1, 2):
        combined = sum(t.weight * step.task_win_rate[t.name][uid] for t in TASKS)
        assert math.isclose(step.win_rate[uid], combined)
