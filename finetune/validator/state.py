"""The validator's persisted state: scores, the models kept per competition, the models it evaluated,
the competitions it has scored, each competition's current sync window (its starting scores and the
per-sample losses of every model evaluated in it), the step counter, the block weights were last set
at, and recent step reports.

Written atomically (temp file + rename) after every step, so a validator killed at any moment (even
``kill -9``) restarts from its last finished step and sets the same weights it would have. Nothing read
back can stop the validator: a missing, truncated or unparseable file gives a fresh state (every tracked
model is then evaluated again, and the weights follow the chain's consensus until each competition is
scored), and an entry with an invalid value (an ``Infinity``, ``NaN`` or negative score, a malformed
report) is dropped with a warning naming it while the rest is kept.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from finetune.rules import WindowLosses
from finetune.validator.records import StepReport
from utilities.files import atomic_write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 had no ``evaluated``, ``scored_competitions`` nor ``window_start``: read as empty (every
model is evaluated once more), as the competitions of its reports, and as empty."""
MAX_HISTORY = 50

T = TypeVar("T")


@dataclass
class ValidatorState:
    step: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    """Moving average of each hotkey's weight (keyed by hotkey: a uid may change hands)."""
    kept: dict[str, list[str]] = field(default_factory=dict)
    """Per competition, the hotkeys that stay in the evaluation at the next step."""
    evaluated: dict[str, str] = field(default_factory=dict)
    """The model (:attr:`finetune.rules.Candidate.model`) each hotkey had when this validator last
    evaluated it: a hotkey absent here, or with another model now, is new to this validator."""
    scored_competitions: list[str] = field(default_factory=list)
    """Competitions with at least one scored step: the others' weights follow the chain's consensus."""
    window_start: dict[str, tuple[int, dict[str, float]]] = field(default_factory=dict)
    """Per competition, its current sync block and the scores before its first scored step there
    (:func:`finetune.rules.window_scores`: the moving average moves once per window)."""
    window_losses: dict[str, WindowLosses] = field(default_factory=dict)
    """Per competition, the per-sample losses of every model evaluated in its current sync window
    (:func:`finetune.rules.window_losses`: each step scores the union)."""
    last_weights_block: int | None = None
    last_weights: dict[int, float] = field(default_factory=dict)
    """The weights last sent to the chain, by uid (what the chain should now hold for us)."""
    history: list[StepReport] = field(default_factory=list)

    def add_report(self, report: StepReport) -> None:
        """Append ``report``; only the latest keeps per-sample losses, and history stays bounded."""
        recent = self.history[-MAX_HISTORY + 1 :]
        trimmed = [StepReport.from_json(r.to_json(with_losses=False)) for r in recent]
        self.history = [*trimmed, report]

    def forget_missing(self, registered: Sequence[str]) -> None:
        """Drop the scores, kept, evaluated and window entries of hotkeys that are no longer
        registered (a window start that kept one would give it its score back at the next step)."""
        present = set(registered)
        self.scores = {hk: s for hk, s in self.scores.items() if hk in present}
        self.window_start = {
            c: (block, {hk: s for hk, s in start.items() if hk in present})
            for c, (block, start) in self.window_start.items()
        }
        self.window_losses = {
            c: (block, digest, {hk: e for hk, e in losses.items() if hk in present})
            for c, (block, digest, losses) in self.window_losses.items()
        }
        self.kept = {c: [hk for hk in hks if hk in present] for c, hks in self.kept.items()}
        self.evaluated = {hk: m for hk, m in self.evaluated.items() if hk in present}

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "step": self.step,
            "scores": self.scores,
            "kept": self.kept,
            "evaluated": self.evaluated,
            "scored_competitions": list(self.scored_competitions),
            "window_start": {
                c: {"sync_block": block, "scores": scores} for c, (block, scores) in self.window_start.items()
            },
            "window_losses": {
                c: {
                    "sync_block": block,
                    "samples": digest,
                    "losses": {hk: {"model": m, "losses": values} for hk, (m, values) in losses.items()},
                }
                for c, (block, digest, losses) in self.window_losses.items()
            },
            "last_weights_block": self.last_weights_block,
            "last_weights": {str(uid): w for uid, w in self.last_weights.items()},
            "history": [r.to_json() for r in self.history],
        }

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> ValidatorState:
        """The state saved at ``path``. A missing file gives a fresh state, and so does an unreadable
        or unknown one (with a warning naming the file: better a fresh start than a crash loop); invalid
        entries are dropped one by one, with a warning naming each."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning("validator state %s is unreadable (%s): starting fresh", path, exc)
            return cls()
        if not isinstance(data, dict) or data.get("version") not in READABLE_VERSIONS:
            logger.warning("validator state %s has an unknown format: starting fresh", path)
            return cls()
        return _parse(data, str(path))


def remove_leftover_temp_files(folder: Path, names: Sequence[str]) -> list[Path]:
    """Delete the temporary files an interrupted atomic write of ``names`` left in ``folder``
    (``.<name>.<random>.tmp``, see :func:`utilities.files.atomic_write_bytes`); returns them."""
    removed: list[Path] = []
    for name in names:
        for leftover in sorted(Path(folder).glob(f".{name}.*.tmp")):
            if leftover.is_file() and not leftover.is_symlink():
                leftover.unlink(missing_ok=True)
                removed.append(leftover)
    if removed:
        logger.warning("removed %d leftover temporary file(s): %s", len(removed), [str(p) for p in removed])
    return removed


# ---- reading back, entry by entry ---------------------------------------------------------------------
def _number(value: object) -> float:
    """A finite, non-negative float (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    number = float(value)
    if not math.isfinite(number) or number < 0.0:
        raise ValueError(f"{value!r} is not finite and >= 0")
    return number


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not an integer >= 0")
    return value


def _entries(raw: object, what: str, where: str, parse: Callable[[str, object], T]) -> dict[str, T]:
    """``{key: parse(key, value)}`` of a JSON object, dropping (with a warning) entries that fail."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        logger.warning("validator state %s: %s is not an object (%r): dropped", where, what, raw)
        return {}
    out: dict[str, T] = {}
    bad: dict[str, str] = {}
    for key, value in raw.items():
        try:
            out[str(key)] = parse(str(key), value)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            bad[str(key)] = str(exc)
    if bad:
        logger.warning("validator state %s: dropped invalid %s entries %s", where, what, bad)
    return out


def _hotkeys(_: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        raise ValueError(f"{value!r} is not a list of hotkeys")
    return list(value)


def _text(_: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not text")
    return value


def _uid_weight(key: str, value: object) -> float:
    _count(int(key))
    return _number(value)


def _window(_: str, value: object) -> tuple[int, dict[str, float]]:
    if not isinstance(value, dict) or not isinstance(value.get("scores"), dict):
        raise ValueError(f"{value!r} is not a window start")
    return _count(value["sync_block"]), {str(k): _number(v) for k, v in value["scores"].items()}


def _window_losses(_: str, value: object) -> WindowLosses:
    if not isinstance(value, dict) or not isinstance(value.get("losses"), dict):
        raise ValueError(f"{value!r} is not a window's losses")
    digest = _text("", value["samples"])
    losses: dict[str, tuple[str, list[float]]] = {}
    for hotkey, entry in value["losses"].items():
        values = entry["losses"]
        if not isinstance(values, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in values
        ):
            raise ValueError(f"{values!r} are not losses")
        losses[str(hotkey)] = (_text("", entry["model"]), [float(x) for x in values])
    return _count(value["sync_block"]), digest, losses


def _parse(data: dict[str, Any], where: str) -> ValidatorState:
    state = ValidatorState()
    try:
        state.step = _count(data.get("step", 0))
    except ValueError as exc:
        logger.warning("validator state %s: invalid step (%s): counting from 0", where, exc)
    last = data.get("last_weights_block")
    try:
        state.last_weights_block = None if last is None else _count(last)
    except ValueError as exc:
        logger.warning("validator state %s: invalid last_weights_block (%s): dropped", where, exc)
    state.scores = _entries(data.get("scores"), "score", where, lambda _, v: _number(v))
    state.kept = _entries(data.get("kept"), "kept", where, _hotkeys)
    state.evaluated = _entries(data.get("evaluated"), "evaluated", where, _text)
    state.window_start = _entries(data.get("window_start"), "window start", where, _window)
    state.window_losses = _entries(data.get("window_losses"), "window losses", where, _window_losses)
    state.last_weights = {
        int(uid): w for uid, w in _entries(data.get("last_weights"), "weight", where, _uid_weight).items()
    }
    reports = data.get("history", [])
    history = _entries(
        dict(enumerate(reports)) if isinstance(reports, list) else reports,
        "report",
        where,
        lambda _, r: StepReport.from_json(r),  # type: ignore[arg-type]
    )
    state.history = list(history.values())[-MAX_HISTORY:]
    scored = data.get("scored_competitions")
    if scored is None:  # version 1: the competitions it has reports of
        scored = sorted({r.competition_id for r in state.history})
    if not isinstance(scored, list) or not all(isinstance(c, str) for c in scored):
        logger.warning("validator state %s: invalid scored_competitions %r: dropped", where, scored)
        scored = []
    state.scored_competitions = list(dict.fromkeys(scored))
    return state
