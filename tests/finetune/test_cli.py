"""The neurons' command lines: every bad value is an argparse error, defaults are written once, parsing
imports nothing heavy, ``--config FILE.yaml`` sits under the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from finetune import miner_config
from finetune.cli.options import default_of
from finetune.validator import config as validator_config

ROOT = Path(__file__).resolve().parents[2]
Parse = Callable[[list[str]], argparse.Namespace]


def error_of(parse: Parse, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The argparse error message ``argv`` gives (it must exit with status 2, no traceback)."""
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    return err.split("error:", 1)[1].strip()


@pytest.fixture
def a_file(tmp_path: Path) -> str:
    path = tmp_path / "a_file"
    path.write_text("x")
    return str(path)


VALIDATOR_BAD = [
    (["--max_model_dir_gb", "-1"], "--max_model_dir_gb"),
    (["--max_model_dir_gb", "nan"], "--max_model_dir_gb"),
    (["--grace_period_minutes", "-5"], "--grace_period_minutes"),
    (["--update_delay_minutes", "-1"], "--update_delay_minutes"),
    (["--weights_check_seconds", "0"], "--weights_check_seconds"),
    (["--latest_cortex_samples", "0"], "--latest_cortex_samples"),
    (["--samples_per_step", "-3"], "--samples_per_step"),
    (["--latest_cortex_steps", "0"], "--latest_cortex_steps"),
    (["--eval_timeout_minutes", "-1"], "--eval_timeout_minutes"),
    (["--device", "tpu"], "--device"),
    (["--device", "cuda:0,"], "--device"),
    (["--dtype", "float7"], "--dtype"),
    (["--attn_implementation", "evil"], "--attn_implementation"),
    (["--data", "dataset"], "--data.path"),
    (["--data.path", "x.jsonl"], "--data dataset"),
    (["--data", "dataset", "--data.path", "org/chat", "--data.revision", "main"], "--data.revision"),
    (["--data.revision", "a" * 40], "--data dataset"),
    (["--wallet.hotkey", ""], "--wallet.hotkey"),
    (["--wallet.name", "../x"], "--wallet.name"),
    (["--sample_min", "0"], "--sample_min"),
    (["--max_new_per_step", "-1"], "--max_new_per_step"),
    (["--blocks_per_epoch", "0"], "--blocks_per_epoch"),
    (["--token_budget", "0"], "--token_budget"),
    (["--netuid", "-1"], "--netuid"),
    (["--leaderboard.port", "-1"], "--leaderboard.port"),
    (["--max_steps", "0"], "--max_steps"),
    (["--eval_timeout_minutes", "soon"], "--eval_timeout_minutes"),
]


