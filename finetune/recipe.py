"""The miner's training recipe, one small method per stage (in the spirit of torchtune's single-device
full fine-tuning recipe), every stage's state on the object:

* :meth:`FinetuneRecipe.setup`: seed, the progress record and, when resuming, the check of the command
  line against the checkpoint (:meth:`check_resume`); the model (gradient checkpointing, LoRA), AdamW,
  the accelerator; then the checkpoint's state, or the starting model's held-out loss.
* :meth:`train_epoch`: draw the epoch's samples (seed derived from ``(seed, epoch)``; a failing source is
  retried with backoff, then the previous epoch's samples are trained on again), tokenized like the
  validator, cut into per-process micro-batches; one :meth:`train_step` per optimizer step.
* :meth:`train_step`: forward and backward of each micro-batch on
  :func:`~finetune.losses.training_loss`, the validator's per-sample response loss with gradients;
  gradient clipping, the learning-rate schedule, AdamW.
* :meth:`evaluate`: the held-out loss with the validator's own :func:`~finetune.losses.compute_losses`
  (the mean of the finite per-sample losses); :meth:`keep_best` saves a model that beats the best so far
  to ``output_dir`` (safetensors only, LoRA merged), then records its loss.
* :meth:`save_checkpoint`: ``accelerator.save_state`` into a fresh ``epoch-N`` folder, then the progress
  record pointing at it, then older folders dropped: a crash at any point leaves a complete checkpoint.

Accelerate writes the optimizer and RNG states with ``torch.save`` (pickle) and loads them with
``torch.load``: acceptable for the miner's *own* files, which nobody else writes, and never used for
anything that comes from the network (other miners' models go through :mod:`finetune.checks`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, set_seed
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from finetune.data import DataSourceError, SampleSource, derive_seed
from finetune.display import RunDisplay, epoch_label, quiet_libraries
from finetune.losses import compute_losses, training_loss
from finetune.model_io import plain_model, save_model
from finetune.progress import MinerProgress
from finetune.training import (
    EvalReport,
    Sample,
    TrainConfig,
    TrainResult,
    apply_lora,
    compare_settings,
    lr_at,
    make_accelerator,
    micro_batches,
    model_fingerprint,
    settings_of,
    tokenized,
)
from utilities.errors import ConfigError
from utilities.retry import retry

logger = logging.getLogger(__name__)


def _inf(loss: float | None) -> float:
    return math.inf if loss is None else loss


def _known(loss: float) -> float | None:
    return loss if math.isfinite(loss) else None


class FinetuneRecipe:
    """Fine-tunes ``model`` on ``train_source``, keeping the best model by held-out loss (module doc)."""

    def __init__(
        self,
        *,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        train_source: SampleSource,
        heldout_source: SampleSource,
        config: TrainConfig,
        accelerator: Accelerator | None = None,
        progress: MinerProgress | None = None,
        display: RunDisplay | None = None,
        on_eval: Callable[[EvalReport], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.train_source, self.heldout_source = train_source, heldout_source
        self.accelerator = accelerator or make_accelerator(config)
        self.progress = progress if progress is not None else MinerProgress.load(
            config.progress_path, checkpoint_dir=config.checkpoint_dir, output_dir=config.output_dir
        )  # fmt: skip
        main = self.accelerator.is_local_main_process
        self.display = display or RunDisplay(enabled=main, total_epochs=config.num_epochs)
        self.on_eval, self.sleep = on_eval, sleep
        self.fsdp = self.accelerator.distributed_type == DistributedType.FSDP
        self.net: torch.nn.Module = model
        self.optimizer: torch.optim.Optimizer | None = None
        self.heldout: list[Sample] = []
        self.samples: list[Sample] | None = None
        self.step = self.epoch = 0
        self.train_loss, self.tokens_per_s = math.nan, 0.0
        self.started = 0.0
        self.result: TrainResult | None = None

    # -- setup ------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Everything before the first step (see the module doc)."""
        config, accelerator = self.config, self.accelerator
        set_seed(config.seed)
        if config.lora_rank is not None and self.fsdp:
            raise ConfigError("LoRA with FSDP is not supported by this recipe: use DDP (one model per GPU)")
        self._share_progress()
        start_model = model_fingerprint(self.model)
        resuming = self._checkpoint_folder() is not None
        notes = self.check_resume(start_model) if resuming else []
        config = self.config  # check_resume keeps the checkpoint's structural settings
        with quiet_libraries():
            if config.gradient_checkpointing:
                self.model.activation_checkpointing_enable({"use_reentrant": False})
                self.model.config.use_cache = False
            net = apply_lora(self.model, config) if config.lora_rank is not None else self.model
            net.train()
            params = [p for p in net.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
            self.net, self.optimizer = accelerator.prepare(net, optimizer)
        self.heldout = tokenized(self.tokenizer, self.heldout_source, config.eval_samples,
                                 derive_seed(config.seed, "heldout"), config.sequence_length)  # fmt: skip
        if resuming:
            self.resume()
        else:
            self.start_fresh(start_model)
        self.result = TrainResult(
            model=self.model, initial_loss=_inf(self.progress.initial_loss), best_loss=self.best_loss,
            final_loss=self.best_loss, start_step=self.step, steps=self.step, epochs=self.epoch, tokens=0,
            seconds=0.0, resume_notes=notes,
        )  # fmt: skip

    def _share_progress(self) -> None:
        """Every process takes the main process's record (they must agree on the step and the best)."""
        if self.accelerator.num_processes > 1:
            shared = [json.dumps(asdict(self.progress)) if self.accelerator.is_main_process else None]
            broadcast_object_list(shared)
            self.progress.update(MinerProgress.from_json(json.loads(str(shared[0]))))

    def _checkpoint_folder(self) -> Path | None:
        """The checkpoint the record points at, if it is there."""
        name, root = self.progress.checkpoint, self.config.checkpoint_dir
        if name is None or root is None:
            return None
        folder = Path(root) / name
        if not folder.is_dir():
            logger.warning("the checkpoint %s is gone: training starts over from the given model", folder)
            return None
        return folder

    def check_resume(self, start_model: str) -> list[str]:
        """Compare the command line with the checkpoint's settings; keep the checkpoint's weights and the
        settings that shape them (LoRA), take every other setting from the command line. Returns (and
        logs) one note per difference."""
        notes: list[str] = []
        if self.progress.start_model is not None and self.progress.start_model != start_model:
            given = getattr(self.model, "name_or_path", "") or "a model"
            notes.append(
                f"kept the checkpoint's weights (step {self.progress.step}): the starting model given now "
                f"({given}) differs from the one this run started from and is not used; delete "
                f"{self.config.checkpoint_dir} to start from it"
            )
        changed, kept = compare_settings(self.progress.settings, settings_of(self.config))
        notes.extend(changed)
        self.config = replace(self.config, **kept)
        for note in notes if self.accelerator.is_main_process else []:
            logger.warning("resuming: %s", note)
        return notes

    def resume(self) -> None:
        """Load the checkpoint's model, optimizer and RNG states, and its position."""
        folder = self._checkpoint_folder()
        if folder is None:  # checked by setup
            raise ConfigError("no checkpoint to resume from")
        with quiet_libraries():
            self.accelerator.load_state(str(folder))
        self.step, self.epoch = self.progress.step, self.progress.epoch
        if self.accelerator.is_main_process:
            logger.info("resumed from %s: %d epochs and %d steps done, held-out loss %.4f at the start, "
                        "best %.4f", folder, self.epoch, self.step, self.initial_loss,
                        self.best_loss)  # fmt: skip

    def start_fresh(self, start_model: str) -> None:
        """A new run: the starting model's held-out loss is the one to beat (and the model kept)."""
        progress = self.progress
        progress.step = progress.epoch = 0
        progress.checkpoint, progress.best_loss, progress.best_step = None, None, None
        progress.start_model, progress.settings = start_model, settings_of(self.config)
        loss = self.evaluate()
        progress.initial_loss = _known(loss)
        if self.accelerator.is_main_process:
            logger.info("held-out loss of the starting model: %.4f", loss)
        if math.isfinite(loss):
            self.keep_best(loss)

    @property
    def initial_loss(self) -> float:
        return _inf(self.progress.initial_loss)

    @property
    def best_loss(self) -> float:
        return _inf(self.progress.best_loss)

    # -- training ---------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Set up, train ``num_epochs`` epochs (for ever with ``None``), return what happened."""
        self.setup()
        result = self.result
        if result is None:
            raise RuntimeError("setup() did not run")
        self.started = time.perf_counter()
        try:
            while self.config.num_epochs is None or self.epoch < self.config.num_epochs:
                self.train_epoch()
        finally:
            self.display.close()
        result.steps, result.epochs = self.step, self.epoch
        result.seconds = time.perf_counter() - self.started
        result.model = plain_model(self.accelerator.unwrap_model(self.net), keep=False)
        if self.accelerator.is_main_process:
            logger.info("done: %d epochs, %d steps; held-out loss %.4f -> best %.4f; %.0f tokens/s",
                        result.epochs, result.steps, result.initial_loss, result.best_loss,
                        result.tokens_per_s)  # fmt: skip
        return result

    def epoch_samples(self, epoch: int) -> list[Sample] | None:
        """Epoch ``epoch``'s tokenized samples (0-based), retrying a failing source; ``None`` if it keeps
        failing."""
        config = self.config
        seed = derive_seed(config.seed, "epoch", str(epoch))
        try:
            return retry(
                lambda: tokenized(self.tokenizer, self.train_source, config.samples_per_epoch, seed,
                                  config.sequence_length),
                what=f"{epoch_label(epoch + 1, config.num_epochs)}: the training data source",
                attempts=config.data_retries + 1, retry_on=(DataSourceError,),
                wait_s=config.data_retry_wait_s, max_wait_s=config.data_retry_max_wait_s, sleep=self.sleep,
            )  # fmt: skip
        except DataSourceError as exc:
            logger.error("epoch %d: the training data source failed %d times: %s",
                         epoch + 1, config.data_retries + 1, exc)  # fmt: skip
            return None

    def _epoch_batches(self) -> list[list[Sample]]:
        """This process's micro-batches of the next epoch (fresh samples, or the last ones again)."""
        accelerator = self.accelerator
        fresh = self.epoch_samples(self.epoch)
        if accelerator.num_processes > 1:  # all processes train on fresh samples, or all reuse theirs
            ok = torch.tensor([int(fresh is not None)], device=accelerator.device)
            if int(accelerator.gather(ok).min()) == 0:
                fresh = None
        if fresh is not None:
            self.samples = fresh
        elif self.samples is None:
            raise DataSourceError(f"epoch {self.epoch + 1}: no training samples (the source keeps failing)")
        else:
            logger.warning("epoch %d: training on the previous epoch's samples again", self.epoch + 1)
        samples = self.samples
        if accelerator.num_processes > 1:  # a live source (Cortex) may give processes different counts:
            count = torch.tensor([len(samples)], device=accelerator.device)  # take the same number of steps
            samples = samples[: int(accelerator.gather(count).min())]
        return micro_batches(samples, processes=accelerator.num_processes, rank=accelerator.process_index,
                             config=self.config)  # fmt: skip

    def train_epoch(self) -> None:
        """One epoch: its optimizer steps, evaluations, and the checkpoint after it."""
        config = self.config
        batches = self._epoch_batches()
        per_step = config.accumulation_steps
        self.display.start_epoch(self.epoch + 1, len(batches) // per_step, done=self.step)
        for first in range(0, len(batches), per_step):
            self.train_step(batches[first : first + per_step])
            if config.eval_every and self.step % config.eval_every == 0:
                self.evaluation(end_of_epoch=False)
        self.epoch += 1
        self.evaluation(end_of_epoch=True)
        if config.checkpoint_dir is not None:
            self.save_checkpoint()

    def train_step(self, batches: list[list[Sample]]) -> float:
        """One optimizer step over ``batches`` (``accumulation_steps`` micro-batches); returns the mean
        training loss of its micro-batches (this process's)."""
        accelerator, net, optimizer, result = self.accelerator, self.net, self.optimizer, self.result
        if optimizer is None or result is None:
            raise RuntimeError("setup() did not run")
        losses = []
        for batch in batches:
            with accelerator.accumulate(net):
                loss = training_loss(net, batch, accelerator.device)
                accelerator.backward(loss)
                if accelerator.sync_gradients and self.config.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(net.parameters(), self.config.max_grad_norm)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(self.step, self.config)
                optimizer.step()
                optimizer.zero_grad()
            losses.append(float(loss.detach()))
            result.tokens += sum(ids.numel() for ids, _ in batch) * accelerator.num_processes
        self.step += 1
        result.seconds = time.perf_counter() - self.started
        self.train_loss, self.tokens_per_s = sum(losses) / len(losses), result.tokens_per_s
        self.display.step(loss=self.train_loss, tokens_per_s=self.tokens_per_s)
        return self.train_loss

    # -- evaluation and the best model ------------------------------------------------------------------
    def evaluate(self) -> float:
        """Mean of the finite per-sample held-out losses (``inf`` when none is finite), by the validator's
        :func:`compute_losses`. Every process evaluates under FSDP (the sharded forward needs them all);
        otherwise only the main one does and the others get ``inf``."""
        loss = math.inf
        if self.fsdp or self.accelerator.is_main_process:
            model = self.net if self.fsdp else self.accelerator.unwrap_model(self.net)
            if hasattr(model, "get_base_model"):  # LoRA: the transformers model, adapters injected
                model = model.get_base_model()  # type: ignore[operator]
            self.display.start_eval(len(self.heldout))
            losses = compute_losses(model, self.heldout, self.accelerator.device,
                                    on_batch=self.display.eval_advance)  # fmt: skip
            finite = [value for value in losses if math.isfinite(value)]
            loss = sum(finite) / len(finite) if finite else math.inf
        self.net.train()
        return loss

    def keep_best(self, loss: float) -> None:
        """Save the current model to ``output_dir`` as the best, then record its loss."""
        self.progress.best_loss, self.progress.best_step = _known(loss), self.step
        if self.config.output_dir is None:
            return
        state_dict = self.accelerator.get_state_dict(self.net) if self.fsdp else None  # collective
        if self.accelerator.is_main_process:
            save_model(self.accelerator.unwrap_model(self.net), self.tokenizer, self.config.output_dir,
                       state_dict=state_dict, dtype=self.config.save_dtype)  # fmt: skip
            self.save_progress()  # after the model: a crash in between leaves a loss too high, never too low

    def evaluation(self, *, end_of_epoch: bool) -> EvalReport:
        """Evaluate, keep the model if it is the best so far, report (``on_eval``) on the main process."""
        result = self.result
        if result is None:
            raise RuntimeError("setup() did not run")
        loss = self.evaluate()
        improved = loss < self.best_loss
        if improved:
            self.keep_best(loss)
        self.display.end_eval(loss, self.best_loss)
        epoch = self.epoch if end_of_epoch else self.epoch + 1  # the epoch trained, from 1
        report = EvalReport(step=self.step, epoch=epoch, loss=loss, best_loss=self.best_loss,
                            initial_loss=self.initial_loss, improved=improved, end_of_epoch=end_of_epoch,
                            train_loss=self.train_loss, tokens_per_s=self.tokens_per_s)  # fmt: skip
        if self.accelerator.is_main_process:
            logger.info("%s step %d: held-out %.4f (best %.4f), train %.4f, %.0f tokens/s",
                        epoch_label(epoch, self.config.num_epochs), self.step, loss, self.best_loss,
                        self.train_loss, self.tokens_per_s)  # fmt: skip
            result.evals.append(report)
            if self.on_eval is not None:
                self.on_eval(report)
        result.final_loss, result.best_loss = loss, self.best_loss
        self.accelerator.wait_for_everyone()
        return report

    # -- checkpoints ------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Save into a fresh ``epoch-N`` folder, then point the record at it, then drop older folders."""
        root = self.config.checkpoint_dir
        if root is None:
            return
        folder = f"epoch-{self.epoch}"
        with quiet_libraries():
            self.accelerator.save_state(str(Path(root) / folder))
        self.accelerator.wait_for_everyone()
        progress = self.progress
        progress.step, progress.epoch, progress.checkpoint = self.step, self.epoch, folder
        progress.settings = settings_of(self.config)
        if self.accelerator.is_main_process:
            self.save_progress()
            for old in Path(root).glob("epoch-*"):
                if old.name != folder:
                    shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def save_progress(self) -> None:
        """Write the record (main process only); the files of earlier versions it replaces go."""
        path = self.config.progress_path
        if path is None or not self.accelerator.is_main_process:
            return
        self.progress.save(path)
        legacy = [path.with_name("miner_state.json")]
        if self.config.checkpoint_dir is not None:
            legacy.append(Path(self.config.checkpoint_dir) / "latest.json")
        if self.config.output_dir is not None:
            output = Path(self.config.output_dir)
            legacy.append(output.with_name(f"{output.name}.best.json"))
        for old in legacy:
            old.unlink(missing_ok=True)
