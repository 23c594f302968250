"""The miner neuron: ``python neurons/miner.py --help`` (or ``accelerate launch neurons/miner.py ...``).

Fine-tunes a model on the competition's data, keeps the best one and publishes it: upload to the hub,
commit its hash on chain. ``--localnet DIR`` mines on the embedded local network (docs/miner.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.miner_config import build_miner, build_parser, check_args, hub_user, print_competitions
from model.network import connect
from utilities.errors import FinetuneError
from utilities.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(debug=args.logging_debug, trace=args.logging_trace)
    try:
        check_args(args)
        if args.list_competitions:
            print_competitions(connect(args, need_wallet=False))
            return 0
        miner = build_miner(args, connect(args, hub_user=hub_user(args)))
    except FinetuneError as exc:
        parser.exit(2, f"miner: {exc}\n")
    try:
        result = miner.run()
    except KeyboardInterrupt:
        print(f"interrupted: the best model so far is in {miner.best_folder}", file=sys.stderr)
        return 130
    print(
        f"held-out loss {result.initial_loss:.4f} -> best {result.best_loss:.4f} after {result.steps} steps; "
        f"best model in {miner.best_folder}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
