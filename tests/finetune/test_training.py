"""The training recipe on the LOCAL competition's tiny model (about 1M parameters) and synthetic data."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from constants.competitions import LOCAL
from finetune import validation
from finetune.checks import ModelChecker
from finetune.data import SyntheticSource, derive_seed
from finetune.display import RunDisplay
from finetune.mining import fresh_model
from finetune.progress import MinerProgress
from finetune.recipe import FinetuneRecipe
from finetune.tokenization import load_tokenizer, tokenize_samples
from finetune.training import TrainConfig, make_accelerator, save_model, train
from utilities.errors import ConfigError, DataSourceError
from utilities.files import atomic_write_json

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
            def sample(self, n, *, seed, cutoff=None):
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

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[tuple[str, str]]:
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


def test_the_heldout_loss_is_the_validators(tokenizer: PreTrainedTokenizerBase) -> None:
    """The miner's held-out loss of a model is what a validator computes for it on the same samples."""
    config = replace(SMALL, num_epochs=0)
    model = fresh_model(LOCAL, seed=0, dtype=torch.float32)
    result = train(model, tokenizer, SyntheticSource("train"), SyntheticSource("heldout"), config)
    pairs = SyntheticSource("heldout").sample(config.eval_samples, seed=derive_seed(config.seed, "heldout"))
    samples = tokenize_samples(tokenizer, pairs, sequence_length=config.sequence_length)
    losses = validation.compute_losses(fresh_model(LOCAL, seed=0, dtype=torch.float32), samples, "cpu")
    assert result.initial_loss == pytest.approx(sum(losses) / len(losses), rel=1e-6)


