"""The miner neuron: ``finetune-miner --help`` (or ``python neurons/miner.py``, ``python -m neurons.miner``,
``accelerate launch neurons/miner.py ...``).

Fine-tunes a model on the competition's data, keeps the best one and publishes it: upload to the hub,
commit its hash on chain. ``--localnet DIR`` mines on the embedded local network (docs/miner.md).
The command line is parsed and checked before torch and the network libraries are imported.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.miner_config import parse_args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utilities.logs import setup_logging

    setup_logging(debug=args.logging_debug, trace=args.logging_trace)
    from finetune.miner_config import build_miner, hub_user, print_schedule
    from model.network import connect
    from utilities.errors import FinetuneError

    if args.list_competitions:
        if not (args.logging_debug or args.logging_trace):  # the chain probe's retries are not news here
            logging.getLogger().setLevel(logging.ERROR)
        if not print_schedule(args):  # the chain probe may still be retrying: do not wait for it
            sys.stdout.flush()
            os._exit(0)
        return 0
    try:
        miner = build_miner(args, connect(args, hub_user=hub_user(args)))
    except FinetuneError as exc:
        print(f"finetune-miner: error: {exc}", file=sys.stderr)
        return 2
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
