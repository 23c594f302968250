"""The validator neuron: ``python neurons/validator.py --help``.

Reads every miner's commitment, downloads and checks each model, scores them on fresh samples and sets
weights. ``--localnet DIR`` runs it on the embedded local network (see docs/local.md).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.validator.config import build_parser, build_validator
from model.network import connect
from utilities.errors import FinetuneError
from utilities.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--max_steps", type=int, default=None, help="stop after this many steps")
    args = parser.parse_args(argv)
    setup_logging(debug=args.logging_debug, trace=args.logging_trace)
    try:
        validator = build_validator(args, connect(args))
    except FinetuneError as exc:
        parser.exit(2, f"validator: {exc}\n")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        validator.run(stop=stop, max_steps=args.max_steps)
    finally:
        validator.evaluator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
