"""What the validator knows about each hotkey's model: which commitment it saw, what became of it, and
how the model fared in recent evaluations.

The updater thread writes records, the step loop reads them and appends evaluation results, the
cleaner reads references; every method takes one lock, and records handed out are frozen snapshots.
State is saved as versioned JSON (never pickle) with an atomic write; an unreadable, corrupt or
old-version file is logged and replaced by an empty tracker, so a bad file never stops a validator.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from model.data import ModelId, ModelMetadata
from utilities.files import atomic_write_json

logger = logging.getLogger(__name__)

Status = Literal["ok", "rejected", "misconfigured", "waiting", "failed"]
STATUSES: frozenset[str] = frozenset(get_args(Status))
FINAL_STATUSES: frozenset[str] = frozenset({"ok", "rejected", "misconfigured"})
"""Statuses that stay until the hotkey commits something else ("waiting" and "failed" are retried)."""

FORMAT_VERSION = 1
WEIGHTS_HASH_KIND = "tensors"
"""Marks a saved ``weights_hash`` as the tensor-content hash; an older one (of file bytes) is dropped."""
DEFAULT_MAX_EVALUATIONS = 32


@dataclass(frozen=True)
class ModelRecord:
    """One hotkey's latest commitment and what the validator made of it."""

    hotkey: str
    status: Status
    commitment: tuple[str, int] | None = None
    """The raw commitment (data, block); the key for "nothing changed" when data did not parse."""
    metadata: ModelMetadata | None = None
    """The parsed model id and commitment block; ``None`` when the commitment did not parse."""
    reason: str = ""
    message: str = ""
    model_hash: str | None = None
    """The plain directory hash of what was downloaded (status ok only)."""
    params: int | None = None
    updated_at: float = 0.0
    """Wall-clock time of the last change of status, reason or model."""
    failures: int = 0
    """Consecutive transient failures of this commitment."""
    retry_at: float = 0.0
    """Wall-clock time before which a failed commitment is not retried."""
    evaluations: tuple[dict[str, Any], ...] = ()
    """Recent evaluation results, oldest first (filled in by the tracker)."""
    weights_hash: str | None = None
    """:func:`model.hashing.hash_weights` of what was downloaded (status ok only), a hash of the tensors'
    content: identical weights under other READMEs, configs, safetensors metadata, shards or file names
    share it, so the validator can count them once. ``None`` in records saved before the field existed
    or before it hashed tensors (file bytes): the updater computes it again from the stored folder."""
    stored: tuple[tuple[str, int, int], ...] = ()
    """``(relative path, size, mtime_ns)`` of each file of the verified folder as it was moved into the
    store (status ok only), so a deleted or damaged folder is noticed without reading it; empty in
    records saved before the field existed."""


