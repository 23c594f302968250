from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from constants.tasks import Method
from finetune.evaluation import EvalJob, Evaluator
from finetune.losses import compute_losses
from finetune.tasks.choice import ChoiceQuestion, multiple_choice_scores
from finetune.tasks.generation import greedy_generate
from finetune.tasks.loss_methods import text_losses
from tests.finetune.eval_loaders import tiny_model

LOADER = "tests.finetune.eval_loaders:misbehaving_loader"


def make_samples(n: int) -> list[tuple[list[int], int]]:
    rng = random.Random(0)
    samples = []
    for _ in range(n):
        length = rng.randint(6, 30)
        samples.append(([rng.randrange(64) for _ in range(length)], rng.randint(2, length - 2)))
    return samples


def expected(seed: int, samples: list[tuple[list[int], int]]) -> list[float]:
    tensors = [(torch.tensor([ids]), p) for ids, p in samples]
    return compute_losses(tiny_model(seed), tensors, "cpu")


@pytest.mark.slow
def test_crashing_and_hanging_models_score_inf_and_the_step_finishes(tmp_path: Path) -> None:
    samples = make_samples(12)
    jobs = [
        EvalJob("good-a", tmp_path / "model-1"),
        EvalJob("aborts", tmp_path / "abort"),
        EvalJob("good-b", tmp_path / "model-2"),
        EvalJob("raises", tmp_path / "raise"),
        EvalJob("forward", tmp_path / "forward"),
        EvalJob("hangs", tmp_path / "hang"),
        EvalJob("good-c", tmp_path / "model-3"),
    ]
    with Evaluator(["cpu"], loader=LOADER, timeout_s=20, startup_timeout_s=120) as evaluator:
        results = evaluator.evaluate(jobs, samples)
        # good-a's worker dies while prefetching "abort" (good-a is then evaluated again without
        # prefetch), "abort" kills it twice (with and without prefetch), "hang" passes its limit once
        assert evaluator.restarts == 4
        # the restarted worker keeps serving later steps
        again = evaluator.evaluate([EvalJob("good-a", tmp_path / "model-1")], samples)
    assert set(results) == {job.key for job in jobs}
    for key, seed in (("good-a", 1), ("good-b", 2), ("good-c", 3)):
        assert results[key].error is None
        assert results[key].losses == pytest.approx(expected(seed, samples), abs=1e-5)
    assert again["good-a"].losses == results["good-a"].losses
    for key in ("aborts", "raises", "hangs"):
        assert results[key].error is not None
        assert all(math.isinf(x) for x in results[key].losses)
    # a forward that raises is caught inside the engine: every sample inf, no restart needed
    assert all(math.isinf(x) for x in results["forward"].losses)


@pytest.mark.slow
def test_two_workers_give_the_same_results_as_one(tmp_path: Path) -> None:
    samples = make_samples(8)
    jobs = [EvalJob(f"m{seed}", tmp_path / f"model-{seed}") for seed in range(1, 6)]
    with Evaluator(["cpu"], loader=LOADER) as one:
        single = one.evaluate(jobs, samples)
    with Evaluator(["cpu", "cpu"], loader=LOADER) as two:
        double = two.evaluate(jobs, samples)
    assert {k: r.losses for k, r in single.items()} == {k: r.losses for k, r in double.items()}


def test_a_worker_that_never_takes_the_samples_scores_inf_without_raising(tmp_path: Path) -> None:
    samples = make_samples(4)
    jobs = [EvalJob("a", tmp_path / "model-1"), EvalJob("b", tmp_path / "model-2")]
    with Evaluator(["cpu"], loader=LOADER, startup_timeout_s=0.01) as evaluator:
        results = evaluator.evaluate(jobs, samples)
    for key in ("a", "b"):
        assert results[key].losses == [math.inf] * 4
        assert "did not take the samples" in (results[key].error or "")


def test_an_evaluator_needs_a_device() -> None:
    with pytest.raises(ValueError):
        Evaluator([])


def make_questions(n: int) -> list[ChoiceQuestion]:
    rng = random.Random(1)
    return [
        ChoiceQuestion.of(
            [rng.randrange(64) for _ in range(rng.randint(2, 12))],
            [[rng.randrange(64) for _ in range(rng.randint(1, 4))] for _ in range(3)],
            rng.randrange(3),
        )
        for _ in range(n)
    ]


@pytest.mark.slow
def test_a_generation_that_hangs_or_crashes_costs_that_model_only_that_task(tmp_path: Path) -> None:
    prompts = [ids[:p] for ids, p in make_samples(6)]
    jobs = [
        EvalJob("good-a", tmp_path / "model-1"),
        EvalJob("gen-hangs", tmp_path / "genhang-2"),
        EvalJob("gen-aborts", tmp_path / "genabort-3"),
        EvalJob("good-b", tmp_path / "model-4"),
    ]
    options = {"eos_ids": [0], "max_new_tokens": 5}
    with Evaluator(["cpu"], loader=LOADER, timeout_s=60, startup_timeout_s=120) as evaluator:
        generated = evaluator.evaluate(
            jobs, prompts, method=Method.GENERATION_RULES, options=options, timeout_s=12
        )
        # the same models, the next task of the step: the traps only fire while generating
        losses = evaluator.evaluate(jobs, make_samples(6))
        questions = make_questions(5)
        choices = evaluator.evaluate(jobs[:1], questions, method="multiple_choice")
    for key, seed in (("good-a", 1), ("good-b", 4)):
        want = greedy_generate(tiny_model(seed), prompts, "cpu", eos_ids=[0], max_new_tokens=5)
        assert generated[key].error is None and generated[key].outputs == want
    assert "timeout" in (generated["gen-hangs"].error or "")
    assert "crashed" in (generated["gen-aborts"].error or "")
    for key in ("gen-hangs", "gen-aborts"):
        assert generated[key].outputs is None
        assert all(math.isnan(v) for v in generated[key].losses)  # a score of nan wins nothing
    for key, seed in (("good-a", 1), ("gen-hangs", 2), ("gen-aborts", 3), ("good-b", 4)):
        assert losses[key].error is None
        assert losses[key].losses == pytest.approx(expected(seed, make_samples(6)), abs=1e-5)
    assert choices["good-a"].losses == multiple_choice_scores(tiny_model(1), questions, "cpu")


def test_plain_samples_of_every_method_reach_the_worker_intact(tmp_path: Path) -> None:
    """A text-loss task in the worker equals the in-process method."""
    passages = [ids for ids, _ in make_samples(5)]
    with Evaluator(["cpu"], loader=LOADER) as evaluator:
        result = evaluator.evaluate([EvalJob("a", tmp_path / "model-5")], passages, method=Method.TEXT_LOSS)
    want = text_losses(tiny_model(5), [torch.tensor([ids]) for ids in passages], "cpu")
    assert result["a"].error is None and result["a"].losses == pytest.approx(want, abs=1e-5)
