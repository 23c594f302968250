"""What one validator step produced, as plain data for the terminal table, wandb and the leaderboard."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from constants.tasks import EvalTask
    from finetune.tasks.combine import TaskStepResult
    from model.storage.chain.protocol import Metagraph
    from model.tracker import ModelRecord

MinerState = Literal["evaluated", "not evaluated", "copy", "rejected", "waiting"]
MINER_STATES: tuple[str, ...] = ("evaluated", "not evaluated", "copy", "waiting", "rejected")
"""Display order of :attr:`MinerStatus.status`."""


@dataclass(frozen=True)
class TaskScore:
    """One model's numbers on one evaluation task of a step judged on several."""

    name: str
    weight: float
    """The task's weight in the combined win rate."""
    win_rate: float
    mean: float
    """Mean of the model's scored values on the task (a loss, or accuracy / rules met); nan if none."""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "win_rate": _finite_or_none(self.win_rate),
                "mean": _finite_or_none(self.mean)}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskScore:
        mean = data.get("mean")
        return cls(
            name=str(data["name"]), weight=float(data["weight"]), win_rate=_float(data["win_rate"]),
            mean=math.nan if mean is None else float(mean),
        )  # fmt: skip


def task_scores(tasks: Sequence[EvalTask], result: TaskStepResult, uid: int) -> tuple[TaskScore, ...]:
    """``uid``'s numbers on each task of a step's result (kept uids; a duplicate gets none)."""
    if uid not in result.win_rate:
        return ()
    return tuple(
        TaskScore(t.name, t.weight, result.task_win_rate[t.name][uid], result.task_mean[t.name][uid])
        for t in tasks
    )


