"""What a validator step evaluates, decided before anything is read or loaded, and small readers of
the tracker's records and the metagraph that the step uses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from constants.competitions import Competition
from finetune.rules import Candidate, SyncWindow
from model.data import ModelMetadata
from model.storage.chain.protocol import Metagraph
from model.tracker import ModelRecord


@dataclass(frozen=True)
class StepPlan:
    """What a step evaluates, decided before anything is read or loaded."""

    competition: Competition
    window: SyncWindow
    uid_of: dict[str, int]
    members: dict[str, ModelRecord]
    """The competition's registered models that passed the checks (eligible or waiting)."""
    candidates: dict[str, Candidate]
    """The members old enough for the window."""
    chosen: list[str]
    skipped: dict[str, str]
    """Every member not evaluated, with the reason."""
    consensus: dict[str, float]
    elsewhere: set[str]
    """Hotkeys whose model is in another active competition."""


def metadata_of(record: ModelRecord) -> ModelMetadata:
    if record.metadata is None:  # models_for only returns parsed, checked models
        raise ValueError(f"hotkey {record.hotkey} has no parsed commitment")
    return record.metadata


def model_key(record: ModelRecord) -> str:
    """What a hotkey's model is, for "evaluated already": its commitment and block."""
    metadata = metadata_of(record)
    mid = metadata.id
    return f"{mid.namespace}/{mid.name}@{mid.commit}:{mid.hash}:{mid.competition_id}#{metadata.block}"


def by_hotkey(metagraph: Metagraph, values: Any) -> dict[str, float]:
    """A metagraph column by hotkey, a non-finite entry (NaN from the chain) read as 0."""
    return {
        hk: float(v) if math.isfinite(float(v)) else 0.0
        for hk, v in zip(metagraph.hotkeys, values, strict=True)
    }


def model_name(record: ModelRecord) -> str:
    if record.metadata is None:
        return "?"
    model_id = record.metadata.id
    return f"{model_id.repo_id}@{(model_id.commit or '?')[:8]}"
