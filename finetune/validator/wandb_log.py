"""Logging finished steps to Weights & Biases, without ever letting wandb stop the validator.

The run is created lazily on the first report (so a validator that never finishes a step never talks to
wandb), with bounded init/finish timeouts. Any failure of wandb (init, log, network, disk) is logged as a
warning; after ``max_failures`` consecutive failures the reporter switches itself off for the rest of the
process."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from finetune.validator.records import StepReport

if TYPE_CHECKING:
    from wandb import Run

logger = logging.getLogger(__name__)

ROW_COLUMNS = (
    "uid",
    "hotkey",
    "model",
    "block",
    "mean_loss",
    "win_rate",
    "ci_low",
    "ci_high",
    "weight",
    "score",
    "note",
)
"""Columns of the per-step ``rows`` table."""

PER_UID = ("mean_loss", "win_rate", "weight", "score")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def step_metrics(step: StepReport) -> dict[str, Any]:
    """The scalar part of one step's log: step, block, competition, counts, and
    ``uid_data.<uid>.<name>`` for every finite per-uid value (inf/NaN are left out)."""
    data: dict[str, Any] = {
        "step": step.step,
        "block": step.block,
        "competition": step.competition_id,
        "seed": step.seed,
        "n_samples": step.n_samples,
        "n_models": len(step.rows),
        "n_skipped": len(step.skipped),
        "seconds": step.seconds,
    }
    for row in step.rows:
        for name in PER_UID:
            value = _finite(getattr(row, name))
            if value is not None:
                data[f"uid_data.{row.uid}.{name}"] = value
        for name, bound in zip(("ci_low", "ci_high"), row.ci, strict=True):
            value = _finite(bound)
            if value is not None:
                data[f"uid_data.{row.uid}.win_rate_{name}"] = value
    return data


def step_rows(step: StepReport) -> list[list[Any]]:
    """The rows of the ``rows`` table (:data:`ROW_COLUMNS`), non-finite numbers as None."""
    return [
        [
            row.uid,
            row.hotkey,
            row.model,
            row.block,
            _finite(row.mean_loss),
            _finite(row.win_rate),
            _finite(row.ci[0]),
            _finite(row.ci[1]),
            _finite(row.weight),
            _finite(row.score),
            row.note,
        ]
        for row in step.rows
    ]


class WandbReporter:
    """:class:`~finetune.validator.records.Reporter` that logs each step to one wandb run."""

    def __init__(
        self,
        *,
        project: str,
        entity: str | None = None,
        run_name: str | None = None,
        config: dict[str, Any],
        mode: Literal["online", "offline", "disabled"] | None = None,
        dir: str | os.PathLike[str] | None = None,
        max_failures: int = 3,
        init_timeout_s: float = 60.0,
        finish_timeout_s: float = 60.0,
    ) -> None:
        self.project = project
        self.entity = entity
        self.run_name = run_name
        self.config = dict(config)
        self.mode = mode
        self.dir = Path(dir) if dir is not None else None
        self.max_failures = max_failures
        self.init_timeout_s = init_timeout_s
        self.finish_timeout_s = finish_timeout_s
        self.failures = 0
        """Consecutive failures so far (reset by a successful log)."""
        self.disabled = False
        self._run: Run | None = None

    @property
    def run(self) -> Run | None:
        """The wandb run, once created (None before the first report and after :meth:`close`)."""
        return self._run

    def report(self, step: StepReport, history: tuple[StepReport, ...]) -> None:
        if self.disabled:
            return
        try:
            run = self._ensure_run()
            self._log(run, step)
        except Exception as exc:  # noqa: BLE001 -- wandb's error types vary; none may stop the validator
            self._failed(f"logging step {step.step}", exc)
        else:
            self.failures = 0

    def close(self) -> None:
        """Finish the run (bounded by ``finish_timeout_s``); safe to call more than once."""
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.finish()
        except Exception as exc:  # noqa: BLE001 -- shutting down: report and go on
            logger.warning("wandb: finishing the run failed: %s: %s", type(exc).__name__, exc)

    def _ensure_run(self) -> Run:
        if self._run is not None:
            return self._run
        import wandb  # imported here: a validator without wandb reporting never pays for the import

        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(
            init_timeout=self.init_timeout_s,
            finish_timeout=self.finish_timeout_s,
            console="off",  # the validator's own logs stay on its terminal, unwrapped
            reinit="create_new",  # independent of any other run in the process; we only use run.log
        )
        run = wandb.init(
            project=self.project,
            entity=self.entity,
            name=self.run_name,
            config=self.config,
            mode=self.mode,
            dir=str(self.dir) if self.dir is not None else None,
            settings=settings,
        )
        run.define_metric("step")
        run.define_metric("uid_data.*", step_metric="step")
        self._run = run
        logger.info("wandb: logging to run %s (%s)", run.name, run.id)
        return run

    def _log(self, run: Run, step: StepReport) -> None:
        import wandb

        data = step_metrics(step)
        data["rows"] = wandb.Table(columns=list(ROW_COLUMNS), data=step_rows(step))
        run.log(data)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        logger.warning(
            "wandb: %s failed (%d/%d in a row): %s: %s",
            what,
            self.failures,
            self.max_failures,
            type(exc).__name__,
            exc,
        )
        if self.failures >= self.max_failures:
            self.disabled = True
            logger.warning("wandb: disabled after %d consecutive failures", self.failures)
            self.close()
