"""The miner's entry point and the scripts, run as subprocesses on the local network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from constants.competitions import LOCAL
from finetune.checks import ModelChecker
from model.data import ModelId
from model.hashing import hash_directory
from model.storage.chain.local_chain import LocalChain
from model.storage.hub.local_hub import LocalHub
from tests.finetune.zoo import build_valid

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--num_epochs", "1", "--cortex_samples_per_epoch", "32", "--micro_batch_size", "8",
        "--accumulation_steps", "1", "--sequence_length", "96", "--eval_samples", "16", "--device", "cpu",
        "--wandb.off"]  # fmt: skip


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.slow
def test_offline_miner_trains_end_to_end(tmp_path: Path) -> None:
    done = run("neurons/miner.py", "--localnet", str(tmp_path / "net"), "--offline",
               "--model_dir", str(tmp_path / "miner"), *TINY)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best model in" in done.stdout
    assert ModelChecker().check_folder(tmp_path / "miner" / "model", LOCAL) > 0
    assert LocalChain(tmp_path / "net" / "chain.sqlite").commitments() == {}


@pytest.mark.slow
def test_miner_publishes_on_the_local_network(tmp_path: Path) -> None:
    done = run("neurons/miner.py", "--localnet", str(tmp_path / "net"), "--hf_repo_id", "alice/tiny",
               "--model_dir", str(tmp_path / "miner"), *TINY)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (commitment,) = LocalChain(tmp_path / "net" / "chain.sqlite").commitments().values()
    model_id = ModelId.from_compressed_str(commitment.data)
    assert model_id.commit is not None
    served = LocalHub(tmp_path / "net" / "hub").download(
        "alice/tiny", commit=model_id.commit, dest=tmp_path / "v"
    )
    assert hash_directory(served) == model_id.hash


def test_list_competitions_prints_the_table(tmp_path: Path) -> None:
    done = run("neurons/miner.py", "--localnet", str(tmp_path / "net"), "--list_competitions")
    assert done.returncode == 0, done.stderr
    assert "local" in done.stdout and "LlamaForCausalLM" in done.stdout and "100%" in done.stdout
    assert "current block" in done.stdout and "yes" in done.stdout  # the local chain answers: marked


def test_help_and_missing_repo_id(tmp_path: Path) -> None:
    assert "--avg_loss_upload_threshold" in run("neurons/miner.py", "--help").stdout
    done = run("neurons/miner.py", "--localnet", str(tmp_path / "net"))
    assert done.returncode == 2 and "--hf_repo_id" in done.stderr
    assert "Traceback" not in done.stderr


def test_too_long_repo_name_fails_before_training(tmp_path: Path) -> None:
    done = run("neurons/miner.py", "--localnet", str(tmp_path / "net"), "--hf_repo_id", "a/" + "x" * 90)
    assert done.returncode == 2 and "cannot publish" in done.stderr


def test_chat_answers_one_prompt(tmp_path: Path) -> None:
    folder = build_valid(tmp_path / "model")
    done = run(
        "scripts/chat.py", "--model_dir", str(folder), "--prompt", "What is 2 + 3?", "--max_new_tokens", "8"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()


def test_upload_model_checks_then_publishes(tmp_path: Path) -> None:
    net = ["--localnet", str(tmp_path / "net"), "--hf_repo_id", "bob/tiny"]
    done = run("scripts/upload_model.py", *net, "--model_dir", str(build_valid(tmp_path / "ok")))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "committed bob:tiny:" in done.stdout
    bad = tmp_path / "bad"
    build_valid(bad)
    (bad / "pytorch_model.bin").write_bytes(b"not allowed")
    refused = run("scripts/upload_model.py", *net, "--model_dir", str(bad))
    assert refused.returncode == 1 and "not allowed" in refused.stderr


@pytest.mark.parametrize("neuron", ["neurons/miner.py", "neurons/validator.py"])
def test_a_missing_cuda_device_is_refused_at_start(neuron: str, tmp_path: Path) -> None:
    """--device cuda where torch has no CUDA (or a device index that does not exist): one clear line,
    exit status 2, before any model is loaded or trained."""
    import torch

    device = f"cuda:{torch.cuda.device_count()}"  # never exists, with or without a GPU
    done = run(neuron, "--localnet", str(tmp_path / "net"), "--offline", "--device", device,
               "--model_dir", str(tmp_path / "m"), "--state_dir", str(tmp_path / "s"), "--wandb.off"
               ) if "validator" in neuron else run(
        neuron, "--localnet", str(tmp_path / "net"), "--offline", "--device", device,
        "--model_dir", str(tmp_path / "m"), "--wandb.off")  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and f"--device {device}" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "m" / "model").exists()


def test_an_unknown_load_uid_is_a_clear_error(tmp_path: Path) -> None:
    done = run("neurons/miner.py", "--localnet", str(tmp_path / "net"), "--offline", "--load_uid", "999",
               "--device", "cpu", "--model_dir", str(tmp_path / "m"), "--wandb.off")  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "--load_uid 999: no such uid" in done.stderr


def test_list_competitions_without_a_chain_prints_the_schedule(tmp_path: Path) -> None:
    """An unreachable chain: the whole schedule with start blocks, no active marks, in seconds."""
    done = run("neurons/miner.py", "--list_competitions", "--subtensor.network", "ws://127.0.0.1:9")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "from block" in done.stdout and "the chain did not answer" in done.stdout
    from constants.competitions import MAINNET_SCHEDULE

    for entry in MAINNET_SCHEDULE:
        assert str(entry.start_block) in done.stdout
        for competition in entry.competitions:
            assert competition.id in done.stdout
    assert "yes" not in done.stdout
