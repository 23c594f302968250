"""Benchmark the batched loss engine (finetune/losses.py) against the seed's one-sample-at-a-time loop.

Models are built from configs with random weights (nothing is downloaded); samples are random token ids
shaped like chat data (prompt 20-200 tokens, response 20-300). Both variants run interleaved, several
times; the best time of each is reported, with tokens/s, the speed ratio, the largest |difference| of
the losses and the model-FLOPs utilization of the engine.

    python scripts/benchmark_eval.py                      # CPU, 2 threads, three small Llama shapes
    python scripts/benchmark_eval.py --quick              # the same, in well under 30 s
    python scripts/benchmark_eval.py --device cpu --shape tiny --dtype bfloat16
    python scripts/benchmark_eval.py --device cuda --shape llama3-8b --samples 256
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark_wins import benchmark_wins  # scripts/ is on sys.path when run as a script

from finetune.losses import Sample, compute_losses, compute_losses_reference


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int


SHAPES = {
    "tiny": Shape(2, 64, 128, 4, 2, 1000),
    "small-2k": Shape(2, 128, 344, 4, 4, 2048),
    "small-32k": Shape(2, 128, 344, 4, 4, 32000),
    "medium-32k": Shape(4, 256, 688, 8, 8, 32000),
    "llama3-8b": Shape(32, 4096, 14336, 32, 8, 128256),
}
CPU_SUITE = ("small-2k", "small-32k", "medium-32k")


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype) -> LlamaForCausalLM:
    """A Llama of the given shape with random weights, created directly on ``device`` in ``dtype``."""
    config = LlamaConfig(
        hidden_size=shape.hidden, intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab,
        max_position_embeddings=8192, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def make_samples(count: int, vocab: int, seed: int) -> list[Sample]:
    """Random chat-like samples: prompt 20-200 tokens, response 20-300 tokens, in random order."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    samples: list[Sample] = []
    for _ in range(count):
        prompt, response = rng.randint(20, 200), rng.randint(20, 300)
        samples.append((torch.randint(0, vocab, (1, prompt + response), generator=generator), prompt))
    return samples


def forward_flops(shape: Shape, samples: Sequence[Sample], full_head: bool) -> float:
    """Forward FLOPs: 2 x matmul params x tokens, plus causal attention (QK^T and AV: 2 x layers x d x T^2).

    ``full_head`` counts the LM head at every position (what a plain forward computes, the usual MFU
    convention); otherwise only at the scored positions (the work the engine needs).
    """
    head = shape.vocab * shape.hidden
    attention = shape.hidden * (2 * shape.hidden + 2 * shape.hidden * shape.kv_heads // shape.heads)
    body = shape.layers * (attention + 3 * shape.hidden * shape.intermediate)
    total = 0.0
    for ids, prompt_len in samples:
        length = ids.shape[-1]
        scored = length if full_head else length - prompt_len
        total += 2 * body * length + 2 * head * scored + 2 * shape.layers * shape.hidden * length**2
    return total


def timed(run: Callable[[], list[float]], device: torch.device) -> tuple[float, list[float]]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    losses = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, losses


def bench_shape(name: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    shape = SHAPES[name]
    torch.manual_seed(0)
    model = build_model(shape, device, dtype)
    samples = make_samples(args.samples, shape.vocab, seed=1)
    tokens = sum(ids.shape[-1] for ids, _ in samples)
    budgets = [int(b) if b else None for b in args.token_budget.split(",")]
    variants: dict[str, Callable[[], list[float]]] = {}
    if not args.skip_reference:
        variants["seed (1 at a time)"] = partial(compute_losses_reference, model, samples, device)
    for budget in budgets:
        variants[f"engine (budget {budget or 'default'})"] = partial(compute_losses, model, samples, device,
                                                          token_budget=budget)

    compute_losses(model, samples[:4], device)  # warm-up: allocator, kernels, lazy initialisation
    compute_losses_reference(model, samples[:2], device)
    best = dict.fromkeys(variants, math.inf)
    results: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        names = list(variants) if repeat % 2 == 0 else list(reversed(variants))
        for variant in names:
            seconds, results[variant] = timed(variants[variant], device)
            best[variant] = min(best[variant], seconds)

    print(f"\n== {name}: {shape}, {len(samples)} samples, {tokens} tokens, {dtype}, {device}")
    seed_name = next(iter(variants)) if not args.skip_reference else None
    for variant, seconds in best.items():
        line = f"  {variant:24s} {seconds:8.3f} s  {tokens / seconds:10.0f} tokens/s"
        if seed_name and variant != seed_name:
            diff = max(abs(a - b) for a, b in zip(results[seed_name], results[variant], strict=True))
            line += f"  x{best[seed_name] / seconds:5.2f} vs seed, max |diff| {diff:.2e}"
        print(line)
    engine_time = min(seconds for variant, seconds in best.items() if variant != seed_name)
    for label, full_head in (("2*params*tokens + attn", True), ("work needed: head on responses", False)):
        achieved = forward_flops(shape, samples, full_head) / engine_time / 1e12
        print(f"  engine MFU [{label}]: {achieved:.3f} TFLOP/s = {100 * achieved / args.peak_tflops:.2f}% "
              f"of {args.peak_tflops:g} TFLOP/s peak")


def main(argv: Sequence[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="cpu-suite", choices=[*SHAPES, "cpu-suite"])
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--samples", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (set here only)")
    parser.add_argument("--token_budget", default="", help="comma list; empty: engine default")
    parser.add_argument("--peak_tflops", type=float, default=989.0, help="peak dense TFLOP/s (H100 SXM bf16)")
    parser.add_argument("--skip_reference", action="store_true", help="time the engine only")
    parser.add_argument("--quick", action="store_true", help="few samples and repeats (< 30 s on 2 cores)")
    parser.add_argument("--skip_wins", action="store_true", help="do not time the win counting")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.repeats = min(args.samples, 24), min(args.repeats, 2)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    for name in CPU_SUITE if args.shape == "cpu-suite" else (args.shape,):
        bench_shape(name, args, device, dtype)
    if not args.skip_wins:
        # the seed's python double loop against finetune.validation.compute_wins (target: <= 50 ms)
        result = benchmark_wins(256, 400, repeats=2 if args.quick else 5)
        print(f"\n== wins, 256 models x 400 samples: loop {result['loop_ms']:.0f} ms, "
              f"vectorized {result['vectorized_ms']:.1f} ms ({result['speedup']:.0f}x), "
              f"identical: {result['identical']}")


if __name__ == "__main__":
    main()
