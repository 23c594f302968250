from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from constants.competitions import LOCAL, LOCALNET_SCHEDULE, Competition
from model.cleaner import ModelCleaner
from model.data import ModelId, ModelMetadata
from model.hashing import hash_directory
from model.storage.chain.local_chain import LocalChain
from model.storage.disk.model_store import DiskModelStore
from model.storage.hub.local_hub import LocalHub
from model.storage.hub.protocol import RepoInfo
from model.tracker import ModelRecord, ModelTracker
from model.updater import ModelUpdater

GRACE = 100.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def mid(name: str, commit: str = "c1") -> ModelId:
    return ModelId("ns", name, commit, "hash=", "local")


def put_folder(
    store: DiskModelStore, hotkey: str, model_id: ModelId, size: int = 100, age_s: float = 0
) -> Path:
    folder = store.model_dir(hotkey, model_id)
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * size)
    if age_s:
        then = time.time() - age_s
        os.utime(folder, (then, then))
    return folder


def track(tracker: ModelTracker, hotkey: str, model_id: ModelId, *weights: float) -> None:
    tracker.put(ModelRecord(hotkey, "ok", None, ModelMetadata(model_id, 1), "", "verified"))
    for weight in weights:
        tracker.record_evaluation(hotkey, {"step": 1, "weight": weight, "win_rate": weight})


