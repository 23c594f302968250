"""The miner's one record of where it stands: :class:`MinerProgress`, in ``model_dir/progress.json``.

It holds the training position of the last checkpoint (step, completed epochs, checkpoint folder), the
held-out loss of the starting model and of the model kept in ``model_dir/model``, what was published
(its loss and commitment) and a model waiting to be published, plus the settings the checkpoint was
trained with (so that a resumed run can say what the command line changed). It is written atomically by
the main process only; the kept model's loss is written *after* the model, so a crash in between leaves
a loss too high, never one too low, and a resume never replaces a better model with a worse one.

Earlier versions kept this in three files (``checkpoints/latest.json``, ``model.best.json``,
``miner_state.json``); :meth:`MinerProgress.load` reads them once when ``progress.json`` is missing.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from utilities.errors import ConfigError
from utilities.files import atomic_write_json

logger = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"


def _loss(value: Any) -> float | None:
    """A recorded loss: a finite float, or ``None`` for unknown (JSON has no infinity)."""
    if value is None:
        return None
    loss = float(value)
    return loss if math.isfinite(loss) else None


@dataclass
class MinerProgress:
    """Where a miner stands (see the module doc). Losses are ``None`` when unknown or infinite."""

    step: int = 0
    """Optimizer steps taken up to the checkpoint."""
    epoch: int = 0
    """Epochs completed up to the checkpoint."""
    checkpoint: str | None = None
    """The folder of ``checkpoint_dir`` holding the training state at (``step``, ``epoch``)."""
    initial_loss: float | None = None
    """Held-out loss of the starting model (of the first run, when resumed)."""
    best_loss: float | None = None
    """Held-out loss of the model kept in ``output_dir``."""
    best_step: int | None = None
    published_loss: float | None = None
    """Held-out loss of the last published model."""
    published_model_id: str | None = None
    """Its commitment string."""
    pending: bool = False
    """The kept model could not be published yet (retried at the end of the next epoch)."""
    pending_loss: float | None = None
    start_model: str | None = None
    """Fingerprint of the model the checkpoint's run started from."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The training settings of the checkpoint's run (``TrainConfig`` fields, as JSON values)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MinerProgress:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("initial_loss", "best_loss", "published_loss", "pending_loss"):
            values[name] = _loss(values.get(name))
        progress = cls(**values)
        if not isinstance(progress.step, int) or not isinstance(progress.epoch, int) or progress.step < 0:
            raise TypeError("step and epoch must be integers")
        if not isinstance(progress.settings, dict):
            raise TypeError("settings must be an object")
        return progress

    @classmethod
    def load(
        cls, path: Path | None, *, checkpoint_dir: Path | None = None, output_dir: Path | None = None
    ) -> MinerProgress:
        """The record at ``path``; if there is none, the one the three files of earlier versions make
        (``checkpoint_dir/latest.json``, ``<output_dir>.best.json``, ``miner_state.json`` beside
        ``path``); a new record if there are none either. An unreadable record is a :class:`ConfigError`
        (it is never silently replaced: it may hold a published loss)."""
        if path is not None and path.is_file():
            try:
                return cls.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                raise ConfigError(f"cannot read the miner's progress {path}: {exc} (fix or delete it)") from (
                    exc
                )
        return _legacy(path, checkpoint_dir, output_dir)

    def save(self, path: Path) -> None:
        atomic_write_json(path, asdict(self))

    def update(self, other: MinerProgress) -> None:
        """Take every value of ``other`` (in place: holders of this object see them)."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring the unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _legacy(path: Path | None, checkpoint_dir: Path | None, output_dir: Path | None) -> MinerProgress:
    """The record of the files earlier versions wrote (each optional)."""
    progress = MinerProgress()
    try:
        if checkpoint_dir is not None and (latest := _read_json(checkpoint_dir / "latest.json")):
            progress.step, progress.epoch = int(latest["step"]), int(latest["epoch"])
            progress.checkpoint = str(latest["folder"])
            progress.initial_loss = _loss(latest.get("initial_loss"))
            progress.best_loss = _loss(latest.get("best_loss"))
        best_file = output_dir.with_name(f"{output_dir.name}.best.json") if output_dir is not None else None
        if best_file is not None and (best := _read_json(best_file)):
            loss = _loss(best.get("loss"))
            if loss is not None and (progress.best_loss is None or loss < progress.best_loss):
                progress.best_loss = loss  # saved by a mid-epoch evaluation after the checkpoint
        if path is not None and (state := _read_json(path.with_name("miner_state.json"))):
            progress.published_loss = _loss(state.get("last_loss"))
            progress.published_model_id = state.get("last_model_id")
            progress.pending = bool(state.get("pending", False))
            progress.pending_loss = _loss(state.get("pending_loss"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read the miner's earlier state files: {exc}") from exc
    if progress != MinerProgress():
        logger.info("read the miner's state from the files of an earlier version: %s", progress)
    return progress
