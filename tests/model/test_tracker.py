from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model.data import ModelId, ModelMetadata
from model.tracker import FORMAT_VERSION, ModelRecord, ModelTracker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def meta(name: str = "ft", commit: str = "c1", competition: str = "local", block: int = 7) -> ModelMetadata:
    return ModelMetadata(ModelId("alice", name, commit, "hash=", competition), block)


def ok(hotkey: str, metadata: ModelMetadata | None = None) -> ModelRecord:
    metadata = metadata or meta()
    raw = (metadata.id.to_compressed_str(), metadata.block)
    return ModelRecord(hotkey, "ok", raw, metadata, "", "verified", model_hash="plain=", params=10)


def test_save_load_round_trip(tmp_path: Path) -> None:
    tracker = ModelTracker()
    tracker.put(ok("hk-a"))
    tracker.put(ModelRecord("hk-b", "misconfigured", ("junk", 3), None, "parse", "bad fields"))
    tracker.put(ModelRecord("hk-c", "failed", None, meta("other"), "hub", "down", failures=2, retry_at=5.0))
    tracker.record_evaluation("hk-a", {"step": 1, "mean_loss": np.float32(1.5), "win_rate": np.float64(0.25)})
    tracker.record_evaluation("hk-a", {"step": 2, "competition": "local", "weight": 0.75})
    path = tmp_path / "state" / "tracker.json"
    tracker.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == FORMAT_VERSION and set(data["models"]) == {"hk-a", "hk-b", "hk-c"}
    loaded = ModelTracker.load(path)
    assert loaded.records() == tracker.records()
    record = loaded.get("hk-a")
    assert record is not None and record.evaluations[0] == {"step": 1, "mean_loss": 1.5, "win_rate": 0.25}
    assert [p.name for p in path.parent.iterdir()] == ["tracker.json"]  # atomic write left no temp


def test_weights_hash_round_trip_and_files_without_it(tmp_path: Path) -> None:
    tracker = ModelTracker()
    tracker.put(dataclasses.replace(ok("hk-a"), weights_hash="weights="))
    tracker.put(ok("hk-b", meta("other")))
    path = tmp_path / "tracker.json"
    tracker.save(path)
    data = json.loads(path.read_text())
    assert data["models"]["hk-a"]["weights_hash"] == "weights="
    assert data["models"]["hk-b"]["weights_hash"] is None
    loaded = ModelTracker.load(path)
    assert loaded.records() == tracker.records()
    assert loaded.get("hk-a").weights_hash == "weights="  # type: ignore[union-attr]
    del data["models"]["hk-a"]["weights_hash"]  # a file saved before the field existed
    path.write_text(json.dumps(data))
    old = ModelTracker.load(path)
    assert old.hotkeys() == ["hk-a", "hk-b"] and old.get("hk-a").weights_hash is None  # type: ignore[union-attr]
    data["models"]["hk-a"]["weights_hash"] = 12  # wrong type: that record is skipped
    path.write_text(json.dumps(data))
    assert ModelTracker.load(path).hotkeys() == ["hk-b"]


def test_a_weights_hash_of_file_bytes_is_dropped_and_the_manifest_round_trips(tmp_path: Path) -> None:
    tracker = ModelTracker()
    stored = (("config.json", 41, 1_700_000_000_000_000_000), ("model.safetensors", 400, 17))
    tracker.put(dataclasses.replace(ok("hk-a"), weights_hash="tensors=", stored=stored))
    path = tmp_path / "tracker.json"
    tracker.save(path)
    loaded = ModelTracker.load(path)
    assert loaded.get("hk-a").stored == stored and loaded.get("hk-a").weights_hash == "tensors="  # type: ignore[union-attr]
    data = json.loads(path.read_text())
    del data["models"]["hk-a"]["weights_hash_kind"]  # saved when the weights hash covered file bytes
    path.write_text(json.dumps(data))
    assert ModelTracker.load(path).get("hk-a").weights_hash is None  # type: ignore[union-attr]
    data["models"]["hk-a"]["stored"] = [["model.safetensors", -1, 0]]
    path.write_text(json.dumps(data))
    assert ModelTracker.load(path).hotkeys() == []


def test_missing_file_is_an_empty_tracker(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert ModelTracker.load(tmp_path / "absent.json").records() == {}
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "unreadable"),
        (b"\xff\xfe\x00", "unreadable"),
        (json.dumps({"version": 0, "models": {}}).encode(), "version 0"),
        (json.dumps([1, 2]).encode(), "version None"),
        (json.dumps({"version": FORMAT_VERSION, "models": []}).encode(), "no 'models'"),
    ],
)
def test_corrupt_or_old_file_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, problem: str
) -> None:
    path = tmp_path / "tracker.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="model.tracker"):
        tracker = ModelTracker.load(path)
    assert tracker.records() == {}
    assert str(path) in caplog.text and problem in caplog.text


