"""Benchmark ``finetune.validation.compute_wins`` against the seed's python double loop (SN6 style).

Run from the repository root: ``python scripts/benchmark_wins.py [--repeats N]``. Prints, for each size,
the best-of-N milliseconds of both, their ratio, and whether their results are identical.
``benchmark_wins(n_models, n_samples, repeats)`` returns the same numbers for other scripts.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from constants import TIMESTAMP_EPSILON  # noqa: E402
from finetune.validation import compute_wins  # noqa: E402

SIZES = ((16, 100), (64, 400), (128, 400), (256, 400))


def loop_compute_wins(
    uids: Sequence[int],
    losses_per_uid: Mapping[int, Sequence[float]],
    uid_to_block: Mapping[int, int],
    epsilon: float | Mapping[int, float] = TIMESTAMP_EPSILON,
) -> tuple[dict[int, int], dict[int, float]]:
    """The seed's rule as a plain python double loop over pairs and samples."""
    eps = epsilon if isinstance(epsilon, Mapping) else dict.fromkeys(uids, float(epsilon))
    n_samples = len(losses_per_uid[uids[0]]) if uids else 0
    wins = dict.fromkeys(uids, 0)
    win_rate = dict.fromkeys(uids, 0.0)
    for uid_i in uids:
        matches = 0
        block_i = uid_to_block[uid_i]
        for uid_j in uids:
            if uid_i == uid_j:
                continue
            block_j = uid_to_block[uid_j]
            for b in range(n_samples):
                loss_i = losses_per_uid[uid_i][b]
                loss_j = losses_per_uid[uid_j][b]
                loss_i = (1 - eps[uid_i]) * loss_i if block_i < block_j else loss_i
                loss_j = (1 - eps[uid_j]) * loss_j if block_j < block_i else loss_j
                if loss_i < loss_j:
                    wins[uid_i] += 1
                matches += 1
        win_rate[uid_i] = wins[uid_i] / matches if matches else (1.0 if len(uids) == 1 else 0.0)
    return wins, win_rate


def _case(
    n_models: int, n_samples: int, seed: int
) -> tuple[list[int], dict[int, list[float]], dict[int, int], dict[int, float]]:
    """Realistic losses (around 2-3 nats, a few inf/nan, some exact ties), blocks with repeats."""
    rng = random.Random(seed)
    uids = list(range(n_models))
    base = [rng.uniform(1.5, 3.5) for _ in range(n_samples)]
    losses: dict[int, list[float]] = {}
    for uid in uids:
        skill = rng.uniform(-0.2, 0.2)
        row = [x + skill + rng.gauss(0.0, 0.05) for x in base]
        for b in rng.sample(range(n_samples), k=min(n_samples, 2)):
            row[b] = rng.choice([float("inf"), float("nan"), base[b]])
        losses[uid] = row
    blocks = {uid: rng.randrange(1000, 1000 + max(1, n_models // 2)) for uid in uids}
    epsilon = {uid: rng.choice([0.0, 0.005, TIMESTAMP_EPSILON]) for uid in uids}
    return uids, losses, blocks, epsilon


def _best_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best = float("inf")
    result: Any = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3, result


def benchmark_wins(n_models: int, n_samples: int, repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """Best-of-``repeats`` ms of the loop and of ``compute_wins`` on one random case, and whether the
    results (wins and win rates) are identical. The loop runs fewer times on big sizes (>= 1)."""
    uids, losses, blocks, epsilon = _case(n_models, n_samples, seed)
    loop_repeats = max(1, min(repeats, 2)) if n_models * n_models * n_samples > 4_000_000 else repeats
    loop_ms, expected = _best_ms(lambda: loop_compute_wins(uids, losses, blocks, epsilon), loop_repeats)
    fast_ms, got = _best_ms(lambda: compute_wins(uids, losses, blocks, epsilon), repeats)
    return {
        "n_models": n_models,
        "n_samples": n_samples,
        "loop_ms": loop_ms,
        "vectorized_ms": fast_ms,
        "speedup": loop_ms / fast_ms if fast_ms > 0 else float("inf"),
        "identical": got == expected,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{'models':>6} {'samples':>7} {'loop ms':>10} {'numpy ms':>9} {'ratio':>8} identical")
    all_identical = True
    for n_models, n_samples in SIZES:
        r = benchmark_wins(n_models, n_samples, args.repeats)
        all_identical &= bool(r["identical"])
        print(
            f"{n_models:>6} {n_samples:>7} {r['loop_ms']:>10.1f} {r['vectorized_ms']:>9.2f} "
            f"{r['speedup']:>7.0f}x {r['identical']}"
        )
    return 0 if all_identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
