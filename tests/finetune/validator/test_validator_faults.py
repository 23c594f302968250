"""Faults that must never stop the validator for good: a lost, truncated or invalid state, leftover
temporary files, a data source that hangs, and SIGTERM in every state."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from finetune.data import Sample
from finetune.rules import window_scores
from finetune.validator.deadline import DeadlineSource
from finetune.validator.state import ValidatorState
from tests.finetune.validator.localnet import LocalNet, save_tiny

ROOT = Path(__file__).resolve().parents[3]


class Hanging:
    """A data source that blocks until released (a stuck wandb or dataset read)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[Sample]:
        self.calls += 1
        self.release.wait(600)
        return []


@pytest.mark.slow
def test_a_lost_or_truncated_state_never_stops_the_validator(tmp_path: Path) -> None:
    """Issue 12.1: the tracker still holds every model's evaluations, but after a fresh state every
    tracked model is evaluated again and weights are set again (before: "no model to evaluate")."""
    net = LocalNet(tmp_path)
    for seed, name in enumerate(("alpha", "beta")):
        net.publish(name, save_tiny(tmp_path / "src" / name, seed=seed))
    net.ripen()
    state_file = tmp_path / "state" / "validator_state.json"
    first = net.validator()
    try:
        first.sync_models()
        assert first.step() is not None and state_file.exists()
    finally:
        first.evaluator.close()
    for damage in ("delete", "truncate"):
        if damage == "delete":
            state_file.unlink()
        else:
            state_file.write_text(state_file.read_text()[:37])
        validator = net.validator()
        try:
            assert validator.state.step == 0 and not validator.state.scores
            assert all(r.evaluations for r in validator.tracker.records().values())  # the tracker kept them
            validator.sync_models()
            report = validator.step()
            assert report is not None, damage
            assert {row.hotkey for row in report.rows} == {"alpha", "beta"}
            net.chain.advance(validator.settings.blocks_per_epoch)
            assert validator.maybe_set_weights()
        finally:
            validator.evaluator.close()


def test_invalid_state_entries_are_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12.2: an Infinity, NaN or negative score parsed, then raised on every weights check."""
    net = LocalNet(tmp_path)
    for hotkey in ("inf-hk", "neg-hk", "nan-hk", "good-hk"):
        net.chain.register(hotkey)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "validator_state.json").write_text(
        '{"version": 1, "step": 3, "kept": {"local": ["good-hk", 7]}, "last_weights_block": null,'
        ' "scores": {"inf-hk": Infinity, "neg-hk": -0.5, "nan-hk": NaN, "good-hk": 0.25},'
        ' "last_weights": {"1": 0.5, "2": Infinity}, "history": [{"step": "x"}]}'
    )
    with caplog.at_level(logging.WARNING, logger="finetune.validator.state"):
        validator = net.validator()
    assert validator.state.step == 3
    assert validator.state.scores == {"good-hk": 0.25}
    assert validator.state.last_weights == {1: 0.5}
    assert validator.state.kept == {} and validator.state.history == []
    logged = caplog.text
    for name in ("inf-hk", "neg-hk", "nan-hk", "kept", "report"):
        assert name in logged, name
    uids, weights = validator.weights_to_set(net.chain.metagraph())
    assert dict(zip(uids, weights, strict=True))[net.chain.metagraph().uid_of("good-hk")] == 1.0
    assert validator.maybe_set_weights()


def test_leftover_temp_files_of_atomic_writes_are_removed_at_start(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    leftovers = [state_dir / ".validator_state.json.k3j2.tmp", state_dir / ".tracker.json.x9.tmp"]
    unrelated = state_dir / ".leaderboard.html.ab.tmp"
    for path in [*leftovers, unrelated]:
        path.write_text("{half a wri")
    net = LocalNet(tmp_path)
    validator = net.validator(state_dir)
    assert not any(p.exists() for p in leftovers) and unrelated.exists()
    validator.save()
    assert sorted(p.name for p in state_dir.iterdir() if p.name.endswith(".tmp")) == [unrelated.name]
    assert ValidatorState.load(state_dir / "validator_state.json").step == 0


def test_a_hanging_data_source_skips_the_step(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12.8: the draw has a deadline; while it is stuck, later steps are skipped at once."""
    net = LocalNet(tmp_path)
    net.publish("alpha", save_tiny(tmp_path / "src" / "alpha", seed=1))
    net.ripen()
    source = Hanging()
    validator = net.validator(source=source, sample_timeout_s=0.3)
    try:
        validator.sync_models()
        with caplog.at_level(logging.WARNING):
            started = time.monotonic()
            assert validator.step() is None
            assert time.monotonic() - started < 10
            assert validator.step() is None
        assert source.calls == 1  # no second thread on a source that is still stuck
        assert "gave no samples within 0.3 s" in caplog.text and "still stuck" in caplog.text
        # a skipped step records nothing, but counts: the round robin moves on (review 6)
        assert validator.state.step == 2 and not validator.state.history
        with pytest.raises(ValueError, match="timeout_s"):
            DeadlineSource(source, timeout_s=0)
    finally:
        source.release.set()
        validator.evaluator.close()


