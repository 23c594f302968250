"""Fault injection on the local network: the real ``neurons/validator.py`` as a process, hurt the way a
machine hurts it (kill -9 in the middle of a write, a state file lost or cut short, a model folder
deleted from its store, a data source that hangs, SIGTERM), and what it keeps afterwards.

Faults inside the process come from a ``sitecustomize`` module put on the neuron's ``PYTHONPATH``
(Python imports it at start, before the neuron's own code): it wraps the library calls where a real
fault strikes (the rename that ends an atomic write, the synthetic source's draw) and leaves
everything else to the real code. Without ``FINETUNE_FAULT`` in the environment it does nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from finetune.validator.state import ValidatorState
from model.data import ModelId
from model.hashing import hash_directory
from model.network import local_wallet
from model.storage.disk.model_store import DiskModelStore
from model.tracker import ModelTracker
from tests.finetune.validator.localnet import LocalNet, save_tiny

ROOT = Path(__file__).resolve().parents[2]
STATE = "validator_state.json"

SITECUSTOMIZE = '''
"""Faults for tests/e2e/test_faults.py (FINETUNE_FAULT=kind:number, FINETUNE_FAULT_MARKER=file):
cut_write:N cuts the first write of a state after N steps, hang_draw:N hangs the N-th draw."""
import os

_fault = os.environ.get("FINETUNE_FAULT")
if _fault:
    import threading
    from pathlib import Path

    _kind, _at = _fault.split(":")
    _marker = Path(os.environ["FINETUNE_FAULT_MARKER"])
    _seen = [0]

    def _strike():
        """The fault's moment: say so, and never return (the test kills or stops the process)."""
        _marker.touch()
        threading.Event().wait()

    if _kind == "cut_write":  # the state's atomic write: temp file written and synced, rename not done
        import json

        import utilities.files as _files

        class _Os:
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def replace(src, dst):
                if Path(dst).name == "validator_state.json":
                    if json.loads(Path(src).read_text())["step"] >= int(_at):
                        _strike()  # the first write of a state with that many steps
                os.replace(src, dst)

        _files.os = _Os()
    elif _kind == "hang_draw":  # the data source's draw never returns
        from finetune.data.synthetic import SyntheticSource

        _sample = SyntheticSource.sample

        def _hanging(self, n, *, seed, cutoff=None):
            _seen[0] += 1
            if _seen[0] >= int(_at):
                _strike()
            return _sample(self, n, seed=seed, cutoff=cutoff)

        SyntheticSource.sample = _hanging
