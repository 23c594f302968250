"""The miner's training: its settings (:class:`TrainConfig`), results, and :func:`train` (design.md §6).

The recipe itself is :class:`finetune.recipe.FinetuneRecipe` (setup, train step, evaluate, keep best,
checkpoint, resume); :func:`train` runs it. It is written on Hugging Face ``accelerate``: the
:class:`~accelerate.Accelerator` places the model, wraps it for DDP (or FSDP, from an ``accelerate
config``) when started with ``accelerate launch``, runs gradient accumulation and mixed precision (bf16
autocast on CUDA, fp32 on CPU). The same code runs on a laptop CPU, one GPU, or several processes.

The helpers here are the recipe's pure parts: tokenizing samples like the validator, cutting an epoch
into per-process micro-batches, the learning-rate schedule, LoRA, and a fingerprint of the starting model.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from finetune.data import SampleSource
from finetune.model_io import plain_model, save_model
from finetune.progress import PROGRESS_FILE, MinerProgress
from finetune.tokenization import tokenize_samples
from utilities.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [  # save_model and plain_model live in finetune.model_io; re-exported for the recipe's users
    "EvalReport",
    "TrainConfig",
    "TrainResult",
    "make_accelerator",
    "plain_model",
    "save_model",
    "train",
]

Sample = tuple[torch.Tensor, int]
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STRUCTURAL = ("lora_rank", "lora_alpha", "lora_targets")
"""Settings a checkpoint's weights and optimizer state are shaped by: a resumed run keeps the checkpoint's."""
NOT_RECORDED = ("checkpoint_dir", "output_dir", "progress_file")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run (the defaults suit a small model on one GPU)."""

    lr: float = 2e-5
    num_epochs: int | None = 1
    """Epochs to run (counting those of a resumed checkpoint); ``None`` trains until interrupted."""
    samples_per_epoch: int = 4096
    accumulation_steps: int = 4
    micro_batch_size: int = 4
    eval_samples: int = 256
    eval_every: int = 0
    """Held-out evaluation every this many optimizer steps (0: only at the end of each epoch)."""
    seed: int = 0
    sequence_length: int = 2048
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"
    """``auto`` (bf16 on CUDA, fp32 elsewhere), ``no``, ``bf16`` or ``fp16``."""
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    lora_rank: int | None = None
    """Train a LoRA adapter of this rank instead of every weight (merged before saving)."""
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = LORA_TARGETS
    checkpoint_dir: Path | None = None
    """Where to save the training state after each epoch, and resume from."""
    output_dir: Path | None = None
    """Where to keep the best model (lowest held-out loss), safetensors only."""
    save_dtype: torch.dtype | None = None
    """Cast floating weights to this dtype when saving (e.g. bf16 to halve a published repository)."""
    data_retries: int = 4
    """Retries of a failed draw of an epoch's training samples (then the previous epoch's are reused)."""
    data_retry_wait_s: float = 5.0
    """Wait before the first retry, doubled before each next one (at most ``data_retry_max_wait_s``)."""
    data_retry_max_wait_s: float = 120.0
    progress_file: Path | None = None
    """The run's :class:`~finetune.progress.MinerProgress` record (default: ``checkpoint_dir/progress.json``
    with a checkpoint folder, else kept in memory only)."""

    @property
    def progress_path(self) -> Path | None:
        if self.progress_file is not None:
            return Path(self.progress_file)
        return Path(self.checkpoint_dir) / PROGRESS_FILE if self.checkpoint_dir is not None else None

    def __post_init__(self) -> None:
        positive = ("samples_per_epoch", "accumulation_steps", "micro_batch_size", "eval_samples")
        for name in (*positive, "sequence_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_epochs is not None and self.num_epochs < 0:
            raise ConfigError("TrainConfig.num_epochs must be >= 0 or None (forever)")
        if self.lr <= 0 or self.eval_every < 0 or self.warmup_steps < 0:
            raise ConfigError("need lr > 0, eval_every >= 0 and warmup_steps >= 0")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be auto, no, bf16 or fp16, not {self.mixed_precision!r}")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ConfigError("lora_rank must be >= 1 (or None for full fine-tuning)")
        if self.data_retries < 0 or self.data_retry_wait_s < 0 or self.data_retry_max_wait_s < 0:
            raise ConfigError("need data_retries >= 0, data_retry_wait_s >= 0 and data_retry_max_wait_s >= 0")


@dataclass(frozen=True)
class EvalReport:
    """One held-out evaluation, handed to ``on_eval`` on the main process."""

    step: int
    epoch: int
    """The epoch being trained, counted from 1 (as the progress bar and the logs count)."""
    loss: float
    best_loss: float
    initial_loss: float
    """The held-out loss of the starting model (of the first run, when resumed)."""
    improved: bool
    end_of_epoch: bool
    train_loss: float
    tokens_per_s: float


@dataclass
class TrainResult:
    """What a run did. ``model`` is the final (not the best) model, LoRA merged; the best is in
    ``output_dir``. ``resume_notes`` says what a resumed run kept of its checkpoint and what it changed."""

    model: PreTrainedModel
    initial_loss: float
    best_loss: float
    final_loss: float
    start_step: int
    steps: int
    epochs: int
    tokens: int
    seconds: float
    evals: list[EvalReport] = field(default_factory=list)
    resume_notes: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def make_accelerator(config: TrainConfig, *, cpu: bool = False, **kwargs: Any) -> Accelerator:
    """The accelerator a run uses: mixed precision per ``config`` and its gradient accumulation."""
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and not cpu else "no"
    return Accelerator(
        mixed_precision=precision, gradient_accumulation_steps=config.accumulation_steps, cpu=cpu, **kwargs
    )


def apply_lora(model: PreTrainedModel, config: TrainConfig) -> torch.nn.Module:
    """``model`` with trainable LoRA adapters on ``config.lora_targets`` (every other weight frozen)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ConfigError("LoRA needs the 'peft' package: pip install peft") from exc
    lora = LoraConfig(
        r=config.lora_rank or 8,
        lora_alpha=config.lora_alpha,
        target_modules=list(config.lora_targets),
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def tokenized(
    tokenizer: PreTrainedTokenizerBase, source: SampleSource, n: int, seed: int, sequence_length: int
) -> list[Sample]:
    """``n`` samples of ``source`` tokenized like the validator, without those with no response token."""
    samples = tokenize_samples(tokenizer, source.sample(n, seed=seed), sequence_length=sequence_length)
    return [(ids, p) for ids, p in samples if 0 < p < ids.numel()]


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps`` optimizer steps, then constant."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr


def micro_batches(
    samples: Sequence[Sample], *, processes: int, rank: int, config: TrainConfig
) -> list[list[Sample]]:
    """This process's micro-batches: every process gets the same number, a multiple of the accumulation
    steps, so that gradients of one optimizer step are synced across all of them. Micro-batch ``i`` of
    process ``r`` is the ``r``-th slice of the ``i``-th ``micro_batch_size x processes`` samples, so an
    optimizer step sees the same samples whatever the number of processes."""
    per_step = config.micro_batch_size * processes
    count = len(samples) // per_step // config.accumulation_steps * config.accumulation_steps
    if count == 0:
        need = per_step * config.accumulation_steps
        raise ConfigError(
            f"an epoch of {len(samples)} usable samples is less than one optimizer step ({need})"
        )
    size = config.micro_batch_size
    return [list(samples[(i * processes + rank) * size :][:size]) for i in range(count)]


def settings_of(config: TrainConfig) -> dict[str, Any]:
    """The settings a checkpoint records (JSON values), to compare a resumed run's with."""
    values: dict[str, Any] = {}
    for name in TrainConfig.__dataclass_fields__:
        if name in NOT_RECORDED:
            continue
        value = getattr(config, name)
        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        values[name] = list(value) if isinstance(value, tuple) else value
    return values


def compare_settings(recorded: dict[str, Any], now: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """(one note per difference, the settings to keep from the checkpoint) between a checkpoint's
    :func:`settings_of` and a resumed run's: the ``STRUCTURAL`` ones stay, every other one changes."""
    if not recorded:
        return ["the checkpoint records no settings (an earlier version wrote it): nothing compared"], {}
    notes: list[str] = []
    kept: dict[str, Any] = {}
    for name, value in sorted(now.items()):
        if name not in recorded or recorded[name] == value:
            continue
        if name in STRUCTURAL:
            old = recorded[name]
            kept[name] = tuple(old) if isinstance(old, list) else old
            notes.append(f"kept {name}={old!r} of the checkpoint (not {value!r}: its weights and optimizer "
                         "state are shaped by it)")  # fmt: skip
        else:
            notes.append(f"changed {name}: {recorded[name]!r} -> {value!r}")
    return notes, kept


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short digest of a model's weights (names, shapes and the first elements of each tensor): tells
    whether a resumed run was given the same starting model, without hashing every byte of a big one."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        head = tensor.detach().reshape(-1)[:256].to("cpu", torch.float32)
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(head.numpy().tobytes())
    return digest.hexdigest()[:16]


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_source: SampleSource,
    heldout_source: SampleSource,
    config: TrainConfig,
    *,
    accelerator: Accelerator | None = None,
    on_eval: Callable[[EvalReport], None] | None = None,
    progress: MinerProgress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TrainResult:
    """Fine-tune ``model`` on ``train_source``, evaluating on ``heldout_source``: builds and runs a
    :class:`~finetune.recipe.FinetuneRecipe` (see there).

    ``on_eval`` runs on the main process after each evaluation (the miner publishes from it at the end of
    an epoch); the other processes wait for it. ``progress`` is the record to keep the run's state in
    (default: read from ``config.progress_path``). ``sleep`` waits between retries of a failed data source.
    """
    from finetune.recipe import FinetuneRecipe  # the recipe builds on this module's settings and helpers

    recipe = FinetuneRecipe(
        model=model, tokenizer=tokenizer, train_source=train_source, heldout_source=heldout_source,
        config=config, accelerator=accelerator, on_eval=on_eval, progress=progress, sleep=sleep,
    )  # fmt: skip
    return recipe.run()
