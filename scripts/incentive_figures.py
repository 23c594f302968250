"""Incentive soundness on the local network, measured (the figures in docs/local.md).

    python scripts/incentive_figures.py

1. An incumbent model (trained briefly) and a copier that re-uploads it one block later run alone
   until the scores settle: the copier's share of the incumbent's weight.
2. A clearly better model (trained longer) is published: how many steps until its score passes the
   incumbent's (the moving average, alpha 0.9, decides how fast).
3. A second validator with its own state evaluates later in the same sync window: the largest
   difference between the two validators' step weights.

Each newly published model is first made old enough for the local competition's sync window
(``LocalNet.ripen``). ``python scripts/winner_growth.py`` computes figure 2's growth from the rules alone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import transformers

from constants.competitions import LOCAL
from finetune.data import SyntheticSource
from finetune.mining import fresh_model
from finetune.tokenization import load_tokenizer
from finetune.training import TrainConfig, save_model, train
from tests.finetune.validator.localnet import LocalNet


def trained(folder: Path, *, samples: int, epochs: int) -> Path:
    tokenizer = load_tokenizer(LOCAL)
    config = TrainConfig(
        lr=3e-3, num_epochs=epochs, samples_per_epoch=samples, accumulation_steps=1, micro_batch_size=8,
        eval_samples=32, sequence_length=128, seed=epochs,
    )  # fmt: skip
    result = train(
        fresh_model(LOCAL, seed=0, dtype=torch.float32), tokenizer,
        SyntheticSource("train"), SyntheticSource("heldout"), config,
    )  # fmt: skip
    print(f"trained {folder.name}: held-out loss {result.initial_loss:.3f} -> {result.best_loss:.3f}")
    return save_model(result.model, tokenizer, folder)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=64, help="validator samples per step")
    parser.add_argument("--settle_steps", type=int, default=12)
    parser.add_argument("--max_steps", type=int, default=40)
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="incentive-") as tmp:
        root = Path(tmp)
        incumbent = trained(root / "src" / "incumbent", samples=256, epochs=1)
        better = trained(root / "src" / "better", samples=1024, epochs=3)
        net = LocalNet(root)
        net.publish("incumbent", incumbent)
        net.chain.advance(1)
        net.publish("copier", incumbent)
        net.ripen()
        validator = net.validator(samples_per_step=args.samples)
        try:
            validator.sync_models()
            for _ in range(args.settle_steps):
                validator.step()
            scores = validator.state.scores
            copier_share = scores.get("copier", 0.0) / scores["incumbent"]
            print(f"1. copier's score / incumbent's after {args.settle_steps} steps: {copier_share:.4f}")

            net.chain.advance(1)
            net.publish("better", better)
            net.ripen()
            validator.sync_models()
            steps = 0
            while steps < args.max_steps:
                validator.step()
                steps += 1
                if validator.state.scores.get("better", 0.0) > validator.state.scores["incumbent"]:
                    break
            print(f"2. steps for the better model to overtake the incumbent: {steps}")

            second = net.validator(state_dir=root / "second", samples_per_step=args.samples)
            try:
                second.sync_models()
                first_report, second_report = validator.step(), second.step()
            finally:
                second.evaluator.close()
            assert first_report is not None and second_report is not None
            mine = {r.hotkey: r.weight for r in first_report.rows}
            theirs = {r.hotkey: r.weight for r in second_report.rows}
            diff = max(abs(mine[h] - theirs.get(h, 0.0)) for h in mine)
            print(
                f"3. two validators in the window of block {first_report.block}:"
                f" max |weight difference| {diff:.3g}"
            )
        finally:
            validator.evaluator.close()
        shutil.rmtree(root / "src", ignore_errors=True)


if __name__ == "__main__":
    main()
