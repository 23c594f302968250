"""wandb reporting, in offline mode: the run on disk holds the logged keys, and wandb failures never
escape ``report``."""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import wandb

from finetune.validator.records import ModelRow, StepReport
from finetune.validator.wandb_log import WandbReporter, step_metrics, step_rows

BLOCK_SIZE = 32 * 1024
"""The ``.wandb`` file is a LevelDB-style log: 32 KiB blocks of checksummed, typed chunks."""


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def make_step(step: int) -> StepReport:
    rows = (
        ModelRow(3, "5Hot3", "a/b@c3", 10, 1.25, 0.75, (0.6, 0.9), 0.7, 0.5 + step / 100, "", (1.0, 1.5)),
        ModelRow(5, "5Hot5", "a/d@c5", 11, math.inf, 0.0, (0.0, 0.1), 0.0, math.nan, "evaluation failed"),
    )
    return StepReport(step, 1000 + step, "SN9_MODEL", 7, 2, 3.5, rows, {"5Hot9": "no commitment"})


def wandb_records(path: Path) -> Iterator[bytes]:
    """The protobuf records of a ``.wandb`` file (7-byte file header, then 7-byte chunk headers:
    crc32, length, type = full/first/middle/last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = BLOCK_SIZE - position % BLOCK_SIZE
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        else:
            yield pending + chunk
            pending = b""


def logged_history(run_dir: Path) -> list[dict[str, Any]]:
    from wandb.proto import wandb_internal_pb2

    (log_file,) = run_dir.glob("*.wandb")
    rows = []
    for raw in wandb_records(log_file):
        record = wandb_internal_pb2.Record.FromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    ".".join(item.nested_key) if item.nested_key else item.key: json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def test_metrics_and_rows() -> None:
    metrics = step_metrics(make_step(1))
    assert metrics["step"] == 1 and metrics["block"] == 1001 and metrics["competition"] == "SN9_MODEL"
    assert metrics["uid_data.3.win_rate"] == 0.75
    assert metrics["uid_data.3.win_rate_ci_low"] == 0.6
    assert metrics["uid_data.5.weight"] == 0.0
    assert "uid_data.5.mean_loss" not in metrics and "uid_data.5.score" not in metrics
    rows = step_rows(make_step(1))
    assert rows[1][4] is None and rows[1][9] is None and rows[1][10] == "evaluation failed"


def test_offline_run_holds_the_logged_keys(tmp_path: Path) -> None:
    reporter = WandbReporter(project="finetune-test", config={"netuid": 9}, mode="offline", dir=tmp_path)
    assert reporter.run is None  # lazy
    steps = (make_step(1), make_step(2))
    reporter.report(steps[0], steps[:1])
    run = reporter.run
    assert run is not None
    reporter.report(steps[1], steps)
    assert reporter.failures == 0 and not reporter.disabled
    assert run.summary["uid_data.3.score"] == pytest.approx(0.52)
    reporter.close()
    reporter.close()  # idempotent
    assert reporter.run is None

    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    history = logged_history(run_dir)
    assert [row["step"] for row in history] == [1, 2]
    last = history[-1]
    assert last["block"] == 1002 and last["competition"] == "SN9_MODEL"
    for name in ("mean_loss", "win_rate", "weight", "score"):
        assert f"uid_data.3.{name}" in last
    assert last["uid_data.3.score"] == pytest.approx(0.52)
    assert last["rows._type"] == "table-file" and last["rows.nrows"] == 2
    assert len(list((run_dir / "files" / "media" / "table").glob("rows_*.table.json"))) == 2
    table = json.loads((run_dir / "files" / last["rows.path"]).read_text())
    assert table["columns"][:3] == ["uid", "hotkey", "model"]
    assert [row[0] for row in table["data"]] == [3, 5]


def test_failing_log_is_contained_then_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[dict[str, Any]] = []

    def broken_log(self: object, data: dict[str, Any], *args: object, **kwargs: object) -> None:
        calls.append(data)
        raise wandb.Error("backend unreachable")

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", broken_log)
    reporter = WandbReporter(project="p", config={}, mode="offline", dir=tmp_path, max_failures=2)
    with caplog.at_level(logging.WARNING, logger="finetune.validator.wandb_log"):
        for number in range(1, 5):
            reporter.report(make_step(number), ())
    assert len(calls) == 2
    assert reporter.disabled and reporter.run is None  # the run was finished on disabling
    messages = [record.getMessage() for record in caplog.records]
    assert any("backend unreachable" in message for message in messages)
    assert any("disabled after 2" in message for message in messages)


def test_failing_init_is_retried_and_a_success_resets_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes: list[bool] = [False, False, True]

    class FakeRun:
        name, id = "fake", "fake-id"
        logged: ClassVar[list[dict[str, Any]]] = []

        def define_metric(self, *args: object, **kwargs: object) -> None:
            pass

        def log(self, data: dict[str, Any]) -> None:
            self.logged.append(data)

        def finish(self) -> None:
            raise RuntimeError("finish failed")

    def init(**kwargs: Any) -> FakeRun:
        assert kwargs["settings"].init_timeout == 5.0
        if not outcomes.pop(0):
            raise TimeoutError("init timed out")
        return FakeRun()

    monkeypatch.setattr(wandb, "init", init)
    reporter = WandbReporter(project="p", config={}, max_failures=3, init_timeout_s=5.0)
    reporter.report(make_step(1), ())
    reporter.report(make_step(2), ())
    assert reporter.failures == 2 and not reporter.disabled
    reporter.report(make_step(3), ())
    assert reporter.failures == 0
    assert [data["step"] for data in FakeRun.logged] == [3]
    reporter.close()  # a failing finish is logged, not raised
    assert reporter.run is None