def _plain(value: object) -> Any:
    """A JSON-friendly copy of an evaluation value (numpy scalars become Python numbers)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        return _plain(item())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _same_except_time(a: ModelRecord, b: ModelRecord) -> bool:
    ignore = {"updated_at", "failures", "retry_at", "evaluations"}
    return all(
        getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(a) if f.name not in ignore
    )


class ModelTracker:
    """Thread-safe per-hotkey model records and bounded evaluation history."""

    def __init__(
        self, *, max_evaluations: int = DEFAULT_MAX_EVALUATIONS, clock: Callable[[], float] = time.time
    ) -> None:
        if max_evaluations < 1:
            raise ValueError("max_evaluations must be >= 1")
        self._max_evaluations = max_evaluations
        self._clock = clock
        self._lock = threading.RLock()
        self._records: dict[str, ModelRecord] = {}
        self._evaluations: dict[str, deque[dict[str, Any]]] = {}

    # ---- reading ---------------------------------------------------------------------------------
    def _snapshot(self, hotkey: str) -> ModelRecord:
        evals = tuple(dict(e) for e in self._evaluations.get(hotkey, ()))
        return dataclasses.replace(self._records[hotkey], evaluations=evals)

    def get(self, hotkey: str) -> ModelRecord | None:
        with self._lock:
            return self._snapshot(hotkey) if hotkey in self._records else None

    def hotkeys(self) -> list[str]:
        with self._lock:
            return sorted(self._records)

    def records(self) -> dict[str, ModelRecord]:
        with self._lock:
            return {hotkey: self._snapshot(hotkey) for hotkey in sorted(self._records)}

    def models_for(self, competition_id: str) -> dict[str, ModelRecord]:
        """The hotkeys whose current model is ok and in ``competition_id``."""
        with self._lock:
            return {
                hotkey: self._snapshot(hotkey)
                for hotkey, record in sorted(self._records.items())
                if record.status == "ok"
                and record.metadata is not None
                and record.metadata.id.competition_id == competition_id
            }

    def referenced(self) -> dict[str, ModelId]:
        """The model each hotkey has on disk (status ok): what the cleaner must keep."""
        with self._lock:
            return {
                hotkey: record.metadata.id
                for hotkey, record in self._records.items()
                if record.status == "ok" and record.metadata is not None
            }

    # ---- writing ---------------------------------------------------------------------------------
    def put(self, record: ModelRecord) -> None:
        """Store ``record`` as the hotkey's state. ``updated_at`` is stamped when something changed;
        the evaluation history is cleared when the model (id or block) changed."""
        with self._lock:
            old = self._records.get(record.hotkey)
            if old is not None and _same_except_time(old, record):
                stamped = old.updated_at
            else:
                stamped = self._clock()
            if old is None or old.metadata != record.metadata:
                self._evaluations.pop(record.hotkey, None)
            self._records[record.hotkey] = dataclasses.replace(record, updated_at=stamped, evaluations=())

    def set_status(
        self, hotkey: str, *, expected: ModelMetadata, status: Status, reason: str = "", message: str = ""
    ) -> bool:
        """Change the status of ``hotkey`` only if its model is still ``expected`` (compare and set);
        returns whether it changed."""
        with self._lock:
            old = self._records.get(hotkey)
            if old is None or old.metadata != expected:
                return False
            self._records[hotkey] = dataclasses.replace(
                old, status=status, reason=reason, message=message, updated_at=self._clock()
            )
            return True

    def record_evaluation(self, hotkey: str, result: Mapping[str, object]) -> bool:
        """Append one evaluation result (e.g. step, block, competition, mean_loss, win_rate, weight);
        ignored (returns False) if the hotkey is no longer tracked."""
        with self._lock:
            if hotkey not in self._records:
                logger.debug("evaluation of untracked hotkey %s ignored", hotkey)
                return False
            history = self._evaluations.setdefault(hotkey, deque(maxlen=self._max_evaluations))
            history.append({str(k): _plain(v) for k, v in result.items()})
            return True

    def forget(self, hotkey: str) -> bool:
        """Drop everything about ``hotkey`` (deregistered); returns whether it was tracked."""
        with self._lock:
            self._evaluations.pop(hotkey, None)
            return self._records.pop(hotkey, None) is not None

    # ---- persistence -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        with self._lock:
            models = {hotkey: _record_to_json(self._snapshot(hotkey)) for hotkey in sorted(self._records)}
        return {"version": FORMAT_VERSION, "models": models}

    def save(self, path: str | Path) -> None:
        """Write the state atomically as versioned JSON."""
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        max_evaluations: int = DEFAULT_MAX_EVALUATIONS,
        clock: Callable[[], float] = time.time,
    ) -> ModelTracker:
        """The tracker saved at ``path``: empty if the file is missing, and empty (with a warning) if it
        is unreadable, corrupt or of another version. A malformed record is skipped with a warning."""
        tracker = cls(max_evaluations=max_evaluations, clock=clock)
        target = Path(path)
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return tracker
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning(
                "model tracker file %s is unreadable (%s); starting with an empty tracker", target, exc
            )
            return tracker
        version = data.get("version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            logger.warning(
                "model tracker file %s has version %r, expected %d; starting with an empty tracker",
                target,
                version,
                FORMAT_VERSION,
            )
            return tracker
        models = data.get("models")
        if not isinstance(models, dict):
            logger.warning(
                "model tracker file %s has no 'models' table; starting with an empty tracker", target
            )
            return tracker
        for hotkey, raw in models.items():
            try:
                record = _record_from_json(str(hotkey), raw)
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning(
                    "model tracker file %s: skipping malformed record of %s (%s)", target, hotkey, exc
                )
                continue
            tracker._records[record.hotkey] = dataclasses.replace(record, evaluations=())
            history: deque[dict[str, Any]] = deque(maxlen=max_evaluations)
            history.extend(record.evaluations)
            if history:
                tracker._evaluations[record.hotkey] = history
        return tracker


def _record_to_json(record: ModelRecord) -> dict[str, Any]:
    metadata = None
    if record.metadata is not None:
        metadata = {"id": dataclasses.asdict(record.metadata.id), "block": record.metadata.block}
    return {
        "status": record.status,
        "commitment": None if record.commitment is None else list(record.commitment),
        "metadata": metadata,
        "reason": record.reason,
        "message": record.message,
        "model_hash": record.model_hash,
        "params": record.params,
        "updated_at": record.updated_at,
        "failures": record.failures,
        "retry_at": record.retry_at,
        "evaluations": [dict(e) for e in record.evaluations],
        "weights_hash": record.weights_hash,
        "weights_hash_kind": WEIGHTS_HASH_KIND,
        "stored": [list(entry) for entry in record.stored],
    }


def _optional(value: object, kind: type) -> Any:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__} or null, got {type(value).__name__}")
    return value


def _record_from_json(hotkey: str, raw: object) -> ModelRecord:
    if not isinstance(raw, dict):
        raise TypeError("record is not an object")
    status = raw["status"]
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    commitment = None
    if raw.get("commitment") is not None:
        data, block = raw["commitment"]
        commitment = (str(data), int(block))
    metadata = None
    if raw.get("metadata") is not None:
        fields = raw["metadata"]["id"]
        if not isinstance(fields, dict):
            raise TypeError("metadata.id is not an object")
        metadata = ModelMetadata(id=ModelId(**fields), block=int(raw["metadata"]["block"]))
    weights_hash = _optional(raw.get("weights_hash"), str)
    evaluations = raw.get("evaluations") or []
    if not isinstance(evaluations, list) or not all(isinstance(e, dict) for e in evaluations):
        raise TypeError("evaluations is not a list of objects")
    return ModelRecord(
        hotkey=hotkey,
        status=cast(Status, status),
        commitment=commitment,
        metadata=metadata,
        reason=str(raw.get("reason", "")),
        message=str(raw.get("message", "")),
        model_hash=_optional(raw.get("model_hash"), str),
        params=_optional(raw.get("params"), int),
        updated_at=float(raw.get("updated_at", 0.0)),
        failures=int(raw.get("failures", 0)),
        retry_at=float(raw.get("retry_at", 0.0)),
        evaluations=tuple(evaluations),
        weights_hash=weights_hash if raw.get("weights_hash_kind") == WEIGHTS_HASH_KIND else None,
        stored=_stored_from_json(raw.get("stored") or []),
    )


def _stored_from_json(raw: object) -> tuple[tuple[str, int, int], ...]:
    if not isinstance(raw, list):
        raise TypeError("stored is not a list")
    entries = []
    for entry in raw:
        if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str):
            raise TypeError("a stored entry is not [path, size, mtime_ns]")
        if not all(type(v) is int and v >= 0 for v in entry[1:]):
            raise ValueError("a stored entry has an invalid size or time")
        entries.append((entry[0], entry[1], entry[2]))
    return tuple(entries)