def test_a_resumed_run_says_what_it_kept_and_what_it_changed(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    config = replace(SMALL, checkpoint_dir=tmp_path / "ckpt", output_dir=tmp_path / "best")
    first = run(tokenizer, config)
    assert first.resume_notes == []
    same = run(tokenizer, replace(config, num_epochs=2))  # the same command line, one more epoch
    assert same.resume_notes == ["changed num_epochs: 1 -> 2"]
    # another starting model, learning rate and LoRA: the checkpoint's weights and full fine-tuning stay
    changed = run(tokenizer, replace(config, num_epochs=3, lr=1e-3, lora_rank=4), seed=123)
    notes = "\n".join(changed.resume_notes)
    assert "kept the checkpoint's weights (step 8)" in notes and "delete" in notes
    assert "changed lr: 0.003 -> 0.001" in notes and "changed num_epochs: 2 -> 3" in notes
    assert "kept lora_rank=None" in notes
    assert (changed.start_step, changed.steps) == (8, 12)
    assert not any("lora" in name for name in changed.model.state_dict())
    recorded = MinerProgress.load(tmp_path / "ckpt" / "progress.json").settings
    assert recorded["lr"] == 1e-3 and recorded["lora_rank"] is None


def test_the_files_of_earlier_versions_are_read_once(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    ckpt, best = tmp_path / "ckpt", tmp_path / "model"
    config = replace(SMALL, checkpoint_dir=ckpt, output_dir=best, progress_file=tmp_path / "progress.json")
    first = run(tokenizer, config)
    # what an earlier version would have left: three files, no progress.json
    (tmp_path / "progress.json").unlink()
    latest = {"epoch": 1, "step": 4, "initial_loss": first.initial_loss, "best_loss": first.best_loss + 1}
    atomic_write_json(ckpt / "latest.json", {**latest, "folder": "epoch-1"})
    atomic_write_json(tmp_path / "model.best.json", {"loss": first.best_loss, "step": 4, "epoch": 1})
    atomic_write_json(tmp_path / "miner_state.json", {"last_loss": 3.25, "last_model_id": "a:b:c:d:local",
                                                      "pending": True, "pending_loss": 3.0})  # fmt: skip
    legacy = MinerProgress.load(tmp_path / "progress.json", checkpoint_dir=ckpt, output_dir=best)
    assert (legacy.step, legacy.epoch, legacy.checkpoint) == (4, 1, "epoch-1")
    assert legacy.best_loss == pytest.approx(first.best_loss)  # the lower of the two records
    assert (legacy.published_loss, legacy.published_model_id, legacy.pending) == (3.25, "a:b:c:d:local", True)
    resumed = run(tokenizer, replace(config, num_epochs=2))
    assert resumed.start_step == 4 and resumed.initial_loss == pytest.approx(first.initial_loss)
    progress = MinerProgress.load(tmp_path / "progress.json")
    assert progress.published_model_id == "a:b:c:d:local" and progress.epoch == 2
    assert not [p.name for p in (tmp_path / "miner_state.json", tmp_path / "model.best.json",
                                 ckpt / "latest.json") if p.exists()]  # fmt: skip
    (tmp_path / "progress.json").write_text("{not json")
    with pytest.raises(ConfigError, match="progress"):
        MinerProgress.load(tmp_path / "progress.json")


def test_epochs_are_counted_from_one_in_reports_bar_and_logs(
    tokenizer: PreTrainedTokenizerBase, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    config = replace(SMALL, num_epochs=2, eval_every=2)
    recipe = FinetuneRecipe(
        model=fresh_model(LOCAL, seed=0, dtype=torch.float32), tokenizer=tokenizer,
        train_source=SyntheticSource("train"), heldout_source=SyntheticSource("heldout"), config=config,
        display=RunDisplay(enabled=True, total_epochs=2, console=console),
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = recipe.run()
    assert [(e.step, e.epoch, e.end_of_epoch) for e in result.evals] == [
        (2, 1, False), (4, 1, False), (4, 1, True), (6, 2, False), (8, 2, False), (8, 2, True),
    ]  # fmt: skip
    bar = screen.getvalue()
    assert "epoch 2/2" in bar and "8/8" in bar and "held-out" in bar and "epoch 0" not in bar
    logs = [r.getMessage() for r in caplog.records if r.name == "finetune.recipe"]
    assert any(line.startswith("epoch 2/2 step 8: held-out") for line in logs)
    # nothing but the miner's own output: no accelerate or transformers lines or bars
    assert not [r for r in caplog.records if r.name.startswith(("accelerate", "transformers"))]
    captured = capfd.readouterr()
    assert "Writing model shards" not in captured.err + captured.out
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]


def test_off_a_terminal_progress_is_a_plain_line_every_few_seconds() -> None:
    now, lines = [0.0], []
    console = Console(file=io.StringIO(), force_terminal=False)
    display = RunDisplay(enabled=True, total_epochs=2, console=console, interval_s=10.0,
                         clock=lambda: now[0], write=lines.append)  # fmt: skip
    display.start_epoch(1, 4, done=0)
    for _ in range(4):
        now[0] += 4.0
        display.step(loss=2.5, tokens_per_s=1234.0)
    assert lines == ["epoch 1/2 step 3/4 (run 3/8) loss 2.500 1,234 tok/s eta 0:00:20"]
    display.start_eval(100)
    now[0] += 11.0
    display.eval_advance(40)
    assert lines[-1] == "held-out evaluation: 40/100 samples"
    display.close()
    assert console.file.getvalue() == ""  # type: ignore[attr-defined]  # no bar drawn into a log


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_saves_the_single_process_model(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """FSDP (version 2, every decoder layer sharded) on 2 gloo processes with micro-batches of 4 takes the
    optimizer steps of one process with micro-batches of 8: the saved models agree to float rounding.

    accelerate turns FSDP on only for accelerator devices (CUDA, XPU...), so on CPUs the test sets its
    state the way ``accelerate launch --use_fsdp`` does on GPUs; the recipe's code path is the same."""
    script = tmp_path / "fsdp.py"
    script.write_text(
        textwrap.dedent("""
        import json, sys
        from pathlib import Path
        import torch
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
        from constants.competitions import LOCAL
        from finetune.data import SyntheticSource
        from finetune.mining import fresh_model
        from finetune.tokenization import load_tokenizer
        from finetune.training import TrainConfig, make_accelerator, train

        out = Path(sys.argv[1])
        config = TrainConfig(lr=3e-3, samples_per_epoch=32, micro_batch_size=4, accumulation_steps=2,
                             eval_samples=16, sequence_length=96, output_dir=out / "best",
                             checkpoint_dir=out / "ckpt", num_epochs=int(sys.argv[2]))
        accelerator = make_accelerator(config, cpu=True)
        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2, state_dict_type="FULL_STATE_DICT", auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=["LlamaDecoderLayer"], cpu_ram_efficient_loading=False)
        PartialState().distributed_type = DistributedType.FSDP
        accelerator.state.distributed_type, accelerator.state.fsdp_plugin = DistributedType.FSDP, plugin
        model = fresh_model(LOCAL, seed=0, dtype=torch.float32)
        result = train(model, load_tokenizer(LOCAL), SyntheticSource("train"), SyntheticSource("heldout"),
                       config, accelerator=accelerator)
        if accelerator.is_main_process:
            (out / "result.json").write_text(json.dumps({
                "type": str(accelerator.distributed_type), "fsdp2": accelerator.is_fsdp2,
                "processes": accelerator.num_processes, "start": result.start_step, "steps": result.steps,
                "initial": result.initial_loss, "best": result.best_loss}))
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for epochs in (1, 2):  # the second run resumes from the sharded checkpoint
        done = subprocess.run([*command, str(script), str(tmp_path), str(epochs)], env=env,
                              capture_output=True, text=True, check=False, timeout=300, cwd=ROOT)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        if epochs == 1:
            sharded = json.loads((tmp_path / "result.json").read_text())
            weights = load_file(tmp_path / "best" / "model.safetensors")
    resumed = json.loads((tmp_path / "result.json").read_text())
    assert sharded["type"] == "DistributedType.FSDP" and sharded["fsdp2"] and sharded["processes"] == 2
    assert (sharded["steps"], resumed["start"], resumed["steps"]) == (2, 2, 4)
    assert resumed["best"] < sharded["best"] < sharded["initial"]  # finite held-out losses on every process

    config = TrainConfig(lr=3e-3, samples_per_epoch=32, micro_batch_size=8, accumulation_steps=2,
                         eval_samples=16, sequence_length=96, output_dir=tmp_path / "single")  # fmt: skip
    model = fresh_model(LOCAL, seed=0, dtype=torch.float32)
    single = train(model, tokenizer, SyntheticSource("train"), SyntheticSource("heldout"), config,
                   accelerator=make_accelerator(config, cpu=True))  # fmt: skip
    assert single.initial_loss == pytest.approx(sharded["initial"], abs=1e-5)
    assert single.best_loss == pytest.approx(sharded["best"], abs=1e-4)
    expected = load_file(tmp_path / "single" / "model.safetensors")
    assert sorted(weights) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.allclose(weights[name], tensor, atol=1e-4), name
    assert ModelChecker().check_folder(tmp_path / "best", LOCAL) > 0


def test_a_seeded_run_gives_the_losses_the_recipe_always_gave(tokenizer: PreTrainedTokenizerBase) -> None:
    """Held-out and training losses of a seeded run, stored from the recipe before it became a class with
    the validator's loss code (commit 1acb73d): the rewrite changed no number."""
    config = replace(SMALL, num_epochs=2, accumulation_steps=2, eval_every=1)
    result = run(tokenizer, config)
    assert result.initial_loss == pytest.approx(7.726170996824901, rel=1e-6)
    heldout = [7.089250385761261, 6.693193852901459, 6.693193852901459, 6.26696252822876, 5.818889359633128,
               5.818889359633128]  # fmt: skip
    assert [e.loss for e in result.evals] == pytest.approx(heldout, rel=1e-5)
    training = [7.724013, 7.012417, 7.012417, 6.574724, 6.040246, 6.040246]
    assert [e.train_loss for e in result.evals] == pytest.approx(training, rel=1e-5)


def test_a_deleted_checkpoint_starts_over_and_keeps_what_was_published(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    record = tmp_path / "progress.json"
    config = replace(SMALL, checkpoint_dir=tmp_path / "ckpt", output_dir=tmp_path / "b", progress_file=record)
    first = run(tokenizer, config)
    progress = MinerProgress.load(record)
    progress.published_loss, progress.published_model_id = first.best_loss, "a:b:c:d:local"
    progress.save(record)
    shutil.rmtree(tmp_path / "ckpt")
    again = run(tokenizer, replace(config, num_epochs=2), seed=5)  # starts over: the given model, step 0
    assert (again.start_step, again.steps, again.resume_notes) == (0, 8, [])
    assert again.initial_loss != pytest.approx(first.initial_loss)
    progress = MinerProgress.load(record)
    assert (progress.published_model_id, progress.step) == ("a:b:c:d:local", 8)
    assert progress.checkpoint == "epoch-2"
