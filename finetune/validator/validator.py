"""The validator's loop (design.md §5), as a class whose steps tests can drive one at a time.

- :meth:`Validator.step`: one competition (round robin), samples seeded by the hash of its sync block,
  the models the step's rules choose (:mod:`finetune.rules`), every task of the competition judged and
  combined (:mod:`finetune.validator.judge`; one task: exactly :func:`finetune.validation.score_step`),
  the moving average, the tracker, the state file, the reports. The rules are pure functions; this
  class only reads, evaluates, writes and reports.
- :meth:`Validator.sync_models`: the updater over every hotkey, then the cleaner.
- :meth:`Validator.maybe_set_weights`: every ``blocks_per_epoch`` blocks, the weights of
  :func:`finetune.rules.chain_weights`.
- :meth:`Validator.run`: the step loop, with syncing and weight setting on their own threads so that
  a slow step never delays weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress, TextColumn

from constants import ALPHA, BLOCKS_PER_EPOCH, SAMPLES_PER_STEP, SPEC_VERSION, TEMPERATURE
from constants.competitions import MAINNET_SCHEDULE, Competition, ScheduleEntry, competitions_at
from finetune.data import DataSourceError, SampleSource, seed_from_block_hash
from finetune.evaluation import EvalJob, EvalResult, Evaluator
from finetune.rules import (
    Candidate,
    chain_weights,
    choose_models,
    consensus_start,
    samples_digest,
    split_eligible,
    sync_window,
    weight_targets,
    window_losses,
    window_scores,
)
from finetune.tasks.combine import TaskStepResult
from finetune.tasks.step import PreparedTask, evaluate_tasks
from finetune.tokenization import load_tokenizer
from finetune.validator.deadline import DeadlineSource
from finetune.validator.judge import TaskSources, model_row, prepare_step, score_step_tasks
from finetune.validator.loop import run_loop
from finetune.validator.plan import StepPlan, by_hotkey, metadata_of, model_key
from finetune.validator.records import ModelRow, Reporter, StepReport
from finetune.validator.state import ValidatorState, remove_leftover_temp_files
from model.cleaner import ModelCleaner
from model.storage.chain.protocol import Chain, Metagraph
from model.storage.disk.model_store import DiskModelStore
from model.tracker import ModelRecord, ModelTracker
from model.updater import ModelUpdater
from utilities.errors import ChainError, FinetuneError

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
    sample_timeout_s: float = 600.0
    """Deadline of one draw of samples: a data source that hangs skips the step (with a warning)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "validator_state.json"

    @property
    def tracker_file(self) -> Path:
        return self.state_dir / "tracker.json"

    def __post_init__(self) -> None:
        if not self.sample_timeout_s > 0.0:
            raise ValueError(f"sample_timeout_s must be > 0, got {self.sample_timeout_s}")


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
        self.chain, self.evaluator = chain, evaluator
        self.source = DeadlineSource(source, timeout_s=settings.sample_timeout_s)
        """Every draw has a deadline: a hanging data source skips the step (issue 12.8)."""
        self.sources = TaskSources(self.source, timeout_s=settings.sample_timeout_s)
        """Each task's source: this one for the validator's own, the others built from their specs."""
        self.store, self.tracker, self.updater, self.cleaner = store, tracker, updater, cleaner
        self.settings = settings
        self.reporters = list(reporters)
        self._tokenizer_loader = tokenizer_loader
        self._tokenizers: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._too_few: tuple[int, int] | None = None
        """(neurons, MinAllowedWeights) last refused for too few neurons (logged once)."""
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        remove_leftover_temp_files(settings.state_dir, [settings.state_file.name, settings.tracker_file.name])
        self.state = ValidatorState.load(settings.state_file)

    # ---- one step --------------------------------------------------------------------------------
    def step(self) -> StepReport | None:
        """Evaluate one competition; returns the report, or ``None`` when the step was skipped.

        However the step ends (skipped, a data source down, a tokenizer, chain or evaluator error),
        the step counter moves on, so the round robin reaches the next competition instead of
        retrying a failing one forever."""
        counted = self.state.step
        try:
            return self._step()
        finally:
            if self.state.step == counted:  # ended before _finish: count it, record nothing
                self._finish(None)

    def _step(self) -> StepReport | None:
        started = time.monotonic()
        plan = self._plan()
        if plan is None:
            return None
        if not plan.chosen:
            logger.info(
                "step %d: no model to evaluate in competition %s (%d waiting for sync block %d)",
                self.state.step, plan.competition.id,
                sum(r.startswith("waiting") for r in plan.skipped.values()), plan.window.sync_block,
            )  # fmt: skip
            self._finish(None)
            return None
        seed = seed_from_block_hash(self.chain.block_hash(plan.window.sync_block))
        competition = plan.competition
        try:  # the sync block's time fixes what a growing source (Cortex.t) draws from in this window
            cutoff = self.chain.block_timestamp(plan.window.sync_block)
        except ChainError as exc:
            logger.warning("step %d skipped: no time for sync block %d: %s", self.state.step,
                           plan.window.sync_block, exc)  # fmt: skip
            return None
        try:
            prepared = prepare_step(
                competition, self.sources, self._tokenizer(competition), seed=seed,
                samples_per_step=self.settings.samples_per_step, cutoff=cutoff,
            )  # fmt: skip
        except DataSourceError as exc:
            logger.warning("step %d skipped: the data source failed: %s", self.state.step, exc)
            return None
        results = self._evaluate(competition.id, plan.chosen, plan.members, prepared)
        results = self._window_results(plan, prepared, results)  # every model evaluated in the window
        scored = [hk for hk in plan.members if hk in results[prepared[0].task.name]]
        result = score_step_tasks(
            competition, results, scored, plan.uid_of,
            blocks={hk: metadata_of(plan.members[hk]).block for hk in scored},
            # identical weights count once, whatever other files (README, config keys) a copy changed
            hashes={hk: plan.members[hk].weights_hash or plan.members[hk].model_hash for hk in scored},
            current_block=plan.window.sync_block,  # epsilon ages from the sync block: the same everywhere
            temperature=self.settings.temperature, seed=seed,
        )  # fmt: skip
        with self._lock:
            rows = self._record(plan, results, result)
            report = StepReport(
                step=self.state.step,
                block=plan.window.sync_block,
                competition_id=competition.id,
                seed=seed,
                n_samples=sum(len(task.samples) for task in prepared),
                seconds=time.monotonic() - started,
                rows=rows,
                skipped=plan.skipped,
            )
            self._finish(report)
        self._report(report)
        return report

    def _plan(self) -> StepPlan | None:
        """This step's competition, window and models (the rules of :mod:`finetune.rules`); ``None``
        when no competition is active."""
        finalized = self.chain.finalized_block()
        metagraph = self.chain.metagraph()
        competitions = competitions_at(finalized, schedule=self.settings.schedule)
        if not competitions:
            logger.warning("no competition is active at block %d", finalized)
            return None
        competition = competitions[self.state.step % len(competitions)]
        window = sync_window(finalized, competition)
        uid_of = {hk: int(uid) for hk, uid in zip(metagraph.hotkeys, metagraph.uids, strict=True)}
        members = {hk: r for hk, r in self.tracker.models_for(competition.id).items() if hk in uid_of}
        ready, waiting = split_eligible({hk: metadata_of(r).block for hk, r in members.items()}, window)
        consensus = by_hotkey(metagraph, metagraph.consensus)
        incentive = by_hotkey(metagraph, metagraph.incentive)
        candidates = {
            hk: Candidate(
                metadata_of(members[hk]).block, model_key(members[hk]), consensus[hk], incentive[hk]
            )
            for hk in ready
        }
        chosen, skipped = choose_models(
            candidates, kept=self.state.kept.get(competition.id, []), scores=self.state.scores,
            evaluated=self.state.evaluated, sample_min=self.settings.sample_min,
            max_new=self.settings.max_new_per_step,
        )  # fmt: skip
        chosen = self._verify_before_eval(chosen, skipped)
        others = {hk for c in competitions if c.id != competition.id for hk in self.tracker.models_for(c.id)}
        return StepPlan(
            competition,
            window,
            uid_of,
            members,
            candidates,
            chosen,
            {**skipped, **waiting},
            consensus,
            others,
        )

    def _record(
        self, plan: StepPlan, results: dict[str, dict[str, EvalResult]], result: TaskStepResult
    ) -> tuple[ModelRow, ...]:
        """Fold a step into the state (scores, kept, evaluated) and the tracker; the report's rows."""
        competition, uid_of = plan.competition, plan.uid_of
        scored = [hk for hk, uid in uid_of.items() if uid in result.weights]  # the window's match
        # a hotkey whose model changed while this step ran (the sync thread): its result belongs to
        # the old model, so it neither earns nor decays now, and the new model keeps a clean history
        current = self.tracker.records()
        changed = {
            hk for hk in scored if hk not in current or current[hk].metadata != plan.members[hk].metadata
        }
        step_weights = {hk: result.weights[uid_of[hk]] for hk in scored if hk not in changed}
        base = self.state.scores
        first = competition.id not in self.state.scored_competitions
        if first:  # a competition's moving average starts from the chain's consensus (the seed's rule)
            base = {**base, **consensus_start(plan.consensus, plan.members, competition.reward_share)}
        if any(w > 0.0 for w in step_weights.values()):
            self.state.scores, start = window_scores(
                base, step_weights, window_start=self.state.window_start.get(competition.id),
                sync_block=plan.window.sync_block, members=plan.members, elsewhere=plan.elsewhere,
                changed=changed, alpha=self.settings.alpha,
            )  # fmt: skip
            if start is not None:
                self.state.window_start[competition.id] = start
            if first:
                self.state.scored_competitions.append(competition.id)
            for hotkey in step_weights:
                self.state.evaluated[hotkey] = plan.candidates[hotkey].model
        else:
            logger.warning("step %d: no model scored any sample; scores unchanged", self.state.step)
        ranked = sorted(result.kept, key=lambda uid: -result.win_rate[uid])
        hotkey_of = {uid: hk for hk, uid in uid_of.items()}
        self.state.kept[competition.id] = [hotkey_of[uid] for uid in ranked[: self.settings.sample_min]]
        rows = tuple(
            model_row(
                hk,
                uid_of[hk],
                plan.members[hk],
                tasks=competition.tasks,
                results=results,
                result=result,
                score=self.state.scores.get(hk, 0.0),
            )
            for hk in plan.chosen
        )
        for row in rows:
            if row.hotkey in step_weights:
                self.tracker.record_evaluation(
                    row.hotkey,
                    {"step": self.state.step, "block": plan.window.sync_block, "competition": competition.id,
                     "mean_loss": row.mean_loss, "win_rate": row.win_rate, "weight": row.weight},
                )  # fmt: skip
        return rows

    def _window_results(
        self, plan: StepPlan, prepared: list[PreparedTask], results: dict[str, dict[str, EvalResult]]
    ) -> dict[str, dict[str, EvalResult]]:
        """This step's values folded, task by task, into the window's (:func:`finetune.rules.window_losses`,
        kept in the state): per task, {hotkey: values} of every model evaluated in the window on these
        samples, so how a window's evaluations were split into steps does not change its result."""
        merged_results: dict[str, dict[str, EvalResult]] = {}
        competition = plan.competition
        for task in prepared:
            name = task.task.name
            key = competition.id if len(prepared) == 1 else f"{competition.id}/{name}"
            with self._lock:
                merged = window_losses(
                    self.state.window_losses.get(key),
                    {hk: (plan.candidates[hk].model, results[name][hk].losses) for hk in plan.chosen},
                    sync_block=plan.window.sync_block,
                    samples=_digest(task.samples),
                    models={hk: c.model for hk, c in plan.candidates.items()},
                )  # fmt: skip
                self.state.window_losses[key] = merged
            merged_results[name] = {
                hk: results[name].get(hk) or EvalResult(hk, list(values), None, 0.0)
                for hk, (_, values) in merged[2].items()
                if hk in plan.members
            }
        return merged_results

    def _verify_before_eval(self, chosen: list[str], skipped: dict[str, str]) -> list[str]:
        """HOOK for the model store's self-check (issue 12.3): the chosen hotkeys whose stored model is
        whole. ``ModelUpdater.verify_stored(hotkey) -> bool`` re-downloads a damaged folder and says
        whether the model is usable now; until the updater has it, every chosen model is kept."""
        verify: Callable[[str], bool] | None = getattr(self.updater, "verify_stored", None)
        if verify is None:
            return chosen
        usable = []
        for hotkey in chosen:
            if verify(hotkey):
                usable.append(hotkey)
            else:
                skipped[hotkey] = "not evaluated this step: its stored model is damaged (downloading again)"
        return usable

    def _evaluate(
        self,
        competition_id: str,
        chosen: list[str],
        members: dict[str, ModelRecord],
        prepared: list[PreparedTask],
    ) -> dict[str, dict[str, EvalResult]]:
        jobs = [EvalJob(hk, self.store.model_dir(hk, metadata_of(members[hk]).id)) for hk in chosen]
        with Progress(
            *Progress.get_default_columns(), TextColumn("{task.fields[last]}"), transient=True
        ) as progress:
            bar = progress.add_task(f"evaluating {competition_id}", total=len(jobs) * len(prepared), last="")

            def done(name: str, r: EvalResult) -> None:
                progress.update(bar, advance=1, last=f"{name}: {r.key} {r.seconds:.1f} s")

            return evaluate_tasks(self.evaluator, prepared, jobs, on_result=done)

    def _report(self, report: StepReport) -> None:
        for reporter in self.reporters:
            try:
                reporter.report(report, tuple(self.state.history))
            except Exception:  # a broken report must never stop validation
                logger.exception("reporter %s failed", type(reporter).__name__)

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
        # the registered hotkeys, not the tracker's: a hotkey the download budget deferred has no
        # record yet (a fresh tracker), and its score must survive until it is synced
        registered = self.chain.metagraph().hotkeys
        with self._lock:
            self.state.forget_missing(registered)
            self.save()

    def weights_to_set(self, metagraph: Metagraph, *, min_nonzero: int = 1) -> tuple[list[int], list[float]]:
        """(uids, weights) for the chain: this validator's scores, a competition it has not scored yet
        following the chain's consensus, at least ``min_nonzero`` entries non-zero (all zero: nothing
        to set)."""
        competitions = competitions_at(metagraph.block, schedule=self.settings.schedule)
        registered = set(metagraph.hotkeys)
        with self._lock:
            targets = weight_targets(
                self.state.scores,
                members={c.id: sorted(set(self.tracker.models_for(c.id)) & registered) for c in competitions},
                reward_shares={c.id: c.reward_share for c in competitions},
                scored=self.state.scored_competitions,
                consensus=by_hotkey(metagraph, metagraph.consensus),
            )  # fmt: skip
        weights = chain_weights(metagraph.hotkeys, targets, min_nonzero=min_nonzero)
        return [int(uid) for uid in metagraph.uids], weights

    def maybe_set_weights(self) -> bool:
        """Set weights if ``blocks_per_epoch`` blocks passed since the last time; never raises for a
        chain failure (it is logged and retried at the next call)."""
        if not self.settings.set_weights:
            return False
        try:
            block = self.chain.current_block()
            last = self.state.last_weights_block
            if last is not None and last > block:  # a state from another chain (or one reset)
                logger.warning("last weights block %d is ahead of the chain (%d): ignored", last, block)
            elif last is not None and block - last < self.settings.blocks_per_epoch:
                return False
            metagraph = self.chain.metagraph()
            if (n := len(metagraph.uids)) < (least := self.chain.min_allowed_weights()):
                if self._too_few != (n, least):  # one error, not one per check
                    self._too_few = (n, least)
                    logger.error(
                        "not setting weights: the subnet has %d neurons, fewer than its MinAllowedWeights"
                        " %d, and the SDK refuses such a call (it does not cap at the subnet size)", n, least,
                    )  # fmt: skip
                return False
            uids, weights = self.weights_to_set(metagraph, min_nonzero=least)
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
        their own threads (:func:`finetune.validator.loop.run_loop`)."""
        run_loop(self, stop=stop, max_steps=max_steps)


def _digest(samples: list[Any]) -> str:
    """A task's samples, digested: token ids and prompt lengths where the method takes them (the
    response and text losses), else the samples' JSON form."""
    if all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], int) for x in samples):
        try:
            return samples_digest([(ids[0].tolist(), p) for ids, p in samples])
        except (AttributeError, IndexError, TypeError):
            pass
    return hashlib.sha256(json.dumps(samples, default=repr, sort_keys=True).encode("utf-8")).hexdigest()
