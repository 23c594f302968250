"""How fast the neurons answer ``--help`` and a bad argument (both must come well under 2 s: the command
line is parsed before torch, transformers and bittensor are imported).

    python scripts/benchmark_startup.py [--repeat 3]

Prints the best wall-clock time of several runs of each command, in seconds."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "validator --help": ["neurons/validator.py", "--help"],
    "validator bad value": ["neurons/validator.py", "--dtype", "float7"],
    "miner --help": ["neurons/miner.py", "--help"],
    "miner bad value": ["neurons/miner.py", "--offline", "--lr", "nan"],
}
LIMIT_S = 2.0


def best_time(argv: list[str], repeat: int) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times, code = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
        code = done.returncode
    return min(times), code


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (the best is printed)")
    args = parser.parse_args(argv)
    slow = 0
    for name, command in COMMANDS.items():
        seconds, code = best_time(command, max(1, args.repeat))
        slow += seconds >= LIMIT_S
        print(f"{name:24s} {seconds:6.2f} s  (exit status {code})")
    print(f"limit {LIMIT_S:.1f} s: {'all under' if not slow else f'{slow} over'}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
