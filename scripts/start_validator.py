"""Run the validator under pm2 and keep it up to date (auto-update).

    python scripts/start_validator.py --pm2_name finetune-validator -- --wallet.name cold --wallet.hotkey hot

Starts ``neurons/validator.py`` under pm2 with the arguments after ``--``, then every
``--check_minutes`` fetches the git upstream of the current branch. When the upstream has new commits
it pulls them (fast-forward only), reinstalls the package and its pinned requirements, and restarts
the pm2 process. A failed pull or install is logged and leaves the running validator untouched.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("start_validator")

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)


def pm2_start_command(name: str, validator_args: Sequence[str]) -> list[str]:
    return [
        "pm2", "start", str(ROOT / "neurons" / "validator.py"), "--name", name,
        "--interpreter", sys.executable, "--", *validator_args,
    ]  # fmt: skip


def update_available(runner: Runner) -> bool:
    """Whether the upstream of the current branch has commits that HEAD lacks."""
    if runner(["git", "fetch", "--quiet"]).returncode != 0:
        logger.warning("git fetch failed: staying on the current version")
        return False
    local = runner(["git", "rev-parse", "HEAD"]).stdout.strip()
    upstream = runner(["git", "rev-parse", "@{upstream}"])
    if upstream.returncode != 0:
        logger.warning("the current branch has no upstream: auto-update is off")
        return False
    return bool(local) and local != upstream.stdout.strip()


def apply_update(name: str, runner: Runner) -> bool:
    """Pull, reinstall, restart; returns whether the validator was restarted on the new version."""
    steps = [
        ["git", "pull", "--ff-only", "--quiet"],
        [sys.executable, "-m", "pip", "install", "--quiet", "-r", "requirements.txt"],
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", "."],
    ]
    for command in steps:
        result = runner(command)
        if result.returncode != 0:
            logger.error("update step %s failed: %s", " ".join(command), result.stderr.strip()[-2000:])
            return False
    restarted = runner(["pm2", "restart", name]).returncode == 0
    logger.info("updated to %s and %s", runner(["git", "rev-parse", "--short", "HEAD"]).stdout.strip(),
                "restarted" if restarted else "FAILED to restart")  # fmt: skip
    return restarted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pm2_name", default="finetune-validator", help="pm2 process name")
    parser.add_argument("--check_minutes", type=float, default=15.0, help="minutes between update checks")
    parser.add_argument("validator_args", nargs=argparse.REMAINDER, help="arguments for the validator")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if shutil.which("pm2") is None:
        parser.exit(2, "pm2 is not installed: npm install -g pm2\n")
    validator_args = [a for a in args.validator_args if a != "--"]
    runner = run
    runner(["pm2", "delete", args.pm2_name])  # a stale process of the same name
    started = runner(pm2_start_command(args.pm2_name, validator_args))
    if started.returncode != 0:
        parser.exit(1, f"pm2 start failed: {started.stderr}\n")
    while True:
        time.sleep(args.check_minutes * 60)
        if update_available(runner):
            apply_update(args.pm2_name, runner)


if __name__ == "__main__":
    sys.exit(main())
