"""The validator neuron: ``finetune-validator --help`` (or ``python neurons/validator.py``,
``python -m neurons.validator``).

Reads every miner's commitment, downloads and checks each model, scores them on fresh samples and sets
weights. ``--localnet DIR`` runs it on the embedded local network (see docs/local.md). The command line
is parsed and checked before torch and the network libraries are imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.validator.config import parse_args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utilities.logs import setup_logging

    setup_logging(debug=args.logging_debug, trace=args.logging_trace)
    from finetune.validator.config import build_validator, leaderboard_path
    from finetune.validator.serve import serve_leaderboard
    from model.network import connect
    from utilities.errors import FinetuneError

    try:
        validator = build_validator(args, connect(args))
    except FinetuneError as exc:
        print(f"finetune-validator: error: {exc}", file=sys.stderr)
        return 2
    if args.leaderboard_port is not None:
        try:
            serve_leaderboard(leaderboard_path(args), port=args.leaderboard_port, host=args.leaderboard_host)
        except OSError as exc:
            validator.evaluator.close()
            print(
                f"finetune-validator: error: --leaderboard.port {args.leaderboard_port}: {exc}",
                file=sys.stderr,
            )
            return 2
    from finetune.validator.shutdown import run_until_signalled

    # SIGTERM (pm2 stop) or SIGINT stop the validator within seconds, whatever it is waiting on
    run_until_signalled(validator, max_steps=args.max_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
