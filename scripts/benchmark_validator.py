"""Validator at scale on the local network: N miners with tiny models, the updater's full sync, steps.

    python scripts/benchmark_validator.py --miners 255 --steps 3   # 255 miners + the validator = 256 uids

Prints the time of the updater's first full sync (download, hash, checks of every model), of each
step, the validator's peak memory, and the sizes of what could grow (state file, tracker file, model
store) after each step: they must stay flat.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transformers
from rich.console import Console
from rich.table import Table

from tests.finetune.validator.localnet import LocalNet, save_tiny


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--miners", type=int, default=255, help="the subnet has 256 uids, one is ours")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100, help="samples per step")
    parser.add_argument("--max_new_per_step", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-validator-") as tmp:
        root = args.dir or Path(tmp)
        net = LocalNet(root)
        started = time.perf_counter()
        for i in range(args.miners):
            folder = save_tiny(root / "src" / f"m{i}", seed=i)
            net.publish(f"miner{i}", folder)
        publish_s = time.perf_counter() - started
        net.ripen()  # every model old enough for the local competition's sync window
        validator = net.validator(
            max_downloads=args.miners,  # one full pass, for the measurement
            samples_per_step=args.samples,
            max_new_per_step=args.max_new_per_step,
        )
        try:
            started = time.perf_counter()
            validator.sync_models()
            sync_s = time.perf_counter() - started
            ok = sum(r.status == "ok" for r in validator.tracker.records().values())
            table = Table(title=f"validator with {args.miners} miners ({ok} models ok)")
            for column in ("step", "models", "seconds", "state file", "tracker file", "model store"):
                table.add_column(column, justify="right")
            for _ in range(args.steps):
                started = time.perf_counter()
                report = validator.step()
                seconds = time.perf_counter() - started
                table.add_row(
                    str(validator.state.step - 1),
                    str(len(report.rows) if report else 0),
                    f"{seconds:.1f}",
                    f"{validator.settings.state_file.stat().st_size / 1e3:.1f} kB",
                    f"{validator.settings.tracker_file.stat().st_size / 1e3:.1f} kB",
                    _mb(_folder_bytes(root / "models")),
                )
        finally:
            validator.evaluator.close()
        console.print(f"publish {args.miners} miners: {publish_s:.1f} s")
        per_model = sync_s / max(args.miners, 1) * 1000
        console.print(f"updater full sync: {sync_s:.1f} s ({per_model:.0f} ms per model)")
        console.print(table)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        console.print(f"peak memory: validator {_mb(peak)}, evaluation worker {_mb(workers)}")


if __name__ == "__main__":
    main()
