"""The validator's loop (design.md §5), as a class whose steps tests can drive one at a time.

- :meth:`Validator.step`: one competition (round robin), fresh samples seeded by the block hash,
  losses of the kept models plus a few new ones, the mechanism (:func:`finetune.validation.score_step`),
  the moving average, the tracker, the state file, the reports.
- :meth:`Validator.sync_models`: the updater over every hotkey, then the cleaner.
- :meth:`Validator.maybe_set_weights`: every ``blocks_per_epoch`` blocks, the normalized scores.
- :meth:`Validator.run`: the step loop, with syncing and weight setting on their own threads so that
  a slow step never delays weights.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress, TextColumn

from constants import ALPHA, BLOCKS_PER_EPOCH, SAMPLES_PER_STEP, SPEC_VERSION, TEMPERATURE
from constants.competitions import MAINNET_SCHEDULE, Competition, ScheduleEntry, competitions_at
from finetune.data import DataSourceError, SampleSource, seed_from_block_hash
from finetune.evaluation import EvalJob, EvalResult, Evaluator
from finetune.tokenization import load_tokenizer, tokenize_samples
from finetune.validation import StepResult, score_step, update_scores
from finetune.validator.records import ModelRow, Reporter, StepReport
from finetune.validator.state import ValidatorState
from model.cleaner import ModelCleaner
from model.data import ModelMetadata
from model.storage.chain.protocol import Chain, Metagraph
from model.storage.disk.model_store import DiskModelStore
from model.tracker import ModelRecord, ModelTracker
from model.updater import ModelUpdater
from utilities.errors import FinetuneError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidatorSettings:
    state_dir: Path
    schedule: Sequence[ScheduleEntry] = MAINNET_SCHEDULE
    samples_per_step: int = SAMPLES_PER_STEP
    blocks_per_epoch: int = BLOCKS_PER_EPOCH
    sample_min: int = 5
    """Models kept in the evaluation per competition (the best of the last step)."""
    max_new_per_step: int = 10
    """New (never evaluated) models added to a step, highest chain incentive first."""
    alpha: float = ALPHA
    temperature: float = TEMPERATURE
    set_weights: bool = True
    sync_interval_s: float = 300.0
    weights_check_interval_s: float = 60.0
    step_pause_s: float = 1.0
    idle_pause_s: float = 10.0
    """Pause after a step that evaluated nothing."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "validator_state.json"

    @property
    def tracker_file(self) -> Path:
        return self.state_dir / "tracker.json"


