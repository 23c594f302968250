"""The miner's loop around the training recipe (:class:`finetune.recipe.FinetuneRecipe`, design.md §6).

* :func:`start_model`: the model to start from: the best of the competition on the network, a given
  uid, a folder, a hub repository at a revision, or a fresh model from the competition's base config.
  Everything that comes from elsewhere passes the validator's own checks (:class:`ModelChecker`) and is
  loaded with safetensors only.
* :class:`Miner`: train; at the end of each epoch, publish the best model when its held-out loss beats
  the last published one by ``threshold`` (relative). A hub or chain failure is logged, the model folder
  kept, and the publication retried at the end of the next epoch. What was published lives in the same
  record as the training progress (:class:`~finetune.progress.MinerProgress`, written atomically).

Layout of ``model_dir``: ``model/`` the best model (what gets published), ``progress.json`` the record
(never published), ``checkpoints/`` the training state to resume from, ``downloads/`` starting models
fetched from the network.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from constants.competitions import Competition
from finetune.checks import ModelChecker, load_model
from finetune.data import SampleSource
from finetune.progress import PROGRESS_FILE, MinerProgress
from finetune.publishing import Publisher
from finetune.recipe import FinetuneRecipe
from finetune.training import EvalReport, TrainConfig, TrainResult
from model.data import ModelId
from model.hashing import hash_directory, hash_with_hotkey
from model.storage.chain.protocol import Chain
from model.storage.hub.protocol import Hub
from utilities.errors import ConfigError, FinetuneError, ModelRejectedError

logger = logging.getLogger(__name__)

class WandbLog:
    """Logs training metrics to wandb; any wandb failure is a warning and switches it off."""

    def __init__(self, *, project: str, entity: str | None, config: dict[str, Any]) -> None:
        self.project, self.entity, self.config = project, entity, config
        self._run: Any = None
        self._off = False

    def log(self, metrics: dict[str, Any]) -> None:
        if self._off:
            return
        try:
            if self._run is None:
                import wandb

                settings = wandb.Settings(init_timeout=60)
                self._run = wandb.init(project=self.project, entity=self.entity, config=self.config,
                                       job_type="miner", settings=settings)  # fmt: skip
            self._run.log({k: v for k, v in metrics.items() if not isinstance(v, float) or math.isfinite(v)})
        except Exception as exc:  # noqa: BLE001 - wandb must never stop the miner, whatever it raises
            logger.warning("wandb logging failed, switching it off: %s", exc)
            self._off = True

    def close(self) -> None:
        if self._run is not None and not self._off:
            try:
                self._run.finish()
            except Exception as exc:  # noqa: BLE001 - see log()
                logger.warning("wandb finish failed: %s", exc)


def committed_models(chain: Chain, competition_id: str) -> dict[int, ModelId]:
    """uid -> the model its hotkey committed for ``competition_id`` (unparseable commitments skipped)."""
    metagraph = chain.metagraph()
    found: dict[int, ModelId] = {}
    for hotkey, commitment in chain.commitments().items():
        uid = metagraph.uid_of(hotkey)
        try:
            model_id = ModelId.from_compressed_str(commitment.data)
        except ValueError:
            continue
        if uid is not None and model_id.competition_id == competition_id:
            found[uid] = model_id
    return found


def best_uid(chain: Chain, competition_id: str) -> int:
    """The uid with the highest incentive among those that committed a model to ``competition_id``."""
    metagraph = chain.metagraph()
    candidates = committed_models(chain, competition_id)
    if not candidates:
        raise ConfigError(f"no miner has committed a model to competition {competition_id!r}")
    incentive = {int(uid): float(metagraph.incentive[i]) for i, uid in enumerate(metagraph.uids)}
    uid = max(sorted(candidates), key=lambda u: incentive.get(u, 0.0))
    logger.info("best model of %s: uid %d (incentive %.4f)", competition_id, uid, incentive.get(uid, 0.0))
    return uid


def model_of_uid(chain: Chain, uid: int) -> tuple[str, ModelId]:
    """(hotkey, committed model) of ``uid``."""
    hotkey = chain.metagraph().hotkey_of(uid)
    commitment = chain.commitment(hotkey)
    if commitment is None:
        raise ConfigError(f"uid {uid} has committed no model")
    try:
        return hotkey, ModelId.from_compressed_str(commitment.data)
    except ValueError as exc:
        raise ConfigError(f"uid {uid} committed something that is not a model: {exc}") from exc


def fetch_model(
    hub: Hub, model_id: ModelId, dest: Path, competition: Competition, checker: ModelChecker,
    *, hotkey: str | None = None,
) -> Path:  # fmt: skip
    """Download ``model_id`` into ``dest`` (replaced) the way a validator does: hub metadata checked first,
    then the files; with ``hotkey``, the committed hash must match what was served (plain or salted)."""
    if model_id.commit is None:
        raise ConfigError(f"{model_id.repo_id} names no commit")
    checker.check_repo(hub.repo_info(model_id.repo_id, commit=model_id.commit), competition)
    shutil.rmtree(dest, ignore_errors=True)
    hub.download(model_id.repo_id, commit=model_id.commit, dest=dest)
    if hotkey is not None and model_id.hash is not None:
        plain = hash_directory(dest)
        if model_id.hash not in (plain, hash_with_hotkey(plain, hotkey)):
            raise ModelRejectedError("hash_mismatch", f"{model_id.repo_id}: served files do not match")
    return dest


def load_checked(
    folder: Path, competition: Competition, checker: ModelChecker, *, device: str, dtype: torch.dtype,
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:  # fmt: skip
    """``load_model`` of ``folder`` after :meth:`ModelChecker.check_folder` passed on it."""
    params = checker.check_folder(folder, competition)
    logger.info("%s passed the checks (%d parameters)", folder, params)
    return load_model(folder, device=device, dtype=dtype, attn_implementation=attn_implementation)


def fresh_model(competition: Competition, *, seed: int, dtype: torch.dtype) -> PreTrainedModel:
    """A randomly initialised model of the competition's ``base_config`` (seeded)."""
    if competition.base_config is None:
        raise ConfigError(f"competition {competition.id} has no base config: pick a model to start from")
    config = AutoConfig.from_pretrained(competition.base_config, trust_remote_code=False)
    torch.manual_seed(seed)
    model: PreTrainedModel = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def start_model(
    competition: Competition,
    *,
    chain: Chain | None = None,
    hub: Hub | None = None,
    download_dir: Path,
    load_best: bool = False,
    load_uid: int | None = None,
    load_model_dir: Path | None = None,
    load_repo: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    checker: ModelChecker | None = None,
) -> PreTrainedModel:
    """The model to start from (at most one source; none gives a fresh one). Downloads go to
    ``download_dir``. Raises :class:`ModelRejectedError` for a model that fails the checks."""
    if sum([load_best, load_uid is not None, load_model_dir is not None, load_repo is not None]) > 1:
        raise ConfigError("choose one of --load_best, --load_uid, --load_model_dir, --load_repo")
    checker = checker or ModelChecker()
    load = {"device": device, "dtype": dtype, "attn_implementation": attn_implementation}
    if load_model_dir is not None:
        return load_checked(Path(load_model_dir), competition, checker, **load)  # type: ignore[arg-type]
    if not (load_best or load_uid is not None or load_repo is not None):
        logger.info("starting from a fresh %s (seed %d)", competition.base_config, seed)
        return fresh_model(competition, seed=seed, dtype=dtype)
    if chain is None or hub is None:
        raise ConfigError("loading a model from the network needs a chain and a hub")
    hotkey: str | None = None
    if load_repo is not None:
        repo_id, _, revision = load_repo.partition("@")
        namespace, _, name = repo_id.partition("/")
        model_id = ModelId(namespace=namespace, name=name, commit=revision or None)
    else:
        uid = best_uid(chain, competition.id) if load_best else int(load_uid)  # type: ignore[arg-type]
        hotkey, model_id = model_of_uid(chain, uid)
    logger.info("starting from %s@%s", model_id.repo_id, model_id.commit)
    folder = fetch_model(hub, model_id, download_dir, competition, checker, hotkey=hotkey)
    return load_checked(folder, competition, checker, **load)  # type: ignore[arg-type]