@pytest.mark.parametrize(("argv", "flag"), VALIDATOR_BAD, ids=[" ".join(a) for a, _ in VALIDATOR_BAD])
def test_every_bad_validator_value_is_an_argparse_error(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert flag in error_of(validator_config.parse_args, argv, capsys)


@pytest.mark.parametrize("flag", ["--localnet", "--state_dir", "--model_dir", "--wallet.path"])
def test_a_file_where_a_folder_belongs_is_refused(
    flag: str, a_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message = error_of(validator_config.parse_args, [flag, a_file], capsys)
    assert flag in message and "not a folder" in message


def test_a_folder_as_the_leaderboard_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "is a folder" in error_of(validator_config.parse_args, ["--leaderboard", str(tmp_path)], capsys)


MINER_BAD = [
    (["--lr", "nan"], "--lr"),
    (["--lr", "-1e-5"], "--lr"),
    (["--load_repo", "::garbage"], "--load_repo"),
    (["--load_repo", "ns/name@"], "--load_repo"),
    (["--model_dir", "/dev/null"], "--model_dir"),
    (["--num_epochs", "-5"], "--num_epochs"),
    (["--num_epochs", "0"], "--num_epochs"),
    (["--load_uid", "-1"], "--load_uid"),
    (["--micro_batch_size", "0"], "--micro_batch_size"),
    (["--accumulation_steps", "0"], "--accumulation_steps"),
    (["--eval_samples", "0"], "--eval_samples"),
    (["--samples_per_epoch", "0"], "--samples_per_epoch"),
    (["--cortex_samples_per_epoch", "-1"], "--samples_per_epoch"),
    (["--sequence_length", "0"], "--sequence_length"),
    (["--seed", "-1"], "--seed"),
    (["--weight_decay", "inf"], "--weight_decay"),
    (["--avg_loss_upload_threshold", "nan"], "--avg_loss_upload_threshold"),
    (["--device", "gpu"], "--device"),
    (["--dtype", "int8"], "--dtype"),
    (["--load_model_dir", "/no/such/folder"], "--load_model_dir"),
    (["--hf_repo_id", "no-slash"], "--hf_repo_id"),
    (["--wallet.name", "a/b"], "--wallet.name"),
    (["--data", "dataset", "--data.path", "org/chat", "--data.revision", "abc"], "--data.revision"),
]


@pytest.mark.parametrize(("argv", "flag"), MINER_BAD, ids=[" ".join(a) for a, _ in MINER_BAD])
def test_every_bad_miner_value_is_an_argparse_error(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert flag in error_of(miner_config.parse_args, ["--offline", *argv], capsys)


def test_good_values_parse() -> None:
    args = validator_config.parse_args(["--device", "cuda:0, cuda:1", "--update_delay_minutes", "0.5"])
    assert args.device == "cuda:0,cuda:1" and args.update_delay_minutes == 0.5
    assert args.samples_per_step == validator_config.SAMPLES_PER_STEP
    miner = miner_config.parse_args(
        ["--offline", "--load_repo", "me/model@main", "--cortex_samples_per_epoch", "8"]
    )
    assert miner.load_repo == "me/model@main" and miner.samples_per_epoch == 8 and miner.num_epochs == -1


def test_defaults_are_the_engines_defaults() -> None:
    """The flags that configure an engine default to what the engine itself defaults to (17.3)."""
    from finetune.evaluation import Evaluator
    from finetune.training import TrainConfig
    from finetune.validator.validator import ValidatorSettings

    args = validator_config.parse_args([])
    settings = ValidatorSettings(state_dir=Path("."))
    assert args.samples_per_step == settings.samples_per_step
    assert args.blocks_per_epoch == settings.blocks_per_epoch
    assert args.sample_min == settings.sample_min and args.max_new_per_step == settings.max_new_per_step
    assert args.update_delay_minutes * 60 == settings.sync_interval_s
    assert args.weights_check_seconds == settings.weights_check_interval_s
    timeout = Evaluator.__init__.__kwdefaults__["timeout_s"]  # type: ignore[index]
    assert args.eval_timeout_minutes * 60 == timeout
    train = miner_config.parse_args(["--offline"])
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    # same meaning, same default; num_epochs (-1: until stopped) is the command line's own
    for name in ("samples_per_epoch", "accumulation_steps", "micro_batch_size", "eval_samples",
                 "eval_every", "seed", "gradient_checkpointing", "weight_decay", "warmup_steps",
                 "lora_rank"):  # fmt: skip
        assert getattr(train, name) == fields[name], name


def test_shared_flags_are_declared_once() -> None:
    """The data, wandb and attention flags come from the same option classes in both neurons."""
    validator = validator_config.build_parser()
    miner = miner_config.build_parser()
    for flag in (
        "--data",
        "--data.path",
        "--data.revision",
        "--wandb.entity",
        "--wandb.off",
        "--attn_implementation",
        "--config",
    ):
        v, m = validator._option_string_actions[flag], miner._option_string_actions[flag]
        assert (v.dest, v.help, v.choices) == (m.dest, m.help, m.choices), flag
    assert validator.get_default("wandb_project") == "finetune-subnet"
    assert miner.get_default("wandb_project") == "finetune-subnet-miner"
    assert default_of(miner_config.TrainOptions, "num_epochs") == miner.get_default("num_epochs")


@pytest.mark.parametrize("parser", [validator_config.build_parser, miner_config.build_parser])
def test_help_is_clean(parser: Callable[[], argparse.ArgumentParser]) -> None:
    built = parser()
    text = " ".join(built.format_help().split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert not re.search(r"\(default: [^)]*\) \(default:", text), "a doubled default"
    for action in built._actions:
        assert action.help, action.option_strings
    for group in built._action_groups:
        if group.title == "options":  # argparse's own group: only --help and --config
            assert {a.dest for a in group._group_actions} <= {"help", "config"}


@pytest.mark.parametrize("neuron", ["neurons/validator.py", "neurons/miner.py"])
def test_parsing_imports_no_heavy_library(neuron: str) -> None:
    """--help and argument errors come before torch, transformers and bittensor are imported."""
    name = neuron.split("/")[1][:-3]
    code = (
        "import sys, json\n"
        f"from neurons.{name} import parse_args\n"
        "try:\n    parse_args(['--offline', '--lr', 'nan'] if 'miner' in sys.argv[1] else ['--dtype', 'x'])\n"
        "except SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'bittensor', 'accelerate', 'wandb')"
        " if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, name], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"code": 2, "heavy": []}


def test_config_file_sits_under_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "validator.yaml"
    config.write_text(
        "wallet:\n  name: alice\n  hotkey: hot1\ndevice: cpu\nsample_min: 3\nwandb.off: true\n"
        "localnet: /tmp/net\nmax_steps: null\n"
    )
    args = validator_config.parse_args(["--config", str(config), "--sample_min", "7"])
    assert (args.wallet_name, args.wallet_hotkey, args.device) == ("alice", "hot1", "cpu")
    assert args.sample_min == 7 and args.wandb_off is True and args.localnet == Path("/tmp/net")
    assert args.max_steps is None
    # the file's values pass the same checks as typed ones, and bad files say what is wrong
    config.write_text("sample_min: 0\n")
    assert "--sample_min" in error_of(validator_config.parse_args, ["--config", str(config)], capsys)
    config.write_text("no_such_flag: 1\n")
    assert "unknown setting 'no_such_flag'" in error_of(
        validator_config.parse_args, ["--config", str(config)], capsys
    )
    config.write_text("wandb.off: 3\n")
    assert "switch" in error_of(validator_config.parse_args, ["--config", str(config)], capsys)
    config.write_text("- a list\n")
    assert "mapping" in error_of(validator_config.parse_args, ["--config", str(config)], capsys)
    config.write_text("a: [\n")
    assert "YAML" in error_of(validator_config.parse_args, ["--config", str(config)], capsys)
    assert "no such file" in error_of(
        validator_config.parse_args, ["--config", str(tmp_path / "x.yaml")], capsys
    )


def test_miner_config_file_example(tmp_path: Path) -> None:
    config = tmp_path / "miner.yaml"
    config.write_text("hf_repo_id: me/tiny\nnum_epochs: 3\nlr: 1e-4\ngradient_checkpointing: true\n")
    args = miner_config.parse_args(["--config", str(config), "--num_epochs", "5"])
    assert args.hf_repo_id == "me/tiny" and args.num_epochs == 5 and args.lr == 1e-4
    assert args.gradient_checkpointing is True


def test_data_revision_reaches_the_hub_dataset_in_both_neurons(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14.6: a Hub dataset needs a pinned commit; ``--data.revision`` gives it from the command
    line (before, no flag could, so ``--data dataset`` worked only with a local file)."""
    import datasets

    loaded: list[dict[str, object]] = []

    def load_dataset(path: str, name: str | None = None, **kwargs: object) -> datasets.Dataset:
        loaded.append({"path": path, **kwargs})
        return datasets.Dataset.from_list([{"prompt": f"p{i}", "response": f"r{i}"} for i in range(8)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    commit = "0123456789abcdef0123456789abcdef01234567"
    flags = ["--data", "dataset", "--data.path", "org/chat", "--data.revision", commit]
    validator_args = validator_config.parse_args(flags)
    assert validator_config.build_source(validator_args, local=False).sample(2, seed=1)
    miner_args = miner_config.parse_args(["--offline", *flags])
    train, _ = miner_config.build_sources(miner_args, local=False)
    assert [(call["path"], call["revision"]) for call in loaded] == [("org/chat", commit)] * 2
    assert train.sample(2, seed=1)
