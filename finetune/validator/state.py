"""The validator's persisted state: scores, the models kept per competition, the step counter, the block
weights were last set at, and recent step reports.

Written atomically (temp file + rename) after every step, so a validator killed at any moment (even
``kill -9``) restarts from its last finished step and sets the same weights it would have.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finetune.validation import normalize
from finetune.validator.records import StepReport
from model.storage.chain.protocol import Metagraph
from utilities.files import atomic_write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_HISTORY = 50


@dataclass
class ValidatorState:
    step: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    """Moving average of each hotkey's weight (keyed by hotkey: a uid may change hands)."""
    kept: dict[str, list[str]] = field(default_factory=dict)
    """Per competition, the hotkeys that stay in the evaluation at the next step."""
    last_weights_block: int | None = None
    last_weights: dict[int, float] = field(default_factory=dict)
    """The weights last sent to the chain, by uid (what the chain should now hold for us)."""
    history: list[StepReport] = field(default_factory=list)

    def add_report(self, report: StepReport) -> None:
        """Append ``report``; only the latest keeps per-sample losses, and history stays bounded."""
        recent = self.history[-MAX_HISTORY + 1 :]
        trimmed = [StepReport.from_json(r.to_json(with_losses=False)) for r in recent]
        self.history = [*trimmed, report]

    def weights_for(self, metagraph: Metagraph) -> tuple[list[int], list[float]]:
        """The normalized scores of the registered hotkeys, as (uids, weights) for the chain."""
        uids = [int(uid) for uid in metagraph.uids]
        raw = np.array([self.scores.get(hk, 0.0) for hk in metagraph.hotkeys], dtype=np.float64)
        return uids, [float(w) for w in normalize(raw)]

    def forget_missing(self, registered: Sequence[str]) -> None:
        """Drop scores and kept entries of hotkeys that are no longer registered."""
        present = set(registered)
        self.scores = {hk: s for hk, s in self.scores.items() if hk in present}
        self.kept = {c: [hk for hk in hks if hk in present] for c, hks in self.kept.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "step": self.step,
            "scores": self.scores,
            "kept": self.kept,
            "last_weights_block": self.last_weights_block,
            "last_weights": {str(uid): w for uid, w in self.last_weights.items()},
            "history": [r.to_json() for r in self.history],
        }

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> ValidatorState:
        """The state saved at ``path``; a missing file gives a fresh state, and so does an unreadable or
        old one (with a warning naming the file: better a fresh start than a crash loop)."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("validator state %s is unreadable (%s): starting fresh", path, exc)
            return cls()
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            logger.warning("validator state %s has an unknown format: starting fresh", path)
            return cls()
        try:
            last = data["last_weights_block"]
            return cls(
                step=int(data["step"]),
                scores={str(k): float(v) for k, v in data["scores"].items()},
                kept={str(c): [str(h) for h in hks] for c, hks in data["kept"].items()},
                last_weights_block=None if last is None else int(last),
                last_weights={int(u): float(w) for u, w in data.get("last_weights", {}).items()},
                history=[StepReport.from_json(r) for r in data["history"]],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.warning("validator state %s is malformed (%s): starting fresh", path, exc)
            return cls()
