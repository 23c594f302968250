"""Benchmark each evaluation method (finetune/tasks) against its one-sample-at-a-time reference.

Models are Llamas built from a config with random weights (nothing is downloaded); samples are random
token ids. For every method the batched variant and its reference run interleaved, several times; the
best time of each is reported with its throughput, the speed ratio and whether the results agree:

- response loss: ``compute_losses`` vs ``compute_losses_reference`` (max |diff| of the losses);
- text loss: ``text_losses`` vs ``model(ids, labels=ids)`` per passage;
- multiple choice: choices on the shared prompt (one prompt pass, cached) vs the response-loss engine
  (the prompt recomputed per choice, batched) vs one choice at a time; answers must agree;
- generation: greedy, left-padded batches with the cache vs one prompt at a time with the cache
  (``batch_size=1``) vs one prompt at a time re-running the whole sequence per token; outputs equal.

    python scripts/benchmark_tasks.py                  # CPU, 2 threads, the small-2k Llama
    python scripts/benchmark_tasks.py --quick          # the same, smaller, in well under a minute
    python scripts/benchmark_tasks.py --device cuda --shape medium-32k --scale 4
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark_eval import SHAPES, build_model  # scripts/ is on sys.path when run as a script

from finetune.losses import compute_losses, compute_losses_reference
from finetune.tasks.choice import ChoiceQuestion, choice_losses, choice_losses_reference, pick_scores
from finetune.tasks.generation import greedy_generate, greedy_generate_reference
from finetune.tasks.loss_methods import text_losses, text_losses_reference


def _ids(rng: random.Random, vocab: int, low: int, high: int) -> list[int]:
    return [rng.randrange(1, vocab) for _ in range(rng.randint(low, high))]


def _timed(run: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def _race(
    variants: Mapping[str, Callable[[], Any]], device: torch.device, repeats: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Best time and last result of each variant, run interleaved (order alternating)."""
    best = dict.fromkeys(variants, math.inf)
    results: dict[str, Any] = {}
    for repeat in range(repeats):
        for name in list(variants) if repeat % 2 == 0 else list(variants)[::-1]:
            seconds, results[name] = _timed(variants[name], device)
            best[name] = min(best[name], seconds)
    return best, results


def _report(title: str, work: float, unit: str, best: dict[str, float], agreement: dict[str, str]) -> None:
    reference = next(reversed(best))  # the last variant is the one-at-a-time reference
    print(f"\n== {title}")
    for name, seconds in best.items():
        line = f"  {name:34s} {seconds:8.3f} s  {work / seconds:10.1f} {unit}/s"
        if name != reference:
            line += f"  x{best[reference] / seconds:6.2f} vs reference, {agreement.get(name, '')}"
        print(line)


def _max_diff(a: Sequence[float], b: Sequence[float]) -> float:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if math.isfinite(x) or math.isfinite(y)]
    return max((abs(x - y) for x, y in pairs), default=0.0)


def bench_losses(model: torch.nn.Module, vocab: int, device: torch.device, args: argparse.Namespace) -> None:
    rng = random.Random(1)
    samples = []
    for _ in range(args.samples):
        prompt, response = _ids(rng, vocab, 20, 120), _ids(rng, vocab, 20, 120)
        samples.append((torch.tensor([prompt + response]), len(prompt)))
    tokens = sum(ids.shape[1] for ids, _ in samples)
    variants = {
        "engine": partial(compute_losses, model, samples, device),
        "reference (1 at a time)": partial(compute_losses_reference, model, samples, device),
    }
    best, results = _race(variants, device, args.repeats)
    diff = _max_diff(results["engine"], results["reference (1 at a time)"])
    _report(f"response loss: {len(samples)} samples, {tokens} tokens", tokens, "tokens", best,
            {"engine": f"max |diff| {diff:.1e}"})  # fmt: skip

    passages = [torch.tensor([_ids(rng, vocab, 64, 256)]) for _ in range(args.samples)]
    tokens = sum(p.shape[1] for p in passages)
    variants = {
        "text_losses": partial(text_losses, model, passages, device),
        "reference (1 at a time)": partial(text_losses_reference, model, passages, device),
    }
    best, results = _race(variants, device, args.repeats)
    diff = _max_diff(results["text_losses"], results["reference (1 at a time)"])
    _report(f"text loss: {len(passages)} passages, {tokens} tokens", tokens, "tokens", best,
            {"text_losses": f"max |diff| {diff:.1e}"})  # fmt: skip


def bench_choice(model: torch.nn.Module, vocab: int, device: torch.device, args: argparse.Namespace) -> None:
    rng = random.Random(2)
    questions = [
        ChoiceQuestion.of(
            _ids(rng, vocab, 40, 160), [_ids(rng, vocab, 2, 8) for _ in range(4)], rng.randrange(4)
        )
        for _ in range(args.samples)
    ]
    variants = {
        "shared prompt (cached)": partial(choice_losses, model, questions, device),
        "engine (prompt per choice)": partial(choice_losses, model, questions, device, shared_prompt=False),
        "reference (1 choice at a time)": partial(choice_losses_reference, model, questions, device),
    }
    best, results = _race(variants, device, args.repeats)
    reference = results["reference (1 choice at a time)"]
    answers = pick_scores(reference, questions)
    agreement = {}
    for name in ("shared prompt (cached)", "engine (prompt per choice)"):
        diff = max(_max_diff(a, b) for a, b in zip(results[name], reference, strict=True))
        same = pick_scores(results[name], questions) == answers
        agreement[name] = f"max |diff| {diff:.1e}, same answers: {same}"
    _report(
        f"multiple choice: {len(questions)} questions x 4 choices",
        len(questions),
        "questions",
        best,
        agreement,
    )


def bench_generation(
    model: torch.nn.Module, vocab: int, device: torch.device, args: argparse.Namespace
) -> None:
    rng = random.Random(3)
    prompts = [_ids(rng, vocab, 20, 80) for _ in range(args.samples)]
    eos, new = [0], args.max_new_tokens
    variants = {
        f"batched (batch {args.batch_size}, left pad)": partial(
            greedy_generate,
            model,
            prompts,
            device,
            eos_ids=eos,
            max_new_tokens=new,
            batch_size=args.batch_size,
        ),
        "1 at a time, cached": partial(
            greedy_generate, model, prompts, device, eos_ids=eos, max_new_tokens=new, batch_size=1
        ),
        "reference (1 at a time, no cache)": partial(
            greedy_generate_reference, model, prompts, device, eos_ids=eos, max_new_tokens=new
        ),
    }
    best, results = _race(variants, device, args.repeats)
    reference = results["reference (1 at a time, no cache)"]
    generated = sum(len(out or []) for out in reference)
    agreement = {name: f"identical outputs: {results[name] == reference}" for name in variants}
    _report(
        f"generation: {len(prompts)} prompts, <= {new} new tokens", generated, "new tokens", best, agreement
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="small-2k", choices=list(SHAPES))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--batch_size", type=int, default=16, help="generation batch size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    parser.add_argument("--methods", default="losses,choice,generation")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.repeats, args.max_new_tokens = min(args.samples, 12), min(args.repeats, 2), 12
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = SHAPES[args.shape]
    torch.manual_seed(0)
    model = build_model(shape, device, getattr(torch, args.dtype))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device},",
        f"{args.shape} {shape}, {args.dtype}",
    )
    benches = {"losses": bench_losses, "choice": bench_choice, "generation": bench_generation}
    for name in args.methods.split(","):
        benches[name.strip()](model, shape.vocab, device, args)


if __name__ == "__main__":
    main()
