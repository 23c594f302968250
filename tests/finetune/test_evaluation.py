from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from finetune.evaluation import EvalJob, Evaluator
from finetune.losses import compute_losses
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