def test_unreferenced_models_go_after_the_grace_period(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, tracker, clock = DiskModelStore(tmp_path), ModelTracker(), Clock()
    kept = put_folder(store, "hk-a", mid("a"), age_s=10 * GRACE)  # referenced: old mtime does not matter
    orphan = put_folder(store, "hk-b", mid("b"))
    track(tracker, "hk-a", mid("a"))
    cleaner = ModelCleaner(store, tracker, grace_s=GRACE, clock=clock)
    assert cleaner.clean() == []
    clock.now += GRACE + 1
    with caplog.at_level(logging.INFO, logger="model.cleaner"):
        assert cleaner.clean() == [orphan]
    assert kept.is_dir() and not orphan.exists() and str(orphan) in caplog.text
    assert store.hotkeys() == ["hk-a"]


def test_grace_counts_from_when_a_model_stopped_being_referenced(tmp_path: Path) -> None:
    store, tracker, clock = DiskModelStore(tmp_path), ModelTracker(), Clock()
    old = put_folder(store, "hk-a", mid("a", "old"), age_s=10 * GRACE)
    track(tracker, "hk-a", mid("a", "old"))
    cleaner = ModelCleaner(store, tracker, grace_s=GRACE, clock=clock)
    assert cleaner.clean() == []  # seen referenced now
    new = put_folder(store, "hk-a", mid("a", "new"))
    track(tracker, "hk-a", mid("a", "new"))  # the miner committed a new model
    clock.now += GRACE / 2
    assert cleaner.clean() == []  # an evaluation may still be running on the old one
    clock.now += GRACE
    assert cleaner.clean() == [old]
    assert new.is_dir()


def test_budget_evicts_least_useful_first_and_never_evaluated_last(tmp_path: Path) -> None:
    store, tracker = DiskModelStore(tmp_path), ModelTracker()
    for hotkey, weights in (("hk-good", (0.6, 0.8)), ("hk-poor", (0.1, 0.0)), ("hk-new", ())):
        put_folder(store, hotkey, mid(hotkey))
        track(tracker, hotkey, mid(hotkey), *weights)
    cleaner = ModelCleaner(store, tracker, grace_s=GRACE, max_bytes=150)
    deleted = cleaner.clean()
    assert deleted == [store.model_dir("hk-poor", mid("hk-poor")), store.model_dir("hk-good", mid("hk-good"))]
    assert store.size() == 100 and store.model_dir("hk-new", mid("hk-new")).is_dir()
    poor = tracker.get("hk-poor")
    assert poor is not None and (poor.status, poor.reason) == ("waiting", "evicted")  # retryable
    assert set(tracker.models_for("local")) == {"hk-new"}
    assert cleaner.clean() == []  # within budget now
    cleaner = ModelCleaner(store, tracker, grace_s=GRACE, max_bytes=0)
    assert cleaner.clean() == [store.model_dir("hk-new", mid("hk-new"))]


def test_room_for_a_deferred_download_evicts_evaluated_models_only(tmp_path: Path) -> None:
    store, tracker = DiskModelStore(tmp_path), ModelTracker()
    for hotkey, weights in (("hk-good", (0.9,)), ("hk-poor", (0.1,)), ("hk-new", ())):
        put_folder(store, hotkey, mid(hotkey))
        track(tracker, hotkey, mid(hotkey), *weights)
    cleaner = ModelCleaner(store, tracker, grace_s=GRACE, max_bytes=350)
    assert cleaner.clean() == []  # 300 bytes: within budget
    store.wanted_bytes = 100  # the updater deferred a 100-byte download
    assert cleaner.clean() == [store.model_dir("hk-poor", mid("hk-poor"))]
    assert tracker.get("hk-poor").reason == "evicted"  # type: ignore[union-attr]
    store.wanted_bytes = 250
    assert cleaner.clean() == [store.model_dir("hk-good", mid("hk-good"))]  # hk-new keeps its place
    store.wanted_bytes = 351  # more than the whole budget: cannot be helped, nothing is evicted
    put_folder(store, "hk-more", mid("hk-more"))
    track(tracker, "hk-more", mid("hk-more"), 0.5)
    assert cleaner.clean() == []


def test_temporary_download_folders_never_cause_an_eviction(tmp_path: Path) -> None:
    store, tracker = DiskModelStore(tmp_path), ModelTracker()
    put_folder(store, "hk-a", mid("a"))
    track(tracker, "hk-a", mid("a"), 0.5)
    temp = store.new_temp_dir()  # a download still running (or orphaned)
    (temp / "model.safetensors").write_bytes(b"x" * 1000)
    assert ModelCleaner(store, tracker, grace_s=GRACE, max_bytes=150).clean() == []
    assert temp.is_dir() and store.model_dir("hk-a", mid("a")).is_dir()


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ModelCleaner(DiskModelStore(tmp_path), ModelTracker(), grace_s=-1)


class PassChecker:
    def check_repo(self, info: RepoInfo, competition: Competition) -> None:
        return None

    def stream_scan(self) -> None:
        return None

    def check_folder(self, path: Path, competition: Competition, *, scan: object = None) -> int:
        return 1


def test_with_the_updater_on_a_local_network(tmp_path: Path) -> None:
    fixed = 1_000_000.0
    chain = LocalChain(tmp_path / "chain.sqlite", clock=lambda: fixed)
    store, tracker, clock = DiskModelStore(tmp_path / "store"), ModelTracker(), Clock()
    updater = ModelUpdater(
        chain,
        LocalHub(tmp_path / "hub"),
        store,
        tracker,
        PassChecker(),
        schedule=LOCALNET_SCHEDULE,
    )
    miner_hub = LocalHub(tmp_path / "hub", user="alice")
    miner_hub.create_repo("alice/ft", private=False)
    chain.register("hk-a")
    miner_chain = LocalChain(tmp_path / "chain.sqlite", hotkey="hk-a", clock=lambda: fixed)
    ids = []
    for weights in (b"first", b"second"):
        src = tmp_path / weights.decode()
        src.mkdir()
        values = torch.tensor(list(weights), dtype=torch.float32)
        (src / "model.safetensors").write_bytes(save({"w": values}))  # a real safetensors file
        commit = miner_hub.upload_folder("alice/ft", src)
        ids.append(ModelId("alice", "ft", commit, hash_directory(src), "local"))
        miner_chain.commit(ids[-1].to_compressed_str())
        chain.advance(LOCAL.eval_delay_blocks)  # an update replaces the model once it can be judged
        assert [r.outcome for r in updater.sync_all(chain.current_block())] == ["ok"]
        ModelCleaner(store, tracker, grace_s=GRACE, clock=clock).clean()
    clock.now += GRACE + 1
    cleaner = ModelCleaner(store, tracker, grace_s=GRACE, clock=clock)
    assert cleaner.clean() == [store.model_dir("hk-a", ids[0])]
    assert store.model_dirs("hk-a") == [store.model_dir("hk-a", ids[1])]
