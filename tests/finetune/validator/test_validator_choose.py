"""Which models a step evaluates: kept ones, the best by score, then newcomers by chain incentive."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.data import ModelId, ModelMetadata
from model.storage.chain.protocol import Metagraph
from model.tracker import ModelRecord
from tests.finetune.validator.localnet import LocalNet


def record(hotkey: str, block: int, *, evaluated: bool) -> ModelRecord:
    model_id = ModelId(namespace=hotkey, name="m", commit="0" * 40, hash="h", competition_id="local")
    evaluations = ({"step": 0, "win_rate": 0.5},) if evaluated else ()
    return ModelRecord(
        hotkey=hotkey, status="ok", metadata=ModelMetadata(model_id, block), evaluations=evaluations
    )


def graph(incentive: dict[str, float]) -> Metagraph:
    hotkeys = tuple(incentive)
    n = len(hotkeys)
    return Metagraph(
        block=10, uids=np.arange(n, dtype=np.int64), hotkeys=hotkeys, stake=np.zeros(n),
        validator_permit=np.zeros(n, dtype=np.bool_), incentive=np.array(list(incentive.values())),
        consensus=np.zeros(n),
    )  # fmt: skip


def test_choose_keeps_readmits_by_score_and_adds_newcomers_by_incentive(tmp_path: Path) -> None:
    validator = LocalNet(tmp_path).validator(sample_min=2, max_new_per_step=2)
    candidates = {
        "kept": record("kept", 1, evaluated=True),
        "dropped-good": record("dropped-good", 1, evaluated=True),  # one bad step cost it its place
        "dropped-bad": record("dropped-bad", 1, evaluated=True),
        "new-low": record("new-low", 2, evaluated=False),
        "new-high": record("new-high", 3, evaluated=False),
        "new-third": record("new-third", 4, evaluated=False),
    }
    validator.state.kept["local"] = ["kept", "gone"]  # "gone" is no longer a candidate
    validator.state.scores = {"kept": 0.2, "dropped-good": 0.6, "dropped-bad": 0.0}
    metagraph = graph({hk: 0.0 for hk in candidates} | {"new-high": 0.9, "new-low": 0.1})
    chosen = validator._choose("local", candidates, metagraph)
    assert chosen == ["kept", "dropped-good", "new-high", "new-low"]