@dataclass(frozen=True)
class PublishSettings:
    """Where and how the miner publishes (``publisher=None``: offline, never publishes)."""

    publisher: Publisher | None
    repo_id: str | None
    competition_id: str
    threshold: float = 0.01
    use_hotkey_in_hash: bool = False


class Miner:
    """Trains, keeps the best model in ``model_dir/model``, publishes improvements (see module doc)."""

    def __init__(
        self,
        *,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        train_source: SampleSource,
        heldout_source: SampleSource,
        config: TrainConfig,
        model_dir: Path,
        publish: PublishSettings,
        accelerator: Accelerator | None = None,
        wandb_log: WandbLog | None = None,
    ) -> None:
        if publish.publisher is not None and publish.repo_id is None:
            raise ConfigError("publishing needs a repository id (--hf_repo_id)")
        self.model, self.tokenizer = model, tokenizer
        self.train_source, self.heldout_source = train_source, heldout_source
        self.model_dir = Path(model_dir)
        self.config = replace(
            config, output_dir=self.model_dir / "model", checkpoint_dir=self.model_dir / "checkpoints",
            progress_file=self.model_dir / PROGRESS_FILE,
        )  # fmt: skip
        self.publish_settings = publish
        self.accelerator = accelerator
        self.wandb_log = wandb_log
        self.progress = MinerProgress.load(
            self.config.progress_path, checkpoint_dir=self.config.checkpoint_dir, output_dir=self.best_folder
        )
        self.published: list[ModelId] = []

    @property
    def best_folder(self) -> Path:
        return self.model_dir / "model"

    def run(self) -> TrainResult:
        """Train for ``config.num_epochs`` epochs (forever with ``None``), publishing along the way."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        recipe = FinetuneRecipe(
            model=self.model, tokenizer=self.tokenizer, train_source=self.train_source,
            heldout_source=self.heldout_source, config=self.config, accelerator=self.accelerator,
            progress=self.progress, on_eval=self.on_eval,
        )  # fmt: skip
        try:
            return recipe.run()
        finally:
            if self.wandb_log is not None:
                self.wandb_log.close()

    def on_eval(self, report: EvalReport) -> None:
        """Log the evaluation; at the end of an epoch, publish if worthwhile (main process only)."""
        if self.wandb_log is not None:
            self.wandb_log.log({"step": report.step, "epoch": report.epoch, "heldout_loss": report.loss,
                                "best_heldout_loss": report.best_loss, "train_loss": report.train_loss,
                                "tokens_per_s": report.tokens_per_s})  # fmt: skip
        if report.end_of_epoch:
            self.maybe_publish(report.best_loss, baseline=report.initial_loss)

    def save_progress(self) -> None:
        """Write the record (the miner publishes from the main process only)."""
        path = self.config.progress_path
        if path is not None:
            self.progress.save(path)

    def should_publish(self, best_loss: float, *, baseline: float) -> bool:
        """A pending publication always; otherwise a finite loss that beats the last published one (or
        the starting model's, before any publication) by the relative threshold."""
        if self.progress.pending:
            return True
        published = self.progress.published_loss
        reference = published if published is not None else baseline
        bar = reference * (1.0 - self.publish_settings.threshold) if math.isfinite(reference) else math.inf
        return math.isfinite(best_loss) and best_loss < bar

    def maybe_publish(self, best_loss: float, *, baseline: float) -> ModelId | None:
        """Publish ``model_dir/model`` if :meth:`should_publish`; on a hub/chain failure, remember it is
        pending (the folder stays) and return ``None``."""
        settings = self.publish_settings
        if settings.publisher is not None:
            settings.publisher.retry_pending()  # a model on chain whose make_public failed
        if not self.should_publish(best_loss, baseline=baseline) or not self.best_folder.is_dir():
            return None
        if settings.publisher is None or settings.repo_id is None:
            logger.info("offline: best model (held-out %.4f) kept in %s", best_loss, self.best_folder)
            return None
        try:
            model_id = settings.publisher.publish(
                self.best_folder, repo_id=settings.repo_id, competition_id=settings.competition_id,
                use_hotkey_in_hash=settings.use_hotkey_in_hash,
            )  # fmt: skip
        except FinetuneError as exc:
            logger.warning("publishing failed, the model stays in %s and is retried next epoch: %s",
                           self.best_folder, exc)  # fmt: skip
            self.progress.pending, self.progress.pending_loss = True, best_loss
            self.save_progress()
            return None
        self.progress.published_loss = best_loss if math.isfinite(best_loss) else None
        self.progress.published_model_id = model_id.to_compressed_str()
        self.progress.pending, self.progress.pending_loss = False, None
        self.save_progress()
        self.published.append(model_id)
        logger.info("published %s (held-out loss %.4f)", model_id.to_compressed_str(), best_loss)
        return model_id