class Validator:
    def __init__(
        self,
        *,
        chain: Chain,
        source: SampleSource,
        evaluator: Evaluator,
        store: DiskModelStore,
        tracker: ModelTracker,
        updater: ModelUpdater,
        cleaner: ModelCleaner,
        settings: ValidatorSettings,
        reporters: Sequence[Reporter] = (),
        tokenizer_loader: Callable[[Competition], Any] = load_tokenizer,
    ) -> None:
        self.chain, self.source, self.evaluator = chain, source, evaluator
        self.store, self.tracker, self.updater, self.cleaner = store, tracker, updater, cleaner
        self.settings = settings
        self.reporters = list(reporters)
        self._tokenizer_loader = tokenizer_loader
        self._tokenizers: dict[str, Any] = {}
        self._lock = threading.RLock()
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.state = ValidatorState.load(settings.state_file)

    # ---- one step --------------------------------------------------------------------------------
    def step(self) -> StepReport | None:
        """Evaluate one competition; returns the report, or ``None`` when the step was skipped."""
        started = time.monotonic()
        block = self.chain.current_block()
        metagraph = self.chain.metagraph()
        competitions = competitions_at(block, schedule=self.settings.schedule)
        if not competitions:
            logger.warning("no competition is active at block %d", block)
            return None
        competition = competitions[self.state.step % len(competitions)]
        uid_of = {hk: int(uid) for hk, uid in zip(metagraph.hotkeys, metagraph.uids, strict=True)}
        candidates = {hk: r for hk, r in self.tracker.models_for(competition.id).items() if hk in uid_of}
        chosen = self._choose(competition.id, candidates, metagraph)
        if not chosen:
            logger.info("step %d: no model to evaluate in competition %s", self.state.step, competition.id)
            self._finish(None)
            return None
        seed = seed_from_block_hash(self.chain.block_hash(block))
        try:
            raw = self.source.sample(self.settings.samples_per_step, seed=seed)
        except DataSourceError as exc:
            logger.warning("step %d skipped: the data source failed: %s", self.state.step, exc)
            return None
        samples = tokenize_samples(
            self._tokenizer(competition), raw, sequence_length=competition.sequence_length
        )
        jobs = [EvalJob(hk, self.store.model_dir(hk, _metadata(candidates[hk]).id)) for hk in chosen]
        with Progress(
            *Progress.get_default_columns(), TextColumn("{task.fields[last]}"), transient=True
        ) as progress:
            task = progress.add_task(f"evaluating {competition.id}", total=len(jobs), last="")
            results = self.evaluator.evaluate(
                jobs,
                [(ids[0].tolist(), p) for ids, p in samples],
                on_result=lambda r: progress.update(task, advance=1, last=f"{r.key} {r.seconds:.1f} s"),
            )
        uids = [uid_of[hk] for hk in chosen]
        result = score_step(
            uids,
            {uid_of[hk]: results[hk].losses for hk in chosen},
            {uid_of[hk]: _metadata(candidates[hk]).block for hk in chosen},
            # identical weights count once, whatever other files (README, config keys) a copy changed
            {uid_of[hk]: candidates[hk].weights_hash or candidates[hk].model_hash for hk in chosen},
            competition=competition,
            current_block=block,
            temperature=self.settings.temperature,
            seed=seed,
        )
        others = [c.id for c in competitions if c.id != competition.id]
        elsewhere = {hk for other in others for hk in self.tracker.models_for(other)}
        # a hotkey whose model changed while this step ran (the sync thread): its result belongs to
        # the old model, so it neither earns nor decays now, and the new model keeps a clean history
        current = self.tracker.records()
        changed = {
            hk for hk in chosen if hk not in current or current[hk].metadata != candidates[hk].metadata
        }
        scored = [hk for hk in chosen if hk not in changed]
        anything_scored = any(math.isfinite(x) for hk in chosen for x in results[hk].losses)
        with self._lock:
            if anything_scored:
                # this competition's models, and any scored hotkey whose model is in no competition now
                # (rejected, evicted, withdrawn), decay towards their weight in this step (0 if absent)
                members = (set(candidates) | set(self.state.scores)) - elsewhere - changed
                self._update_scores(members, {hk: result.weights[uid_of[hk]] for hk in scored})
            else:
                logger.warning("step %d: no model scored any sample; scores unchanged", self.state.step)
            ranked = sorted(result.kept, key=lambda uid: -result.win_rate[uid])
            hotkey_of = {uid: hk for hk, uid in uid_of.items()}
            self.state.kept[competition.id] = [hotkey_of[uid] for uid in ranked[: self.settings.sample_min]]
            rows = tuple(self._row(hk, uid_of[hk], candidates[hk], results[hk], result) for hk in chosen)
            for row in rows:
                if row.hotkey in scored:
                    self.tracker.record_evaluation(
                        row.hotkey,
                        {"step": self.state.step, "block": block, "competition": competition.id,
                         "mean_loss": row.mean_loss, "win_rate": row.win_rate, "weight": row.weight},
                    )  # fmt: skip
            report = StepReport(
                step=self.state.step,
                block=block,
                competition_id=competition.id,
                seed=seed,
                n_samples=len(samples),
                seconds=time.monotonic() - started,
                rows=rows,
                skipped={hk: "not kept from the last step" for hk in candidates if hk not in chosen},
            )
            self._finish(report)
        self._report(report)
        return report

    def _row(
        self, hotkey: str, uid: int, record: ModelRecord, evaluation: EvalResult, result: StepResult
    ) -> ModelRow:
        finite = [x for x in evaluation.losses if math.isfinite(x)]
        note = "same model as an earlier commit" if uid in result.duplicates else evaluation.error or ""
        return ModelRow(
            uid=uid,
            hotkey=hotkey,
            model=_model_name(record),
            block=_metadata(record).block,
            mean_loss=float(np.mean(finite)) if finite else math.inf,
            win_rate=result.win_rate.get(uid, 0.0),
            ci=result.ci.get(uid, (0.0, 0.0)),
            weight=result.weights.get(uid, 0.0),
            score=self.state.scores.get(hotkey, 0.0),
            note=note,
            losses=tuple(evaluation.losses),
        )

    def _report(self, report: StepReport) -> None:
        for reporter in self.reporters:
            try:
                reporter.report(report, tuple(self.state.history))
            except Exception:  # a broken report must never stop validation
                logger.exception("reporter %s failed", type(reporter).__name__)

    def _choose(
        self, competition_id: str, candidates: dict[str, ModelRecord], metagraph: Metagraph
    ) -> list[str]:
        """The kept models of the last step, the best by score (so one bad step, e.g. a worker crash,
        does not drop a good model for good), then never-evaluated ones, highest chain incentive first
        (a fresh validator starts from what the chain already ranks highest)."""
        kept = [hk for hk in self.state.kept.get(competition_id, []) if hk in candidates]
        by_score = sorted(
            (hk for hk in candidates if self.state.scores.get(hk, 0.0) > 0.0),
            key=lambda hk: -self.state.scores[hk],
        )
        for hotkey in by_score[: self.settings.sample_min]:
            if hotkey not in kept:
                kept.append(hotkey)
        incentive = dict(zip(metagraph.hotkeys, metagraph.incentive, strict=True))
        fresh = sorted(
            (hk for hk, r in candidates.items() if hk not in kept and not r.evaluations),
            key=lambda hk: (-incentive.get(hk, 0.0), _metadata(candidates[hk]).block, hk),
        )
        return kept + fresh[: self.settings.max_new_per_step]

    def _update_scores(self, members: set[str], step_weights: dict[str, float]) -> None:
        """Moving average over this competition's hotkeys; those not evaluated get 0 this step."""
        hotkeys = sorted(members)
        old = np.array([self.state.scores.get(hk, 0.0) for hk in hotkeys], dtype=np.float64)
        new = np.array([step_weights.get(hk, 0.0) for hk in hotkeys], dtype=np.float64)
        updated = update_scores(old, new, alpha=self.settings.alpha)
        self.state.scores.update({hk: float(s) for hk, s in zip(hotkeys, updated, strict=True)})

    def _finish(self, report: StepReport | None) -> None:
        with self._lock:
            if report is not None:
                self.state.add_report(report)
            self.state.step += 1
            self.save()

    def _tokenizer(self, competition: Competition) -> Any:
        if competition.id not in self._tokenizers:
            self._tokenizers[competition.id] = self._tokenizer_loader(competition)
        return self._tokenizers[competition.id]

    def save(self) -> None:
        with self._lock:
            self.state.save(self.settings.state_file)
            self.tracker.save(self.settings.tracker_file)

    # ---- background work -------------------------------------------------------------------------
    def sync_models(self) -> None:
        """Bring every hotkey's model up to date, then delete what no hotkey references."""
        block = self.chain.current_block()
        self.updater.sync_all(block)
        self.cleaner.clean()
        with self._lock:
            self.state.forget_missing(self.tracker.hotkeys())
            self.save()

    def maybe_set_weights(self) -> bool:
        """Set weights if ``blocks_per_epoch`` blocks passed since the last time; never raises for a
        chain failure (it is logged and retried at the next call)."""
        if not self.settings.set_weights:
            return False
        try:
            block = self.chain.current_block()
            last = self.state.last_weights_block
            if last is not None and block - last < self.settings.blocks_per_epoch:
                return False
            metagraph = self.chain.metagraph()
            with self._lock:
                uids, weights = self.state.weights_for(metagraph)
            if not any(weights):
                logger.info("no scores yet: not setting weights at block %d", block)
                return False
            self.chain.set_weights(uids, weights, version_key=SPEC_VERSION)
        except FinetuneError as exc:
            logger.warning("setting weights failed (will retry): %s", exc)
            return False
        with self._lock:
            self.state.last_weights_block = block
            self.state.last_weights = dict(zip(uids, weights, strict=True))
            self.save()
        logger.info("set weights at block %d on %d uids", block, sum(w > 0 for w in weights))
        return True

    def run(self, *, stop: threading.Event | None = None, max_steps: int | None = None) -> None:
        """Step until ``stop`` is set (or ``max_steps`` steps ran), with syncing and weight setting on
        their own threads."""
        stop = stop or threading.Event()
        # the first chain call from one thread: the SDK sets up its connection on first use
        self._guarded(self.chain.current_block)
        weights = threading.Thread(
            target=self._every,
            args=(stop, self.settings.weights_check_interval_s, self.maybe_set_weights),
            name="weights",
            daemon=True,
        )
        weights.start()  # first, so a restarted validator keeps setting weights while it syncs
        self._guarded(self.sync_models)  # the first step needs the models on disk
        sync = threading.Thread(
            target=self._every,
            args=(stop, self.settings.sync_interval_s, self.sync_models, self.settings.sync_interval_s),
            name="model-sync",
            daemon=True,
        )
        sync.start()
        threads = [weights, sync]
        steps = 0
        try:
            while not stop.is_set() and (max_steps is None or steps < max_steps):
                report = None
                try:
                    report = self.step()
                except FinetuneError as exc:
                    logger.warning("step failed: %s", exc)
                except Exception:  # a bug or an unexpected library error must not stop validation
                    logger.exception("step failed unexpectedly")
                steps += 1
                # nothing evaluated (no models yet, data source down): no point in spinning
                stop.wait(self.settings.step_pause_s if report is not None else self.settings.idle_pause_s)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

    @classmethod
    def _every(
        cls, stop: threading.Event, interval_s: float, work: Callable[[], object], delay_s: float = 0.0
    ) -> None:
        stop.wait(delay_s)
        while not stop.is_set():
            cls._guarded(work)
            stop.wait(interval_s)

    @staticmethod
    def _guarded(work: Callable[[], object]) -> None:
        """Run background ``work``; no failure of it may end its thread."""
        name = getattr(work, "__name__", "background work")
        try:
            work()
        except FinetuneError as exc:
            logger.warning("%s failed: %s", name, exc)
        except Exception:  # the thread must outlive any single failure
            logger.exception("%s failed unexpectedly", name)


def _metadata(record: ModelRecord) -> ModelMetadata:
    if record.metadata is None:  # models_for only returns parsed, checked models
        raise ValueError(f"hotkey {record.hotkey} has no parsed commitment")
    return record.metadata


def _model_name(record: ModelRecord) -> str:
    if record.metadata is None:
        return "?"
    model_id = record.metadata.id
    return f"{model_id.repo_id}@{(model_id.commit or '?')[:8]}"
