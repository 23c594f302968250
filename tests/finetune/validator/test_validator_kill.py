"""kill -9 the validator neuron mid-run; a restart resumes from the last finished step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune.validator.config import build_parser, build_validator
from finetune.validator.state import ValidatorState
from model.network import connect, local_wallet
from tests.finetune.validator.localnet import LocalNet, save_tiny

ROOT = Path(__file__).resolve().parents[3]


def neuron_args(root: Path) -> list[str]:
    return [
        "--localnet", str(root), "--wallet.name", "validator", "--device", "cpu", "--wandb.off",
        "--state_dir", str(root / "state"), "--model_dir", str(root / "models"),
        "--latest_cortex_samples", "16", "--sample_min", "2",
    ]  # fmt: skip


def read_step(state_file: Path) -> int:
    try:
        return int(json.loads(state_file.read_text())["step"])
    except (FileNotFoundError, ValueError, KeyError):
        return -1


@pytest.mark.slow
def test_kill_minus_nine_then_resume(tmp_path: Path) -> None:
    net = LocalNet(tmp_path)
    for seed, name in enumerate(("alpha", "beta", "gamma")):
        net.publish(name, save_tiny(tmp_path / "src" / name, seed=seed))
    net.ripen()  # every model old enough for the current sync window
    hotkey = local_wallet(tmp_path / "wallets", "validator", "default").hotkey.ss58_address
    net.chain.register(hotkey, stake=100.0, validator_permit=True)
    state_file = tmp_path / "state" / "validator_state.json"

    process = subprocess.Popen(
        [sys.executable, str(ROOT / "neurons" / "validator.py"), *neuron_args(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while read_step(state_file) < 3 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert read_step(state_file) >= 3, "the validator did not finish three steps"
        os.killpg(process.pid, signal.SIGKILL)  # the neuron and its evaluation worker, mid-step
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    saved = ValidatorState.load(state_file)  # whole and parseable: written atomically
    assert saved.step >= 3 and saved.scores and saved.history[-1].step == saved.step - 1

    args = build_parser().parse_args(neuron_args(tmp_path))
    restarted = build_validator(args, connect(args))
    try:
        assert restarted.state == saved
        assert not list(state_file.parent.glob(".*.tmp"))  # what a cut write left is removed at start
        expected = dict(zip(*restarted.weights_to_set(net.chain.metagraph()), strict=True))
        net.chain.advance(restarted.settings.blocks_per_epoch)
        assert restarted.maybe_set_weights()
        assert net.chain.weights(hotkey) == pytest.approx(expected)
        restarted.sync_models()
        report = restarted.step()
        assert report is not None and report.step == saved.step
    finally:
        restarted.evaluator.close()