@dataclass(frozen=True)
class ModelRow:
    """One miner's model in one step."""

    uid: int
    hotkey: str
    model: str
    """``namespace/name@commit`` (commit shortened)."""
    block: int
    """Block of the commitment."""
    mean_loss: float
    win_rate: float
    ci: tuple[float, float]
    """Paired-bootstrap interval of the win rate (reported, not used in weights)."""
    weight: float
    """This step's weight (softmax of win rates times the reward share; 0 for a duplicate)."""
    score: float
    """The moving average after this step (what weights are set from)."""
    note: str = ""
    """Why the row is special, e.g. ``duplicate of uid 3`` or ``evaluation failed: ...``."""
    losses: tuple[float, ...] = ()
    """Per-sample losses (kept for the latest step only, for the loss-distribution plot)."""
    tasks: tuple[TaskScore, ...] = ()
    """Per-task numbers when the competition is judged on more than one task (else empty)."""

    def to_json(self, *, with_losses: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["ci"] = list(self.ci)
        data["tasks"] = [task.to_json() for task in self.tasks]
        data["losses"] = [_finite_or_none(x) for x in self.losses] if with_losses else []
        for key in ("mean_loss", "win_rate", "weight", "score"):
            data[key] = _finite_or_none(data[key])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelRow:
        return cls(
            uid=int(data["uid"]),
            hotkey=str(data["hotkey"]),
            model=str(data["model"]),
            block=int(data["block"]),
            mean_loss=_float(data["mean_loss"]),
            win_rate=_float(data["win_rate"]),
            ci=(float(data["ci"][0]), float(data["ci"][1])),
            weight=_float(data["weight"]),
            score=_float(data["score"]),
            note=str(data.get("note", "")),
            losses=tuple(_float(x) for x in data.get("losses", [])),
            tasks=tuple(TaskScore.from_json(t) for t in data.get("tasks", [])),
        )


@dataclass(frozen=True)
class MinerStatus:
    """One registered miner of the step's competition (or with no usable commitment) and what became of
    its model: ``evaluated`` (it has a row), ``not evaluated`` this step, a ``copy`` of an earlier commit,
    ``rejected`` by the checks, ``waiting`` (download or retry pending)."""

    uid: int
    hotkey: str
    model: str
    status: MinerState
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MinerStatus:
        status = str(data["status"])
        if status not in MINER_STATES:
            raise ValueError(f"unknown miner status {status!r}")
        return cls(
            uid=int(data["uid"]), hotkey=str(data["hotkey"]), model=str(data.get("model", "")),
            status=status,  # type: ignore[arg-type]
            reason=str(data.get("reason", "")),
        )  # fmt: skip


@dataclass(frozen=True)
class StepReport:
    """One finished validator step."""

    step: int
    block: int
    competition_id: str
    seed: int
    n_samples: int
    seconds: float
    rows: tuple[ModelRow, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    """Hotkeys of this competition that were not evaluated, with the reason."""
    miners: tuple[MinerStatus, ...] = ()
    """Every registered miner of the competition with its status (:func:`miner_statuses`)."""

    def to_json(self, *, with_losses: bool = True) -> dict[str, Any]:
        return {
            "step": self.step,
            "block": self.block,
            "competition_id": self.competition_id,
            "seed": self.seed,
            "n_samples": self.n_samples,
            "seconds": self.seconds,
            "rows": [row.to_json(with_losses=with_losses) for row in self.rows],
            "skipped": dict(self.skipped),
            "miners": [miner.to_json() for miner in self.miners],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepReport:
        return cls(
            step=int(data["step"]),
            block=int(data["block"]),
            competition_id=str(data["competition_id"]),
            seed=int(data["seed"]),
            n_samples=int(data["n_samples"]),
            seconds=float(data["seconds"]),
            rows=tuple(ModelRow.from_json(row) for row in data["rows"]),
            skipped={str(k): str(v) for k, v in data.get("skipped", {}).items()},
            miners=tuple(MinerStatus.from_json(m) for m in data.get("miners", [])),
        )


class Reporter(Protocol):
    """Something that shows or records finished steps (terminal table, wandb, leaderboard file)."""

    def report(self, step: StepReport, history: tuple[StepReport, ...]) -> None:
        """Called after every finished step; ``history`` holds recent steps, oldest first, ending with
        ``step`` (only the latest has per-sample losses)."""
        ...


def model_name(record: ModelRecord) -> str:
    """``namespace/name@commit`` (commit cut to 8 characters) of a record's model, or ``""``."""
    if record.metadata is None:
        return record.commitment[0][:64] if record.commitment else ""
    model_id = record.metadata.id
    commit = f"@{model_id.commit[:8]}" if model_id.commit else ""
    return f"{model_id.namespace}/{model_id.name}{commit}"


def _content(record: ModelRecord) -> str | None:
    return record.weights_hash or record.model_hash if record.status == "ok" else None


def miner_statuses(
    records: Mapping[str, ModelRecord], metagraph: Metagraph, report: StepReport
) -> tuple[MinerStatus, ...]:
    """Every registered hotkey whose model is in ``report``'s competition (or whose commitment names no
    usable model), with its status and the reason, in uid order. A model with the same content as an
    earlier commit of another hotkey is a ``copy`` ("same weights as uid N, committed earlier")."""
    uid_of = {hotkey: int(uid) for hotkey, uid in zip(metagraph.hotkeys, metagraph.uids, strict=True)}
    rows = {row.hotkey: row for row in report.rows}
    mine = {
        hotkey: record
        for hotkey, record in records.items()
        if hotkey in uid_of
        and (record.metadata is None or record.metadata.id.competition_id == report.competition_id)
    }
    first: dict[str, tuple[int, int]] = {}  # content -> (block, uid) of its earliest commit
    for hotkey, record in mine.items():
        content = _content(record)
        if content and record.metadata is not None:
            here = (record.metadata.block, uid_of[hotkey])
            first[content] = min(first.get(content, here), here)
    statuses = []
    for hotkey, record in mine.items():
        uid, name, content = uid_of[hotkey], model_name(record), _content(record)
        status: MinerState
        original = first.get(content) if content else None
        if original is not None and original[1] != uid:
            status, reason = "copy", f"same weights as uid {original[1]}, committed earlier"
        elif hotkey in rows:
            status, reason = "evaluated", rows[hotkey].note
        elif record.status == "ok":
            status = "not evaluated"
            reason = report.skipped.get(hotkey, "not chosen for this step")
        elif record.status in ("rejected", "misconfigured"):
            status = "rejected"
            reason = ": ".join(part for part in (record.reason, record.message) if part) or record.status
        else:  # waiting, failed: retried later
            status = "waiting"
            reason = record.message or record.reason or record.status
        statuses.append(MinerStatus(uid=uid, hotkey=hotkey, model=name, status=status, reason=reason))
    return tuple(sorted(statuses, key=lambda m: m.uid))


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _float(value: object) -> float:
    return math.inf if value is None else float(value)  # type: ignore[arg-type]
