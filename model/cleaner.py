"""The model cleaner: keeps the validator's model store to the models it needs, within a byte budget.

``clean()`` runs two passes.

1. **Unreferenced models** (no hotkey's current, verified model: ``tracker.referenced()``) are deleted
   with ``DiskModelStore.delete_unreferenced`` once ``grace_s`` has passed. The grace period counts
   from the last time the cleaner saw the model referenced: each pass first refreshes the mtime of
   every referenced folder, so a model that stops being referenced (its miner committed a new one)
   stays long enough for an evaluation already running on it to finish, and a model just moved into
   place by the updater (fresh mtime, not yet recorded) is never taken. ``grace_s`` should therefore
   exceed the interval between ``clean()`` calls plus the longest evaluation.
2. **Budget**: if the store still holds more than ``max_bytes``, referenced models are evicted, least
   useful first, until it fits. Usefulness is the mean ``weight`` of the model's recent evaluations,
   then the mean ``win_rate``; ties go to the larger folder (frees more), then the hotkey name. Models
   never evaluated are evicted **last**: a newcomer must get its evaluation before it can lose its
   place, or a full store would lock new miners out. An evicted model is marked ``waiting`` with
   reason ``"evicted"`` in the tracker (only if the hotkey still has that model: compare and set): it is
   not a verdict on the model, so the updater downloads it again once it fits, without asking the
   cleaner to evict another model for it.

   The store's size counts model folders only: temporary download folders (a transfer still running,
   or an orphan the updater sweeps away after its own grace period) never cause an eviction. When the
   updater deferred a download for lack of room (``store.wanted_bytes``, at most ``max_bytes``),
   evaluated models are also evicted until ``max_bytes - wanted_bytes`` is reached, so the next pass
   can take the new model (a store just under its budget would otherwise keep newcomers out forever);
   a model never evaluated is not evicted to make room for another.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.storage.disk.model_store import DiskModelStore, folder_bytes
from model.tracker import ModelRecord, ModelTracker
from utilities.errors import FinetuneError

logger = logging.getLogger(__name__)


def _mean(evaluations: tuple[Mapping[str, Any], ...], key: str) -> float:
    values = [
        float(e[key])
        for e in evaluations
        if isinstance(e.get(key), int | float) and not isinstance(e[key], bool)
    ]
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class _Candidate:
    record: ModelRecord
    folder: Path
    size: int

    def eviction_key(self) -> tuple[int, float, float, int, str]:
        """Sorts the least useful model first; never-evaluated models last."""
        evaluations = self.record.evaluations
        return (
            0 if evaluations else 1,
            _mean(evaluations, "weight"),
            _mean(evaluations, "win_rate"),
            -self.size,
            self.record.hotkey,
        )


class ModelCleaner:
    """Deletes unreferenced models after a grace period and evicts models over a byte budget."""

    def __init__(
        self,
        store: DiskModelStore,
        tracker: ModelTracker,
        *,
        grace_s: float,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if grace_s < 0 or (max_bytes is not None and max_bytes < 0):
            raise ValueError("grace_s and max_bytes must be >= 0")
        self._store = store
        self._tracker = tracker
        self._grace_s = grace_s
        self._max_bytes = max_bytes
        self._clock = clock

    def clean(self) -> list[Path]:
        """Run both passes; returns every folder deleted."""
        referenced = self._tracker.referenced()
        now = self._clock()
        for hotkey, model_id in referenced.items():
            try:
                folder = self._store.model_dir(hotkey, model_id)
                if folder.is_dir():
                    os.utime(folder, (now, now))  # "last seen referenced": the grace period's start
            except (FinetuneError, OSError) as exc:
                logger.warning("cannot refresh the model folder of %s: %s", hotkey, exc)
        deleted = self._store.delete_unreferenced(referenced, grace_s=self._grace_s, now=now)
        for folder in deleted:
            logger.info("deleted unreferenced model folder %s", folder)
        if self._max_bytes is not None:
            wanted = self._store.wanted_bytes
            deleted += self._evict(self._max_bytes, wanted if 0 < wanted <= self._max_bytes else 0)
        return deleted

    def _candidates(self) -> list[_Candidate]:
        candidates = []
        for hotkey, model_id in self._tracker.referenced().items():
            record = self._tracker.get(hotkey)
            if record is None or record.metadata is None or record.metadata.id != model_id:
                continue
            try:
                folder = self._store.model_dir(hotkey, model_id)
                if folder.is_dir():
                    candidates.append(_Candidate(record, folder, folder_bytes(folder)))
            except (FinetuneError, OSError) as exc:
                logger.warning("cannot size the model folder of %s: %s", hotkey, exc)
        return sorted(candidates, key=_Candidate.eviction_key)

    def _evict(self, max_bytes: int, room: int) -> list[Path]:
        """Evict until the store holds at most ``max_bytes``, and at most ``max_bytes - room`` as long
        as evaluated models are left (a newcomer never loses its place to make room for another)."""
        total = self._store.size()
        evicted: list[Path] = []
        if total <= max_bytes - room:
            return evicted
        for candidate in self._candidates():  # evaluated models come first
            if total <= (max_bytes - room if candidate.record.evaluations else max_bytes):
                break
            record, metadata = candidate.record, candidate.record.metadata
            if metadata is None:
                continue
            why = "over its budget of" if total > max_bytes else f"short of {room} bytes free under"
            message = f"evicted: the model store held {total} bytes, {why} {max_bytes}"
            if not self._tracker.set_status(
                record.hotkey, expected=metadata, status="waiting", reason="evicted", message=message
            ):
                continue  # the hotkey's model changed meanwhile: leave it to the next pass
            shutil.rmtree(candidate.folder, ignore_errors=True)
            total -= candidate.size
            evicted.append(candidate.folder)
            logger.warning(
                "hotkey %s: evicted model %s@%s (%d bytes, %d evaluations): %s",
                record.hotkey,
                metadata.id.repo_id,
                metadata.id.commit,
                candidate.size,
                len(record.evaluations),
                message,
            )
        if total > max_bytes:
            logger.warning("model store still holds %d bytes, over its budget of %d", total, max_bytes)
        return evicted
