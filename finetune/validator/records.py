"""What one validator step produced, as plain data for the terminal table, wandb and the leaderboard."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


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

    def to_json(self, *, with_losses: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["ci"] = list(self.ci)
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
        )


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
        )


class Reporter(Protocol):
    """Something that shows or records finished steps (terminal table, wandb, leaderboard file)."""

    def report(self, step: StepReport, history: tuple[StepReport, ...]) -> None:
        """Called after every finished step; ``history`` holds recent steps, oldest first, ending with
        ``step`` (only the latest has per-sample losses)."""
        ...


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _float(value: object) -> float:
    return math.inf if value is None else float(value)  # type: ignore[arg-type]
