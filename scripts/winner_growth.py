"""How fast a new winner's share of the weights grows under the rules the validator keeps.

    python scripts/winner_growth.py [--alpha 0.9] [--competitions 2] [--steps 30]

An incumbent holds a competition's whole share; a new model that beats it on every sample is published.
Each step of that competition runs the real rules (``finetune.validation.score_step`` for the step's
weights, ``finetune.rules.step_scores`` for the per-competition moving average, ``chain_weights`` for
what is sent); the table prints the two models' shares of this validator's chain weights after each
step of the competition, and when the new model passes the incumbent. With several competitions a
competition steps every ``competitions``-th step (round robin), so the growth per validator step is
slower by that factor; other competitions' weights are untouched by its steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from constants import ALPHA
from constants.competitions import L3
from finetune.rules import chain_weights, step_scores
from finetune.validation import score_step


@dataclasses.dataclass(frozen=True)
class Point:
    step: int
    """Steps of this competition since the new model was published."""
    new_share: float
    incumbent_share: float


def growth(*, alpha: float = ALPHA, steps: int = 30, competitions: int = 2) -> list[Point]:
    """The new winner's and the incumbent's share of this validator's weights after each step of
    their competition (the other competitions hold the rest, unchanged)."""
    if competitions < 1 or steps < 1:
        raise ValueError("need competitions >= 1 and steps >= 1")
    share = 1.0 / competitions
    competition = L3.replace(reward_share=share)
    others = {f"other{i}": share for i in range(competitions - 1)}
    scores = {"incumbent": share, **others}
    losses = {1: [2.0] * 50, 2: [1.0] * 50}  # the new model (uid 2) wins every sample, beyond epsilon
    points = []
    for step in range(1, steps + 1):
        result = score_step(
            [1, 2], losses, {1: 100, 2: 5_000}, {1: "a", 2: "b"}, competition=competition, current_block=6_000
        )
        step_weights = {"incumbent": result.weights[1], "new": result.weights[2]}
        scores = step_scores(
            scores, step_weights, members={"incumbent", "new"}, elsewhere=set(others), alpha=alpha
        )
        hotkeys = ["incumbent", "new", *others]
        weights = dict(zip(hotkeys, chain_weights(hotkeys, scores, min_nonzero=1), strict=True))
        points.append(Point(step, weights["new"], weights["incumbent"]))
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alpha", type=float, default=ALPHA, help="moving-average factor")
    parser.add_argument("--competitions", type=int, default=2, help="competitions stepped round robin")
    parser.add_argument("--steps", type=int, default=30, help="steps of the winner's competition")
    parser.add_argument(
        "--window_blocks", type=int, default=L3.sync_interval_blocks, help="blocks per step of a competition"
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.alpha < 1.0:
        parser.error(f"--alpha must be in [0, 1), got {args.alpha}")
    if args.competitions < 1 or args.steps < 1 or args.window_blocks < 1:
        parser.error("--competitions, --steps and --window_blocks must be >= 1")
    points = growth(alpha=args.alpha, steps=args.steps, competitions=args.competitions)
    print(f"alpha {args.alpha}, {args.competitions} competition(s), one step of the competition per "
          f"{args.window_blocks} blocks (~{args.window_blocks * 12 / 60:.0f} min)")  # fmt: skip
    print(f"{'step':>4} {'blocks':>7} {'new winner':>11} {'incumbent':>10}")
    for p in points:
        print(f"{p.step:>4} {p.step * args.window_blocks:>7} {p.new_share:>11.4f} {p.incumbent_share:>10.4f}")
    passed = next((p for p in points if p.new_share > p.incumbent_share), None)
    if passed is None:
        print(f"the new winner has not passed the incumbent after {args.steps} steps")
    else:
        blocks = passed.step * args.window_blocks
        print(
            f"the new winner passes the incumbent at step {passed.step}"
            f" (~{blocks} blocks, {blocks * 12 / 3600:.1f} h)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
