"""The training recipe on the LOCAL competition's tiny model (about 1M parameters) and synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from constants.competitions import LOCAL
from finetune.checks import ModelChecker
from finetune.data import SyntheticSource
from finetune.mining import fresh_model
from finetune.tokenization import load_tokenizer
from finetune.progress import MinerProgress
from finetune.training import TrainConfig, save_model, train
from utilities.errors import ConfigError, DataSourceError

ROOT = Path(__file__).resolve().parents[2]
SMALL = TrainConfig(
    lr=3e-3, num_epochs=1, samples_per_epoch=32, micro_batch_size=8, accumulation_steps=1, eval_samples=24,
    sequence_length=96, warmup_steps=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return load_tokenizer(LOCAL)


def run(tokenizer: PreTrainedTokenizerBase, config: TrainConfig, seed: int = 0):  # type: ignore[no-untyped-def]
    model = fresh_model(LOCAL, seed=seed, dtype=torch.float32)
    return train(model, tokenizer, SyntheticSource("train"), SyntheticSource("heldout"), config)


def test_training_lowers_the_heldout_loss(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    config = replace(SMALL, samples_per_epoch=160, output_dir=tmp_path / "best")
    result = run(tokenizer, config)
    assert result.steps == 20
    assert result.best_loss < result.initial_loss - 1.5, (result.initial_loss, result.best_loss)
    assert result.tokens_per_s > 0
    assert [e.step for e in result.evals] == [20] and result.evals[0].end_of_epoch
    # the best model is a plain safetensors folder that the validator accepts
    assert not [p for p in (tmp_path / "best").iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    assert ModelChecker().check_folder(tmp_path / "best", LOCAL) > 0


def test_training_is_seeded(tokenizer: PreTrainedTokenizerBase) -> None:
    first, second = run(tokenizer, SMALL), run(tokenizer, SMALL)
    assert first.best_loss == pytest.approx(second.best_loss, rel=1e-5)


def test_resume_continues_from_the_checkpoint(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    config = replace(SMALL, checkpoint_dir=tmp_path / "ckpt", output_dir=tmp_path / "best")
    first = run(tokenizer, config)
    assert (first.start_step, first.steps, first.epochs) == (0, 4, 1)
    assert json.loads((tmp_path / "ckpt" / "progress.json").read_text())["step"] == 4
    second = run(tokenizer, replace(config, num_epochs=2), seed=123)  # weights come from the checkpoint
    assert (second.start_step, second.steps, second.epochs) == (4, 8, 2)
    assert second.initial_loss == first.initial_loss
    assert second.best_loss <= first.best_loss
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-2", "progress.json"]


def test_lora_gives_a_merged_plain_model(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    config = replace(SMALL, lora_rank=4, lr=1e-2, output_dir=tmp_path / "best", eval_every=2)
    result = run(tokenizer, config)
    assert type(result.model) is LlamaForCausalLM
    assert len(result.evals) == 3  # steps 2 and 4, and the end of the epoch
    names = sorted(p.name for p in (tmp_path / "best").iterdir())
    assert "adapter_config.json" not in names and "model.safetensors" in names
    config_json = json.loads((tmp_path / "best" / "config.json").read_text())
    assert config_json["architectures"] == ["LlamaForCausalLM"]
    assert ModelChecker().check_folder(tmp_path / "best", LOCAL) > 0
    assert not any("lora" in name for name in result.model.state_dict())


def test_too_few_samples_for_one_step_is_a_config_error(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ConfigError, match="optimizer step"):
        run(tokenizer, replace(SMALL, samples_per_epoch=4, accumulation_steps=2))


@pytest.mark.slow
@pytest.mark.parametrize("uneven", [False, True])
def test_two_cpu_processes_train_with_ddp(tmp_path: Path, uneven: bool) -> None:
    # uneven: the second process's source returns 16 fewer samples (a live Cortex pool can differ
    # between processes); both must still take the same number of steps, or DDP would hang
    script = tmp_path / "ddp.py"
    script.write_text(
        textwrap.dedent("""
        import json, os, sys
        from pathlib import Path
        import torch
        from constants.competitions import LOCAL
        from finetune.data import SyntheticSource
        from finetune.mining import fresh_model
        from finetune.tokenization import load_tokenizer
        from finetune.training import TrainConfig, make_accelerator, train

        out, uneven = Path(sys.argv[1]), sys.argv[2] == "True"

        class Source:
            def sample(self, n, *, seed):
                drop = 16 * int(os.environ["RANK"]) if uneven else 0
                return SyntheticSource("train").sample(n, seed=seed)[: n - drop]

        config = TrainConfig(lr=3e-3, samples_per_epoch=64, micro_batch_size=4, accumulation_steps=2,
                             eval_samples=16, sequence_length=96, output_dir=out / "best")
        accelerator = make_accelerator(config, cpu=True)
        model = fresh_model(LOCAL, seed=0, dtype=torch.float32)
        result = train(model, load_tokenizer(LOCAL), Source(), SyntheticSource("heldout"),
                       config, accelerator=accelerator)
        if accelerator.is_main_process:
            (out / "result.json").write_text(json.dumps({
                "processes": accelerator.num_processes, "type": str(accelerator.distributed_type),
                "steps": result.steps, "initial": result.initial_loss, "best": result.best_loss}))
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*command, str(script), str(tmp_path), str(uneven)], env=env, capture_output=True,
                          text=True, check=False, timeout=240, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["processes"] == 2 and result["type"] == "DistributedType.MULTI_CPU"
    # each optimizer step consumes both processes' batches; uneven: 48 usable samples per process at most
    assert result["steps"] == (48 if uneven else 64) // (4 * 2) // 2
    assert result["best"] < result["initial"]
    assert ModelChecker().check_folder(tmp_path / "best", LOCAL) > 0