'''


def neuron_args(root: Path) -> list[str]:
    return [
        "--localnet", str(root), "--wallet.name", "validator", "--device", "cpu", "--wandb.off",
        "--state_dir", str(root / "state"), "--model_dir", str(root / "models"),
        "--latest_cortex_samples", "16", "--sample_min", "2", "--weights_check_seconds", "1",
        "--update_delay_minutes", "0.1",
    ]  # fmt: skip


class Neuron:
    """One run of the validator neuron, its log in a file."""

    def __init__(self, root: Path, log: Path, *, fault: str | None = None) -> None:
        site = root / "faults-site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.marker = root / "fault-struck"
        self.marker.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
        env.pop("FINETUNE_FAULT", None)
        if fault is not None:
            env |= {"FINETUNE_FAULT": fault, "FINETUNE_FAULT_MARKER": str(self.marker)}
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "neurons" / "validator.py"), *neuron_args(root)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            )  # fmt: skip

    def wait_for(self, what: str, done: Callable[[], bool], timeout_s: float = 150.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self.process.poll() is not None:
                pytest.fail(f"the validator exited ({self.process.returncode}) before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout_s:g} s:\n{self.tail()}")
            time.sleep(0.2)

    def terminate(self) -> float:
        """SIGTERM; returns how long the process took to exit (it must exit 0)."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            rc = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the validator ignored SIGTERM for 30 s:\n{self.tail()}")
        assert rc == 0, self.tail()
        return time.monotonic() - sent

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the neuron and its evaluation worker
        self.process.wait(timeout=30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextmanager
def running(root: Path, name: str, *, fault: str | None = None) -> Iterator[Neuron]:
    neuron = Neuron(root, root / f"{name}.log", fault=fault)
    try:
        yield neuron
    finally:
        neuron.kill()


def state_of(root: Path) -> ValidatorState | None:
    path = root / "state" / STATE
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return ValidatorState.load(path)


def leftovers(root: Path) -> list[Path]:
    return sorted((root / "state").glob(f".{STATE}.*.tmp"))


@pytest.fixture
def net(tmp_path: Path) -> Iterator[tuple[LocalNet, dict[str, ModelId], str]]:
    local = LocalNet(tmp_path)
    models = {
        name: local.publish(name, save_tiny(tmp_path / "src" / name, seed=seed))
        for seed, name in enumerate(("alpha", "beta"))
    }
    local.ripen()  # both models old enough for the current sync window
    hotkey = local_wallet(tmp_path / "wallets", "validator", "default").hotkey.ss58_address
    local.chain.register(hotkey, stake=100.0, validator_permit=True)
    yield local, models, hotkey


def stored(root: Path, hotkey: str, model: ModelId) -> Path:
    return DiskModelStore(root / "models").model_dir(hotkey, model)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_minus_nine_mid_write_then_a_deleted_model_folder(
    net: tuple[LocalNet, dict[str, ModelId], str], tmp_path: Path
) -> None:
    """(e) kill -9 while the state is being written: the file holds the last whole write, the cut
    write's temporary file is removed at the next start, and the restart resumes from the saved step.
    (c) a model folder deleted from the store (while stopped, then while running) is found missing
    before it is evaluated, downloaded again, verified, and evaluated again."""
    _, models, _ = net
    with running(tmp_path, "cut", fault="cut_write:2") as neuron:
        neuron.wait_for("state write cut by the fault", neuron.marker.exists)
        neuron.kill()
    saved = state_of(tmp_path)
    assert saved is not None and saved.step >= 1, "the state file is not the last whole write"
    cut = leftovers(tmp_path)
    assert len(cut) == 1 and json.loads(cut[0].read_text())  # the write that kill -9 cut short
    ModelTracker.load(tmp_path / "state" / "tracker.json")  # whole too
    saved_steps = [report.step for report in saved.history]

    beta = stored(tmp_path, "beta", models["beta"])
    beta_hash = hash_directory(beta)
    shutil.rmtree(beta)  # lost while the validator was down

    with running(tmp_path, "resume") as neuron:
        neuron.wait_for(
            "a step after the restart", lambda: (s := state_of(tmp_path)) is not None and s.step > saved.step
        )
        assert not leftovers(tmp_path), "the cut write's temporary file is still there"
        assert beta.is_dir() and hash_directory(beta) == beta_hash  # downloaded again, verified
        resumed = state_of(tmp_path)
        assert resumed is not None and resumed.history[-1].step >= saved.step
        assert {row.hotkey for row in resumed.history[-1].rows} == {"alpha", "beta"}

        leader = max(resumed.scores, key=lambda hk: resumed.scores[hk])
        folder = stored(tmp_path, leader, models[leader])
        leader_hash = hash_directory(folder)
        shutil.rmtree(folder)  # lost while it runs
        start = resumed.step
        neuron.wait_for(
            f"{leader}'s folder downloaded again",
            lambda: folder.is_dir() and (s := state_of(tmp_path)) is not None and s.step > start + 1,
        )
        took = neuron.terminate()
    assert hash_directory(folder) == leader_hash
    log = neuron.log.read_text()
    assert log.count("the stored model folder was deleted or changed after it was verified") >= 2, log[-3000:]
    assert took < 15, f"took {took:.1f} s to stop"
    final = state_of(tmp_path)
    assert final is not None and final.step > saved.step
    assert [r.step for r in final.history][: len(saved_steps)] == saved_steps  # nothing it had kept is lost
    tracker = ModelTracker.load(tmp_path / "state" / "tracker.json")
    for name in ("alpha", "beta"):
        record = tracker.get(name)
        assert record is not None and record.status == "ok" and record.metadata is not None
        assert record.metadata.id == models[name]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_lost_or_truncated_state_then_a_hanging_source_and_sigterm(
    net: tuple[LocalNet, dict[str, ModelId], str], tmp_path: Path
) -> None:
    """(a), (b) the state file truncated, then deleted, between runs: the validator evaluates every
    tracked model again and sets weights again, the tracker keeping its models and their evaluations.
    (d) the data source hangs in a draw, then SIGTERM: the process exits within seconds, its files whole."""
    local, models, hotkey = net
    state_file = tmp_path / "state" / STATE

    def weights_set() -> bool:
        state = state_of(tmp_path)
        return state is not None and state.step >= 1 and state.last_weights_block is not None

    with running(tmp_path, "first") as neuron:
        neuron.wait_for("weights set", weights_set)
        neuron.terminate()
    evaluations = {
        hk: len(r.evaluations)
        for hk, r in ModelTracker.load(tmp_path / "state" / "tracker.json").records().items()
    }
    assert set(evaluations) == {"alpha", "beta"} and all(evaluations.values())

    state_file.write_text(state_file.read_text()[:40])  # (b) truncated
    with running(tmp_path, "truncated") as neuron:
        neuron.wait_for("weights set after a truncated state", weights_set)
        neuron.terminate()
    after = state_of(tmp_path)
    assert after is not None and {row.hotkey for row in after.history[0].rows} == {"alpha", "beta"}
    assert local.chain.weights(hotkey) == pytest.approx(after.last_weights)

    state_file.unlink()  # (a) deleted; and (d) the second draw of this run hangs
    with running(tmp_path, "deleted", fault="hang_draw:2") as neuron:
        neuron.wait_for("weights set after a deleted state", weights_set)
        neuron.wait_for("a draw that hangs", neuron.marker.exists)
        took = neuron.terminate()
    assert took < 15, f"took {took:.1f} s to stop"
    after = state_of(tmp_path)
    assert after is not None and after.step == 1, "the hanging step must record nothing"
    assert {row.hotkey for row in after.history[0].rows} == {"alpha", "beta"}
    assert local.chain.weights(hotkey) == pytest.approx(after.last_weights)
    tracker = ModelTracker.load(tmp_path / "state" / "tracker.json")
    for hk, count in evaluations.items():
        record = tracker.get(hk)
        assert record is not None and record.status == "ok" and record.metadata is not None
        assert record.metadata.id == models[hk] and len(record.evaluations) > count  # kept, and added to


def test_a_store_folder_deleted_between_steps_is_caught_before_evaluation(tmp_path: Path) -> None:
    """(c) in one process, no updater pass between the steps: only ``Validator._verify_before_eval``
    (``ModelUpdater.verify_stored``) can notice the deletion, so this shows it runs before evaluation;
    the next updater pass downloads the model again, as verified before."""
    local = LocalNet(tmp_path)
    models = {
        name: local.publish(name, save_tiny(tmp_path / "src" / name, seed=seed))
        for seed, name in enumerate(("alpha", "beta"))
    }
    local.ripen()
    validator = local.validator()
    try:
        validator.sync_models()
        first = validator.step()
        assert first is not None and {row.hotkey for row in first.rows} == {"alpha", "beta"}
        folder = stored(tmp_path, "beta", models["beta"])
        content = hash_directory(folder)
        shutil.rmtree(folder)
        second = validator.step()  # no sync since the deletion
        assert second is not None and {row.hotkey for row in second.rows} == {"alpha"}
        record = validator.tracker.get("beta")
        assert record is not None and (record.status, record.reason) == ("waiting", "damaged")
        validator.sync_models()
        record = validator.tracker.get("beta")
        assert record is not None and record.status == "ok" and record.metadata is not None
        assert record.metadata.id == models["beta"] and hash_directory(folder) == content
        assert len(record.evaluations) == 1  # its history is kept through the repair
    finally:
        validator.evaluator.close()


def test_a_repaired_model_is_evaluated_again(tmp_path: Path) -> None:
    local = LocalNet(tmp_path)
    models = {
        name: local.publish(name, save_tiny(tmp_path / "src" / name, seed=seed))
        for seed, name in enumerate(("alpha", "beta"))
    }
    local.ripen()
    validator = local.validator()
    try:
        validator.sync_models()
        assert validator.step() is not None
        shutil.rmtree(stored(tmp_path, "beta", models["beta"]))
        assert validator.step() is not None  # beta skipped: its folder is gone
        validator.sync_models()  # beta downloaded again
        report = validator.step()
        assert report is not None and "beta" in {row.hotkey for row in report.rows}
    finally:
        validator.evaluator.close()
