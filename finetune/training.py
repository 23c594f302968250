"""The miner's training recipe: one readable loop on Hugging Face ``accelerate`` (design.md §6).

In the style of nanoGPT's ``train.py`` and torchtune's single-device recipe, written once for every setup:
the :class:`~accelerate.Accelerator` places the model, wraps it for DDP (or FSDP, from an ``accelerate
config``) when started with ``accelerate launch``, runs gradient accumulation and mixed precision (bf16
autocast on CUDA, fp32 on CPU). The same code runs on a laptop CPU, one GPU, or several processes.

Per epoch: draw ``samples_per_epoch`` fresh samples (seed derived from ``(seed, epoch)``), tokenize them
exactly like the validator (:func:`~finetune.tokenization.tokenize_samples`: prompt tokens are masked from
the labels), cut them into right-padded micro-batches (one slice per process), and take AdamW steps on the
validator's loss: the mean cross-entropy over each sample's response tokens, averaged over samples.
Held-out evaluation uses the validator's own :func:`~finetune.losses.compute_losses`; the model with the
lowest held-out loss is kept in ``output_dir`` (safetensors only, LoRA merged into plain full weights), and
its loss in ``<output_dir>.best.json`` next to it (outside the folder, so it is never published): a run
resumed after a crash compares against it, never replacing a better mid-epoch model with a worse one.

A data source that fails (:class:`~utilities.errors.DataSourceError`) while drawing an epoch's samples is
retried ``data_retries`` times with exponential backoff; if it still fails, the previous epoch's samples
are trained on again (the miner keeps going through an outage of its data source).

Checkpoints for resuming live in ``checkpoint_dir`` (``accelerator.save_state``: model, optimizer and RNG
states). Accelerate writes the optimizer and RNG states with ``torch.save`` (pickle) and loads them with
``torch.load``: acceptable for the miner's *own* files, which nobody else writes, and never used for
anything that comes from the network (other miners' models go through :mod:`finetune.checks`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, set_seed
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from finetune.data import DataSourceError, SampleSource, derive_seed
from finetune.losses import compute_losses
from finetune.model_io import best_record_path, plain_model, read_best_loss, save_model
from finetune.tokenization import tokenize_samples
from utilities.errors import ConfigError
from utilities.files import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = [  # save_model and friends live in finetune.model_io; re-exported for the recipe's users
    "EvalReport",
    "TrainConfig",
    "TrainResult",
    "best_record_path",
    "make_accelerator",
    "plain_model",
    "read_best_loss",
    "save_model",
    "train",
]

Sample = tuple[torch.Tensor, int]
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LATEST = "latest.json"


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run (the defaults suit a small model on one GPU)."""

    lr: float = 2e-5
    num_epochs: int | None = 1
    """Epochs to run (counting those of a resumed checkpoint); ``None`` trains until interrupted."""
    samples_per_epoch: int = 2048
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
    ``output_dir``."""

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


def collate(samples: Sequence[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (prompt and padding = -100)."""
    width = max(ids.numel() for ids, _ in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(samples):
        flat = ids.reshape(-1)
        input_ids[row, : flat.numel()] = flat
        labels[row, prompt_len : flat.numel()] = flat[prompt_len:]
        mask[row, : flat.numel()] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def response_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The validator's loss on a batch: per sample, mean cross-entropy of the response tokens (position
    ``t`` predicts token ``t + 1``); then the mean over samples."""
    targets = labels[:, 1:]
    per_token = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, ignore_index=-100, reduction="none"
    )
    scored = targets != -100
    per_sample = (per_token * scored).sum(dim=1) / scored.sum(dim=1).clamp(min=1)
    return per_sample[scored.any(dim=1)].mean()


def tokenized(
    tokenizer: PreTrainedTokenizerBase, source: SampleSource, n: int, seed: int, sequence_length: int
) -> list[Sample]:
    """``n`` samples of ``source`` tokenized like the validator, without those with no response token."""
    samples = tokenize_samples(tokenizer, source.sample(n, seed=seed), sequence_length=sequence_length)
    return [(ids, p) for ids, p in samples if 0 < p < ids.numel()]


def evaluate(model: torch.nn.Module, samples: Sequence[Sample], device: torch.device) -> float:
    """Mean of the finite per-sample held-out losses (``inf`` when none is finite)."""
    if hasattr(model, "get_base_model"):  # a LoRA model: the transformers model with adapters injected
        model = model.get_base_model()  # type: ignore[operator]
    losses = [loss for loss in compute_losses(model, samples, device) if math.isfinite(loss)]
    return sum(losses) / len(losses) if losses else math.inf


def _lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps`` optimizer steps, then constant."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr


def _micro_batches(
    samples: list[Sample], accelerator: Accelerator, config: TrainConfig
) -> list[list[Sample]]:
    """This process's micro-batches: every process gets the same number, a multiple of the accumulation
    steps, so that gradients of one optimizer step are synced across all of them."""
    per_step = config.micro_batch_size * accelerator.num_processes
    count = len(samples) // per_step // config.accumulation_steps * config.accumulation_steps
    if count == 0:
        need = per_step * config.accumulation_steps
        raise ConfigError(
            f"an epoch of {len(samples)} usable samples is less than one optimizer step ({need})"
        )
    rank, size = accelerator.process_index, config.micro_batch_size
    return [samples[(i * accelerator.num_processes + rank) * size :][:size] for i in range(count)]


def _load_checkpoint(accelerator: Accelerator, checkpoint_dir: Path | None) -> dict[str, Any] | None:
    latest = checkpoint_dir / LATEST if checkpoint_dir is not None else None
    if latest is None or not latest.is_file():
        return None
    state: dict[str, Any] = json.loads(latest.read_text())
    accelerator.load_state(str(latest.parent / state["folder"]))
    logger.info("resumed from %s: epoch %d, step %d", latest.parent, state["epoch"], state["step"])
    return state


def _save_checkpoint(accelerator: Accelerator, checkpoint_dir: Path, state: dict[str, Any]) -> None:
    """Save into a fresh ``epoch-N`` folder, then point ``latest.json`` at it, then drop older ones: a
    crash at any point leaves a complete checkpoint to resume from."""
    folder = f"epoch-{state['epoch']}"
    accelerator.save_state(str(checkpoint_dir / folder))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(checkpoint_dir / LATEST, {**state, "folder": folder})
        for old in checkpoint_dir.glob("epoch-*"):
            if old.name != folder:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def train(  # noqa: PLR0915 - one recipe, read top to bottom (as nanoGPT's train.py)
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_source: SampleSource,
    heldout_source: SampleSource,
    config: TrainConfig,
    *,
    accelerator: Accelerator | None = None,
    on_eval: Callable[[EvalReport], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TrainResult:
    """Fine-tune ``model`` on ``train_source``, evaluating on ``heldout_source``; see the module doc.

    ``on_eval`` runs on the main process after each evaluation (the miner publishes from it at the end of
    an epoch); the other processes wait for it. ``sleep`` waits between retries of a failed data source.
    """
    accelerator = accelerator or make_accelerator(config)
    set_seed(config.seed)
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if config.lora_rank is not None and fsdp:
        raise ConfigError("LoRA with FSDP is not supported by this recipe: use DDP (one model per GPU)")
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    net: torch.nn.Module = apply_lora(model, config) if config.lora_rank is not None else model
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    net, optimizer = accelerator.prepare(net, optimizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    heldout = tokenized(
        tokenizer, heldout_source, config.eval_samples, derive_seed(config.seed, "heldout"),
        config.sequence_length,
    )  # fmt: skip

    def held_out_loss() -> float:
        # Every process evaluates under FSDP (the sharded forward needs them all); else only the main one.
        loss = math.inf
        if fsdp or accelerator.is_main_process:
            loss = evaluate(net if fsdp else accelerator.unwrap_model(net), heldout, accelerator.device)
        net.train()
        return loss

    def keep_best(loss: float) -> None:
        if config.output_dir is None:
            return
        state_dict = accelerator.get_state_dict(net) if fsdp else None  # a collective under FSDP
        if accelerator.is_main_process:
            save_model(accelerator.unwrap_model(net), tokenizer, config.output_dir,
                       state_dict=state_dict, dtype=config.save_dtype)  # fmt: skip
            # after the model: a crash in between leaves an older (higher) loss, never a too-low one
            atomic_write_json(
                best_record_path(config.output_dir), {"loss": loss, "step": step, "epoch": epoch}
            )

    def epoch_samples(epoch: int) -> list[Sample] | None:
        """This epoch's tokenized training samples, retrying a failing source; ``None`` if it keeps
        failing."""
        seed = derive_seed(config.seed, "epoch", str(epoch))
        for attempt in range(config.data_retries + 1):
            try:
                return tokenized(
                    tokenizer, train_source, config.samples_per_epoch, seed, config.sequence_length
                )
            except DataSourceError as exc:
                if attempt == config.data_retries:
                    logger.error("epoch %d: the training data source failed %d times: %s",
                                 epoch, attempt + 1, exc)  # fmt: skip
                    return None
                wait = min(config.data_retry_wait_s * 2**attempt, config.data_retry_max_wait_s)
                logger.warning("epoch %d: the training data source failed (%s); retrying in %.0f s",
                               epoch, exc, wait)  # fmt: skip
                sleep(wait)
        return None

    resumed = _load_checkpoint(accelerator, config.checkpoint_dir)
    if resumed is None:
        step, epoch, initial_loss = 0, 0, held_out_loss()
        best_loss = initial_loss
        if math.isfinite(initial_loss):
            keep_best(initial_loss)
        logger.info("held-out loss before training: %.4f", initial_loss)
    else:
        step, epoch = int(resumed["step"]), int(resumed["epoch"])
        initial_loss, best_loss = float(resumed["initial_loss"]), float(resumed["best_loss"])
        # the kept model may be better than the checkpoint says (saved by a mid-epoch evaluation after it)
        record = [read_best_loss(config.output_dir) if accelerator.is_main_process else math.inf]
        if accelerator.num_processes > 1:
            broadcast_object_list(record)  # every process must agree on what counts as an improvement
        if record[0] < best_loss:
            logger.info(
                "the kept model's held-out loss %.4f beats the checkpoint's %.4f", record[0], best_loss
            )
            best_loss = record[0]
    result = TrainResult(
        model=model, initial_loss=initial_loss, best_loss=best_loss, final_loss=best_loss,
        start_step=step, steps=step, epochs=epoch, tokens=0, seconds=0.0,
    )  # fmt: skip
    started = time.perf_counter()
    train_loss, tokens_per_s = math.nan, 0.0

    def evaluation(end_of_epoch: bool) -> None:
        nonlocal best_loss
        loss = held_out_loss()
        improved = loss < best_loss
        if improved:
            best_loss = loss
            keep_best(loss)
        report = EvalReport(
            step, epoch, loss, best_loss, initial_loss, improved, end_of_epoch, train_loss, tokens_per_s
        )
        if accelerator.is_main_process:
            logger.info("step %d epoch %d: held-out %.4f (best %.4f), train %.4f, %.0f tokens/s",
                        step, epoch, loss, best_loss, train_loss, tokens_per_s)  # fmt: skip
            result.evals.append(report)
            if on_eval is not None:
                on_eval(report)
        result.final_loss, result.best_loss = loss, best_loss
        accelerator.wait_for_everyone()

    samples: list[Sample] | None = None
    while config.num_epochs is None or epoch < config.num_epochs:
        fresh = epoch_samples(epoch)
        if accelerator.num_processes > 1:  # all processes train on fresh samples, or all reuse theirs
            ok = torch.tensor([int(fresh is not None)], device=accelerator.device)
            if int(accelerator.gather(ok).min()) == 0:
                fresh = None
        if fresh is not None:
            samples = fresh
        elif samples is None:
            raise DataSourceError(f"epoch {epoch}: no training samples (the data source keeps failing)")
        else:
            logger.warning("epoch %d: training on the previous epoch's samples again", epoch)
        if accelerator.num_processes > 1:  # a live source (Cortex) may give processes different counts:
            count = torch.tensor([len(samples)], device=accelerator.device)  # take the same number of steps
            samples = samples[: int(accelerator.gather(count).min())]
        batches = _micro_batches(samples, accelerator, config)
        bar = tqdm(total=len(batches) // config.accumulation_steps, desc=f"epoch {epoch}",
                   disable=not accelerator.is_local_main_process, leave=False)  # fmt: skip
        window_loss, window_micro = 0.0, 0
        for batch in batches:
            inputs = {k: v.to(accelerator.device) for k, v in collate(batch, pad_id).items()}
            with accelerator.accumulate(net):
                logits = net(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
                loss = response_loss(logits, inputs["labels"])
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(net.parameters(), config.max_grad_norm)
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(step, config)
                optimizer.step()
                optimizer.zero_grad()
            window_loss += float(loss.detach())
            window_micro += 1
            result.tokens += int(inputs["attention_mask"].sum()) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            step += 1
            result.seconds = time.perf_counter() - started
            train_loss, tokens_per_s = window_loss / window_micro, result.tokens_per_s
            window_loss, window_micro = 0.0, 0
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tokens_per_s:.0f}")
            if config.eval_every and step % config.eval_every == 0:
                evaluation(end_of_epoch=False)
        bar.close()
        epoch += 1
        result.seconds = time.perf_counter() - started
        tokens_per_s = result.tokens_per_s
        evaluation(end_of_epoch=True)
        if config.checkpoint_dir is not None:
            _save_checkpoint(accelerator, config.checkpoint_dir, {
                "epoch": epoch, "step": step, "initial_loss": initial_loss, "best_loss": best_loss,
            })  # fmt: skip
    result.steps, result.epochs = step, epoch
    result.seconds = time.perf_counter() - started
    result.model = plain_model(accelerator.unwrap_model(net), keep=False)
    return result