HANG_SCRIPT = """
import sys, threading
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from finetune.validator.shutdown import run_until_signalled
from tests.finetune.validator.localnet import LocalNet

class Hanging:
    def sample(self, n, *, seed, cutoff=None):
        print("drawing", flush=True)
        threading.Event().wait(3600)

net = LocalNet(Path(sys.argv[2]))
source = Hanging() if sys.argv[3] == "draw" else None
validator = net.validator(source=source, sample_timeout_s=3000, weights_check_interval_s=0.2)
print("stopped by signal:", run_until_signalled(validator), flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("hang", ["draw", "evaluation"])
def test_sigterm_stops_the_validator_within_seconds(tmp_path: Path, hang: str) -> None:
    """Issue 12.8: SIGTERM while the step waits on a hanging data source or a hanging evaluation."""
    net = LocalNet(tmp_path)
    net.publish("sleep_m" if hang == "evaluation" else "alpha", save_tiny(tmp_path / "src" / "m", seed=1))
    net.ripen()
    marker = tmp_path / "evaluating"
    process = subprocess.Popen(
        [sys.executable, "-c", HANG_SCRIPT, str(ROOT), str(tmp_path), hang],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        env={**os.environ, "SLEEP_MARKER": str(marker), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        if hang == "draw":
            assert process.stdout is not None and process.stdout.readline().strip() == "drawing"
        else:
            while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.2)
            assert marker.exists(), "the evaluation never started"
        assert process.poll() is None
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        took = time.monotonic() - sent
        assert process.returncode == 0 and "stopped by signal: True" in out
        assert took < 15, f"took {took:.1f} s to stop"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    json.loads((tmp_path / "state" / "tracker.json").read_text())  # whole, written atomically


def test_the_state_round_trips_and_reads_version_1(tmp_path: Path) -> None:
    state = ValidatorState(
        step=4, scores={"a": 0.5}, kept={"local": ["a"]}, evaluated={"a": "ns/m@c:h:local#3"},
        scored_competitions=["local"], window_start={"local": (10, {"a": 0.25})}, last_weights_block=7,
        last_weights={1: 1.0},
    )  # fmt: skip
    state.save(tmp_path / "s.json")
    assert ValidatorState.load(tmp_path / "s.json") == state
    old = state.to_json() | {"version": 1}
    for key in ("evaluated", "scored_competitions", "window_start"):
        del old[key]
    (tmp_path / "v1.json").write_text(json.dumps(old))
    loaded = ValidatorState.load(tmp_path / "v1.json")
    assert (loaded.scores, loaded.evaluated, loaded.window_start) == ({"a": 0.5}, {}, {})
    (tmp_path / "v9.json").write_text(json.dumps(state.to_json() | {"version": 9}))
    assert ValidatorState.load(tmp_path / "v9.json") == ValidatorState()


def test_a_forgotten_hotkey_stays_forgotten_within_its_window() -> None:
    """Review 9: a deregistered hotkey's score is gone for good, also from the window start (before:
    the next step of the same window gave it back its score from there)."""
    state = ValidatorState(scores={"a": 0.5, "gone": 0.4})
    state.scores, start = window_scores(
        state.scores, {"a": 1.0}, window_start=None, sync_block=180, members=["a"]
    )
    assert start is not None
    state.window_start["c"] = start
    state.forget_missing(["a"])
    assert state.scores.keys() == {"a"} and state.window_start["c"] == (180, {"a": 0.5})
    state.scores, _ = window_scores(
        state.scores, {"a": 1.0}, window_start=state.window_start["c"], sync_block=180, members=["a"]
    )
    assert state.scores.keys() == {"a"}


def test_a_windows_losses_round_trip_and_a_bad_entry_is_dropped(tmp_path: Path) -> None:
    """The window's per-sample losses (review 2) survive a restart, an ``inf`` loss included; an
    entry that is not losses is dropped, the rest kept."""
    state = ValidatorState(window_losses={"local": (180, "digest", {"a": ("m1", [1.5, math.inf])})})
    state.save(tmp_path / "s.json")
    assert ValidatorState.load(tmp_path / "s.json").window_losses == state.window_losses
    data = json.loads((tmp_path / "s.json").read_text())
    data["window_losses"]["other"] = {"sync_block": 5, "samples": "d", "losses": {"b": {"model": "m"}}}
    (tmp_path / "s.json").write_text(json.dumps(data))
    assert ValidatorState.load(tmp_path / "s.json").window_losses == state.window_losses