def test_malformed_record_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tracker = ModelTracker()
    tracker.put(ok("hk-a"))
    path = tmp_path / "tracker.json"
    tracker.save(path)
    data = json.loads(path.read_text())
    data["models"]["hk-bad"] = {**data["models"]["hk-a"], "status": "great"}
    data["models"]["hk-worse"] = {
        **data["models"]["hk-a"],
        "metadata": {"id": {"namespace": "../x"}, "block": 1},
    }
    data["models"]["hk-worst"] = "nope"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="model.tracker"):
        loaded = ModelTracker.load(path)
    assert loaded.hotkeys() == ["hk-a"]
    assert "hk-bad" in caplog.text and "hk-worse" in caplog.text and "hk-worst" in caplog.text


def test_queries_and_updates() -> None:
    clock = Clock()
    tracker = ModelTracker(clock=clock)
    tracker.put(ok("hk-a"))
    tracker.put(ok("hk-b", meta(competition="s1")))
    tracker.put(ModelRecord("hk-c", "waiting", None, meta("young"), "too_young", "wait"))
    assert set(tracker.models_for("local")) == {"hk-a"}
    assert set(tracker.models_for("s1")) == {"hk-b"}
    assert tracker.referenced() == {"hk-a": meta().id, "hk-b": meta(competition="s1").id}
    first = tracker.get("hk-a")
    assert first is not None and first.updated_at == 1000.0
    clock.now = 2000.0
    tracker.put(ok("hk-a"))  # nothing changed: the time of last change stays
    assert tracker.get("hk-a").updated_at == 1000.0  # type: ignore[union-attr]
    assert tracker.set_status("hk-a", expected=meta("other"), status="rejected", reason="evicted") is False
    assert tracker.set_status("hk-a", expected=meta(), status="rejected", reason="evicted") is True
    changed = tracker.get("hk-a")
    assert changed is not None and (changed.status, changed.reason, changed.updated_at) == (
        "rejected",
        "evicted",
        2000.0,
    )
    assert tracker.forget("hk-a") is True and tracker.forget("hk-a") is False
    assert tracker.get("hk-a") is None


def test_evaluations_are_bounded_and_follow_the_model() -> None:
    tracker = ModelTracker(max_evaluations=3)
    assert tracker.record_evaluation("hk-a", {"step": 0}) is False  # untracked hotkey
    tracker.put(ok("hk-a"))
    for step in range(5):
        tracker.record_evaluation("hk-a", {"step": step, "weight": step / 10})
    record = tracker.get("hk-a")
    assert record is not None and [e["step"] for e in record.evaluations] == [2, 3, 4]
    record.evaluations[0]["step"] = 99  # a snapshot: changing it changes nothing inside
    assert tracker.get("hk-a").evaluations[0]["step"] == 2  # type: ignore[union-attr]
    tracker.put(ModelRecord("hk-a", "ok", None, meta(), "", "re-verified"))  # same model
    assert len(tracker.get("hk-a").evaluations) == 3  # type: ignore[union-attr]
    tracker.put(ok("hk-a", meta(commit="c2")))  # a new model starts with no history
    assert tracker.get("hk-a").evaluations == ()  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        ModelTracker(max_evaluations=0)


def test_concurrent_use_smoke(tmp_path: Path) -> None:
    tracker = ModelTracker(max_evaluations=8)
    path = tmp_path / "tracker.json"
    errors: list[BaseException] = []
    stop = threading.Event()

    def run(fn: Callable[[], None]) -> None:
        try:
            while not stop.is_set():
                fn()
        except Exception as exc:  # noqa: BLE001 -- collected, and asserted to be none below
            errors.append(exc)

    counter = iter(range(10**9))

    def updater() -> None:
        n = next(counter)
        tracker.put(ok(f"hk-{n % 20}", meta(commit=f"c{n % 3}")))
        if n % 7 == 0:
            tracker.forget(f"hk-{n % 20}")

    def stepper() -> None:
        for hotkey in tracker.models_for("local"):
            tracker.record_evaluation(hotkey, {"step": 1, "weight": 0.1})

    def saver() -> None:
        tracker.save(path)
        tracker.referenced()

    threads = [threading.Thread(target=run, args=(fn,)) for fn in (updater, updater, stepper, saver)]
    for thread in threads:
        thread.start()
    stop.wait(0.5)
    stop.set()
    for thread in threads:
        thread.join(5)
    assert errors == []
    assert ModelTracker.load(path).records().keys() <= {f"hk-{i}" for i in range(20)}