class FlakySource:
    """The synthetic training source, failing on the calls numbered in ``failing`` (1-based), or on every
    call after ``fail_after`` calls."""

    def __init__(self, failing: tuple[int, ...] = (), fail_after: int | None = None) -> None:
        self.inner, self.failing, self.fail_after, self.calls = (
            SyntheticSource("train"),
            failing,
            fail_after,
            0,
        )

    def sample(self, n: int, *, seed: int) -> list[tuple[str, str]]:
        self.calls += 1
        if self.calls in self.failing or (self.fail_after is not None and self.calls > self.fail_after):
            raise DataSourceError(f"wandb: 503 (call {self.calls})")
        return self.inner.sample(n, seed=seed)


def test_resume_never_replaces_a_better_kept_model(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    best = tmp_path / "best"
    config = replace(SMALL, checkpoint_dir=tmp_path / "ckpt", output_dir=best)
    first = run(tokenizer, config)
    record = tmp_path / "ckpt" / "progress.json"
    assert not [p for p in best.iterdir() if p.suffix == ".json" and "progress" in p.name]  # never published
    assert MinerProgress.load(record).best_loss == pytest.approx(first.best_loss)
    # a mid-epoch evaluation of a run that then crashed kept a better model than the checkpoint's
    progress = MinerProgress.load(record)
    better = first.best_loss - 5.0
    progress.best_loss, progress.best_step = better, 6
    progress.save(record)
    kept = (best / "model.safetensors").read_bytes()
    resumed = run(tokenizer, replace(config, num_epochs=2, eval_every=1))
    assert resumed.start_step == 4 and all(not e.improved for e in resumed.evals)
    assert resumed.best_loss == pytest.approx(better)
    assert (best / "model.safetensors").read_bytes() == kept  # the better model stays
    assert MinerProgress.load(record).best_loss == pytest.approx(better)


def test_a_failing_data_source_is_retried_with_backoff(tokenizer: PreTrainedTokenizerBase) -> None:
    source, waits = FlakySource(failing=(2, 3)), []  # the second epoch's first two draws fail
    config = replace(SMALL, num_epochs=2, data_retries=3, data_retry_wait_s=2.0, data_retry_max_wait_s=3.0)
    model = fresh_model(LOCAL, seed=0, dtype=torch.float32)
    result = train(model, tokenizer, source, SyntheticSource("heldout"), config, sleep=waits.append)
    assert waits == [2.0, 3.0]  # doubled, capped
    assert (result.steps, result.epochs, source.calls) == (8, 2, 4)


def test_a_dead_data_source_reuses_the_previous_samples(tokenizer: PreTrainedTokenizerBase) -> None:
    source, waits = FlakySource(fail_after=1), []
    config = replace(SMALL, num_epochs=3, data_retries=2, data_retry_wait_s=1.0)
    model = fresh_model(LOCAL, seed=0, dtype=torch.float32)
    result = train(model, tokenizer, source, SyntheticSource("heldout"), config, sleep=waits.append)
    assert (result.steps, result.epochs) == (12, 3)  # epochs 1 and 2 trained on epoch 0's samples again
    assert waits == [1.0, 2.0, 1.0, 2.0] and source.calls == 7
    with pytest.raises(DataSourceError):  # nothing to fall back on in the first epoch
        model = fresh_model(LOCAL, seed=0, dtype=torch.float32)
        train(
            model,
            tokenizer,
            FlakySource(fail_after=0),
            SyntheticSource("heldout"),
            config,
            sleep=waits.append,
        )


def test_config_json_names_the_saved_dtype(tmp_path: Path) -> None:
    model = fresh_model(LOCAL, seed=0, dtype=torch.float32)
    folder = save_model(model, load_tokenizer(LOCAL), tmp_path / "m", dtype=torch.bfloat16)
    config_json = json.loads((folder / "config.json").read_text())
    assert config_json["dtype"] == "bfloat16" and config_json.get("torch_dtype", "bfloat16") == "bfloat16"
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}
    assert ModelChecker().check_folder(folder, LOCAL) > 0
    assert model.dtype == torch.float32 and model.config.dtype == torch.float32  # the model is untouched
