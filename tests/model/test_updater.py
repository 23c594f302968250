from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import logging
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save

from constants.competitions import LOCALNET_SCHEDULE, Competition, ScheduleEntry
from model.cleaner import ModelCleaner
from model.data import ModelId
from model.hashing import hash_directory, hash_weights, hash_with_hotkey
from model.model_files import MODEL_FILE_PATTERNS, is_model_file
from model.storage.chain.local_chain import LocalChain
from model.storage.disk.model_store import DiskModelStore
from model.storage.hub.local_hub import LocalHub
from model.storage.hub.protocol import RepoInfo
from model.tracker import ModelRecord, ModelTracker
from model.updater import TEMP_PREFIX, ModelUpdater, SyncResult
from utilities.errors import HubError, ModelRejectedError

MIN_AGE = 5
PARAMS = 1234


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeChecker:
    """Stands in for finetune.checks.ModelChecker."""

    def __init__(self) -> None:
        self.repo_error: Exception | None = None
        self.folder_error: Exception | None = None
        self.repos: list[RepoInfo] = []
        self.folders: list[Path] = []

    def check_repo(self, info: RepoInfo, competition: Competition) -> None:
        self.repos.append(info)
        if self.repo_error is not None:
            raise self.repo_error

    def stream_scan(self) -> None:
        return None

    def check_folder(self, path: Path, competition: Competition, *, scan: object = None) -> int:
        self.folders.append(path)
        if not (path / "model.safetensors").is_file():
            raise ModelRejectedError("missing_weights", f"{path} has no model.safetensors")
        if self.folder_error is not None:
            raise self.folder_error
        return PARAMS


class CountingHub:
    """A LocalHub (as a validator sees it) that counts calls and can fail on demand."""

    def __init__(self, inner: LocalHub) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.failures: list[Exception] = []
        self.delay_s = 0.0
        self.patterns: list[Sequence[str] | None] = []

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.failures:
            raise self.failures.pop(0)

    def create_repo(self, repo_id: str, *, private: bool = True) -> None:
        self.inner.create_repo(repo_id, private=private)

    def upload_folder(self, repo_id: str, folder: Path, *, message: str = "Upload model") -> str:
        return self.inner.upload_folder(repo_id, folder, message=message)

    def make_private(self, repo_id: str) -> None:
        self.inner.make_private(repo_id)

    def make_public(self, repo_id: str) -> None:
        self.inner.make_public(repo_id)

    def repo_info(self, repo_id: str, *, commit: str) -> RepoInfo:
        self.calls["repo_info"] += 1
        return self.inner.repo_info(repo_id, commit=commit)

    def download(
        self, repo_id: str, *, commit: str, dest: Path, allow_patterns: Sequence[str] | None = None
    ) -> Path:
        self._call("download")
        self.patterns.append(allow_patterns)
        return self.inner.download(repo_id, commit=commit, dest=dest, allow_patterns=allow_patterns)


def _safetensors(weights: bytes) -> bytes:
    """A small real safetensors file whose one float32 tensor is made from ``weights``."""
    values = torch.tensor(list(weights), dtype=torch.float32) / 256
    return save({"w": values.reshape(1, -1)}, metadata={"format": "pt"})


class Net:
    """A local network: miners register, upload and commit; one validator syncs."""

    def __init__(self, tmp_path: Path, checker: FakeChecker | None = None, **updater_options: object) -> None:
        self.tmp = tmp_path
        self.chain_clock = Clock()
        self.clock = Clock()
        self.chain = LocalChain(tmp_path / "chain.sqlite", clock=self.chain_clock)
        self.hub = CountingHub(LocalHub(tmp_path / "hub"))
        self.store = DiskModelStore(tmp_path / "store")
        self.tracker = ModelTracker(clock=self.clock)
        self.checker = checker or FakeChecker()
        options: dict[str, object] = {
            "schedule": LOCALNET_SCHEDULE,
            "attempts": 2,
            "retry_wait_s": 0.0,
            "backoff_s": 60.0,
            "clock": self.clock,
            "sleep": lambda s: None,
            **updater_options,
        }
        self.updater = ModelUpdater(
            self.chain,
            self.hub,
            self.store,
            self.tracker,
            self.checker,
            **options,  # type: ignore[arg-type]
        )
        self._uploads = 0

    def upload(
        self,
        namespace: str,
        weights: bytes = b"w" * 64,
        *,
        public: bool = True,
        readme: str = "",
        config: str = '{"architectures": ["LlamaForCausalLM"]}',
    ) -> tuple[str, str]:
        """Upload a model as a miner would; returns (commit, plain hash)."""
        self._uploads += 1
        folder = self.tmp / "src" / str(self._uploads)
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(_safetensors(weights))
        (folder / "config.json").write_text(config)
        if readme:
            (folder / "README.md").write_text(readme)  # not a model file: neither downloaded nor hashed
        hub = LocalHub(self.tmp / "hub", user=namespace)
        hub.create_repo(f"{namespace}/ft")
        commit = hub.upload_folder(f"{namespace}/ft", folder)
        if public:
            hub.make_public(f"{namespace}/ft")
        return commit, _hand_hash(folder, ["config.json", "model.safetensors"])

    def commit(self, hotkey: str, data: str) -> None:
        self.chain.register(hotkey)
        LocalChain(self.tmp / "chain.sqlite", hotkey=hotkey, clock=self.chain_clock).commit(data)

    def publish(
        self, hotkey: str, namespace: str, *, salted: bool = False, competition: str = "local", **kw: object
    ) -> ModelId:
        commit, plain = self.upload(namespace, **kw)  # type: ignore[arg-type]
        model_hash = hash_with_hotkey(plain, hotkey) if salted else plain
        model_id = ModelId(namespace, "ft", commit, model_hash, competition)
        self.commit(hotkey, model_id.to_compressed_str())
        return model_id

    def sync(self, hotkey: str) -> SyncResult:
        return self.updater.sync(hotkey, self.chain.commitment(hotkey), self.chain.current_block())

    def leftovers(self) -> list[Path]:
        return list(self.store.root.glob(f"{TEMP_PREFIX}*"))


@pytest.fixture
def net(tmp_path: Path) -> Net:
    return Net(tmp_path)


def test_good_models_plain_and_salted_hash(net: Net) -> None:
    plain_id = net.publish("hk-a", "alice")
    salted_id = net.publish("hk-b", "bob", salted=True, weights=b"v" * 80)
    net.chain.advance(MIN_AGE)
    for hotkey, model_id in (("hk-a", plain_id), ("hk-b", salted_id)):
        result = net.sync(hotkey)
        assert (result.outcome, result.model_id, result.fetched) == ("ok", model_id, True)
        record = net.tracker.get(hotkey)
        assert record is not None and record.status == "ok" and record.params == PARAMS
        folder = net.store.check(hotkey, model_id)
        assert record.model_hash == hash_directory(folder)
        assert (folder / "model.safetensors").is_file()
    assert net.tracker.get("hk-b").model_hash != salted_id.hash  # type: ignore[union-attr]
    assert set(net.tracker.models_for("local")) == {"hk-a", "hk-b"}
    assert net.leftovers() == []


def test_unchanged_commitment_is_not_downloaded_again(net: Net) -> None:
    net.publish("hk-a", "alice")
    net.chain.advance(MIN_AGE)
    assert net.sync("hk-a").outcome == "ok"
    assert net.sync("hk-a").outcome == "unchanged"
    assert [r.outcome for r in net.updater.sync_all(net.chain.current_block())] == ["unchanged"]
    assert net.hub.calls == Counter({"repo_info": 1, "download": 1})


def test_new_commitment_replaces_the_model(net: Net) -> None:
    first = net.publish("hk-a", "alice")
    net.chain.advance(MIN_AGE)
    assert net.sync("hk-a").outcome == "ok"
    net.tracker.record_evaluation("hk-a", {"step": 1, "weight": 0.5})
    second = net.publish("hk-a", "alice", weights=b"new" * 30)
    # the verified model stays until the new one is old enough to be judged (taoverse's rule)
    held = net.sync("hk-a")
    assert (held.outcome, held.reason, held.model_id) == ("deferred", "eval_delay", second)
    record = net.tracker.get("hk-a")
    assert record is not None and record.metadata is not None and record.metadata.id == first
    assert net.hub.calls["download"] == 1
    net.chain.advance(MIN_AGE)
    assert net.sync("hk-a").outcome == "ok"
    record = net.tracker.get("hk-a")
    assert record is not None and record.metadata is not None
    assert record.metadata.id == second != first and record.evaluations == ()
    assert net.tracker.referenced() == {"hk-a": second}


def test_malformed_commitments_are_misconfigured(net: Net, caplog: pytest.LogCaptureFixture) -> None:
    net.commit("hk-a", "not a commitment")
    net.commit("hk-b", "alice:ft:None:abc:local")
    net.commit("hk-c", "alice:ft:abc123:None:local")
    net.chain.advance(MIN_AGE)
    with caplog.at_level(logging.INFO, logger="model.updater"):
        results = {h: net.sync(h) for h in ("hk-a", "hk-b", "hk-c")}
    assert {h: (r.outcome, r.reason) for h, r in results.items()} == {
        "hk-a": ("misconfigured", "parse"),
        "hk-b": ("misconfigured", "no_commit"),
        "hk-c": ("misconfigured", "no_hash"),
    }
    assert "hk-a" in caplog.text and "parse" in caplog.text and "not a commitment" in caplog.text
    record = net.tracker.get("hk-a")
    assert record is not None and record.metadata is None and "fields" in record.message
    assert net.sync("hk-a").outcome == "unchanged"
    assert net.hub.calls == Counter()
    net.commit("hk-a", "still:not:valid")  # a new (still bad) commitment is looked at again
    assert net.sync("hk-a").outcome == "misconfigured"


def test_unknown_competition_is_rejected(net: Net) -> None:
    net.publish("hk-a", "alice", competition="nope")
    net.chain.advance(MIN_AGE)
    result = net.sync("hk-a")
    assert (result.outcome, result.reason) == ("rejected", "competition")
    assert net.hub.calls == Counter()


def test_competition_that_starts_later_is_rechecked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    local = LOCALNET_SCHEDULE[0].competitions[0]
    later = ScheduleEntry(
        50,
        (
            dataclasses.replace(local, reward_share=0.5),
            dataclasses.replace(local, id="later", reward_share=0.5),
        ),
    )
    net = Net(tmp_path, schedule=(*LOCALNET_SCHEDULE, later))
    net.publish("hk-a", "alice", competition="later")
    net.chain.advance(MIN_AGE)
    with caplog.at_level(logging.DEBUG, logger="model.updater"):
        assert net.sync("hk-a").outcome == "rejected"
        assert net.sync("hk-a").outcome == "rejected"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warnings) == 1
        and "hk-a" in warnings[0].getMessage()
        and "competition" in warnings[0].getMessage()
    )
    assert net.hub.calls == Counter()
    net.chain.advance(50)
    assert net.sync("hk-a").outcome == "ok"
    assert set(net.tracker.models_for("later")) == {"hk-a"}


def test_a_model_is_downloaded_in_the_block_it_is_committed(tmp_path: Path) -> None:
    net = Net(tmp_path)  # no age gate: the validator applies the evaluation delay
    model_id = net.publish("hk-a", "alice")
    assert net.sync("hk-a").outcome == "ok"
    assert net.tracker.models_for("local")["hk-a"].metadata.id == model_id  # type: ignore[union-attr]


def test_private_repo_is_not_found_and_retried_with_backoff(net: Net) -> None:
    """A private and a missing repository look alike: a publish that failed before ``make_public`` may
    still fix it, so "not found" is a failure with backoff, never a final verdict."""
    model_id = net.publish("hk-a", "alice", public=False)
    net.chain.advance(MIN_AGE)
    result = net.sync("hk-a")
    assert (result.outcome, result.reason) == ("failed", "not_found")
    assert net.hub.calls["download"] == 0 and net.store.hotkeys() == []
    assert net.sync("hk-a").outcome == "backoff"
    LocalHub(net.tmp / "hub", user="alice").make_public("alice/ft")
    net.clock.now += 61
    assert net.sync("hk-a").outcome == "ok"
    assert net.store.check("hk-a", model_id).is_dir()


def test_hash_mismatch_is_rejected_and_nothing_is_kept(net: Net) -> None:
    commit, _ = net.upload("alice")
    _, other_hash = net.upload("bob", weights=b"something else")
    net.commit("hk-a", ModelId("alice", "ft", commit, other_hash, "local").to_compressed_str())
    net.chain.advance(MIN_AGE)
    result = net.sync("hk-a")
    assert (result.outcome, result.reason) == ("rejected", "hash_mismatch")
    assert net.store.hotkeys() == [] and net.leftovers() == []
    assert net.checker.folders == []
    assert net.sync("hk-a").outcome == "unchanged"


def test_checker_rejection_before_download(net: Net) -> None:
    net.checker.repo_error = ModelRejectedError("too_large", "repository is over the limit")
    net.publish("hk-a", "alice")
    net.chain.advance(MIN_AGE)
    result = net.sync("hk-a")
    assert (result.outcome, result.reason) == ("rejected", "too_large")
    assert net.hub.calls["download"] == 0 and len(net.checker.repos) == 1
    assert net.store.hotkeys() == [] and net.leftovers() == []


def test_checker_rejection_of_the_folder_deletes_it(net: Net) -> None:
    net.checker.folder_error = ModelRejectedError("too_many_params", "model is too big")
    model_id = net.publish("hk-a", "alice")
    net.chain.advance(MIN_AGE)
    result = net.sync("hk-a")
    assert (result.outcome, result.reason, result.message) == (
        "rejected",
        "too_many_params",
        "model is too big",
    )
    assert len(net.checker.folders) == 1 and not net.checker.folders[0].exists()
    assert not net.store.model_dir("hk-a", model_id).exists() and net.leftovers() == []


def test_hub_failure_is_retried_with_backoff(net: Net) -> None:
    net.publish("hk-a", "alice")
    net.chain.advance(MIN_AGE)
    net.hub.failures = [HubError("hub is down")] * 2
    result = net.sync("hk-a")
    assert (result.outcome, result.reason) == ("failed", "hub")
    assert net.hub.calls["download"] == 2  # attempts=2, each into a fresh temporary folder
    assert net.leftovers() == [] and net.tracker.models_for("local") == {}
    assert net.sync("hk-a").outcome == "backoff"
    assert net.hub.calls["download"] == 2
    net.clock.now += 61
    net.hub.failures = [HubError("still down")] * 2
    assert net.sync("hk-a").outcome == "failed"
    record = net.tracker.get("hk-a")
    assert record is not None and record.failures == 2 and record.retry_at == net.clock.now + 120
    net.clock.now += 121
    assert net.sync("hk-a").outcome == "ok"
    assert net.tracker.get("hk-a").failures == 0  # type: ignore[union-attr]


def test_download_timeout_is_a_transient_failure(tmp_path: Path) -> None:
    net = Net(tmp_path, attempts=1, download_timeout_s=0.05)
    net.publish("hk-a", "alice")
    net.chain.advance(MIN_AGE)
    net.hub.delay_s = 0.3
    result = net.sync("hk-a")
    assert (result.outcome, result.reason) == ("failed", "hub") and "did not finish" in result.message
    assert not net.store.model_dir("hk-a", net.tracker.get("hk-a").metadata.id).exists()  # type: ignore[union-attr]


def test_copier_with_plain_hash_is_a_separate_model(net: Net) -> None:
    original = net.publish("hk-orig", "alice")
    net.commit("hk-copy", original.to_compressed_str())
    net.chain.advance(MIN_AGE)
    assert net.sync("hk-orig").outcome == "ok" and net.sync("hk-copy").outcome == "ok"
    orig, copy = net.tracker.get("hk-orig"), net.tracker.get("hk-copy")
    assert orig is not None and copy is not None and orig.model_hash == copy.model_hash
    assert net.store.check("hk-copy", original).is_dir()  # the validator dedupes by hash later


def test_copier_of_a_salted_hash_is_rejected(net: Net) -> None:
    original = net.publish("hk-orig", "alice", salted=True)
    net.commit("hk-copy", original.to_compressed_str())
    net.chain.advance(MIN_AGE)
    assert net.sync("hk-orig").outcome == "ok"
    result = net.sync("hk-copy")
    assert (result.outcome, result.reason) == ("rejected", "hash_mismatch")
    assert net.store.hotkeys() == ["hk-orig"]


class CrashingChecker(FakeChecker):
    def check_repo(self, info: RepoInfo, competition: Competition) -> None:
        if info.repo_id.startswith("crash/"):
            raise RuntimeError("bug in a check")
        super().check_repo(info, competition)


def test_sync_all_isolates_failures_bounds_downloads_and_forgets(tmp_path: Path) -> None:
    # one hotkey's unexpected error must not stop the others
    net = Net(tmp_path, CrashingChecker(), max_downloads=2)  # the crash is a fetch too
    net.tracker.put(ModelRecord("hk-gone", "rejected", reason="hash_mismatch"))
    net.publish("hk-1", "crash")
    net.commit("hk-2", "garbage")
    net.publish("hk-3", "carol")
    net.publish("hk-4", "dave")
    net.chain.register("hk-5")  # registered, never committed
    net.chain.advance(MIN_AGE)
    block = net.chain.current_block()
    first = {r.hotkey: r.outcome for r in net.updater.sync_all(block)}
    assert first == {
        "hk-1": "failed",
        "hk-2": "misconfigured",
        "hk-3": "ok",
        "hk-4": "deferred",
        "hk-5": "no_commitment",
    }
    assert net.tracker.get("hk-gone") is None
    second = {r.hotkey: r.outcome for r in net.updater.sync_all(block)}
    assert second["hk-4"] == "ok" and second["hk-3"] == "unchanged"
    assert set(net.tracker.models_for("local")) == {"hk-3", "hk-4"}


def test_stale_partial_downloads_are_removed_at_start(tmp_path: Path) -> None:
    stale = tmp_path / "store" / f"{TEMP_PREFIX}crashed"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "model.safetensors").write_bytes(b"partial")
    net = Net(tmp_path)
    assert not stale.exists() and net.store.hotkeys() == []


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Net(tmp_path, attempts=0)
    with pytest.raises(ValueError):
        Net(tmp_path, download_timeout_s=0)
    with pytest.raises(ValueError):
        Net(tmp_path, max_store_bytes=-1)
    with pytest.raises(ValueError):
        Net(tmp_path, temp_grace_s=-1)


def test_weights_hash_is_recorded_and_ignores_non_weight_files(net: Net) -> None:
    net.publish("hk-orig", "alice")
    net.publish("hk-copy", "bob", config='{"architectures": ["LlamaForCausalLM"], "mine": 1}')
    net.chain.advance(MIN_AGE)
    assert net.sync("hk-orig").outcome == "ok" and net.sync("hk-copy").outcome == "ok"
    orig, copy = net.tracker.get("hk-orig"), net.tracker.get("hk-copy")
    assert orig is not None and copy is not None and orig.metadata is not None
    assert orig.model_hash != copy.model_hash
    folder = net.store.check("hk-orig", orig.metadata.id)
    assert orig.weights_hash == copy.weights_hash == hash_weights(folder)


class ExplodingChecker(FakeChecker):
    def check_folder(self, path: Path, competition: Competition, *, scan: object = None) -> int:
        super().check_folder(path, competition)
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")


def test_unexpected_error_is_a_failure_with_backoff(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = Net(tmp_path, ExplodingChecker())
    net.publish("hk-a", "alice")
    net.chain.advance(MIN_AGE)
    with caplog.at_level(logging.WARNING, logger="model.updater"):
        (result,) = net.updater.sync_all(net.chain.current_block())
    assert (result.outcome, result.reason, result.fetched) == ("failed", "internal", True)
    assert "RecursionError" in result.message
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1 and "hk-a" in tracebacks[0].getMessage()
    record = net.tracker.get("hk-a")
    assert record is not None and (record.status, record.reason, record.failures) == ("failed", "internal", 1)
    assert record.retry_at == net.clock.now + 60
    assert net.leftovers() == [] and net.store.hotkeys() == []
    assert [r.outcome for r in net.updater.sync_all(net.chain.current_block())] == ["backoff"]
    assert net.hub.calls["download"] == 1
    net.clock.now += 61
    assert net.sync("hk-a").outcome == "failed" and net.tracker.get("hk-a").failures == 2  # type: ignore[union-attr]
    assert net.hub.calls["download"] == 2


class LateHub(CountingHub):
    """Downloads that finish after the updater stopped waiting, still writing into ``dest``."""

    def __init__(self, inner: LocalHub) -> None:
        super().__init__(inner)
        self.release = threading.Event()
        self.finished = threading.Event()

    def download(
        self, repo_id: str, *, commit: str, dest: Path, allow_patterns: Sequence[str] | None = None
    ) -> Path:
        self.calls["download"] += 1
        try:
            self.release.wait(10)
            return self.inner.download(repo_id, commit=commit, dest=dest, allow_patterns=allow_patterns)
        finally:
            self.finished.set()


def test_abandoned_download_is_kept_in_flight_then_removes_itself(tmp_path: Path) -> None:
    net = Net(tmp_path, download_timeout_s=0.3, temp_grace_s=0.0)
    hub = net.hub = net.updater._hub = LateHub(net.hub.inner)  # type: ignore[assignment]
    net.publish("hk-a", "alice")
    net.chain.advance(MIN_AGE)
    (result,) = net.updater.sync_all(net.chain.current_block())
    assert (result.outcome, result.reason) == ("failed", "hub") and "did not finish" in result.message
    assert hub.calls["download"] == 1  # the backstop timeout is not retried: the transfer still runs
    (temp,) = net.leftovers()
    net.clock.now += 61  # backoff over: the next pass retries, but keeps the folder still in flight
    hub.release.set()  # the first transfer writes its files now; the retry downloads at once
    assert [r.outcome for r in net.updater.sync_all(net.chain.current_block())] == ["ok"]
    assert hub.finished.wait(5)
    deadline = time.monotonic() + 5
    while temp.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not temp.exists() and net.leftovers() == []
    assert net.updater._in_flight == set()


def test_in_flight_download_survives_a_pass_and_is_not_counted(tmp_path: Path) -> None:
    net = Net(tmp_path, download_timeout_s=0.3, temp_grace_s=0.0)
    hub = net.hub = net.updater._hub = LateHub(net.hub.inner)  # type: ignore[assignment]
    net.publish("hk-a", "alice")
    net.chain.advance(MIN_AGE)
    assert net.sync("hk-a").outcome == "failed"
    (temp,) = net.leftovers()
    (temp / "partial.safetensors").write_bytes(b"x" * 1000)  # what the running transfer wrote so far
    assert net.store.size() == 0
    assert [r.outcome for r in net.updater.sync_all(net.chain.current_block())] == ["backoff"]
    assert temp.is_dir()  # in flight: never swept, whatever its age
    hub.release.set()
    assert hub.finished.wait(5)
    deadline = time.monotonic() + 5
    while temp.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not temp.exists()


def test_orphaned_temp_folders_are_swept_after_the_grace(tmp_path: Path) -> None:
    net = Net(tmp_path, temp_grace_s=600.0)
    old, young = net.store.new_temp_dir(), net.store.new_temp_dir()
    (old / "model.safetensors").write_bytes(b"left by a hub's abandoned attempt")
    then = time.time() - 601
    os.utime(old, (then, then))
    net.updater.sync_all(net.chain.current_block())
    assert not old.exists() and young.is_dir()


@pytest.mark.parametrize("commit", ["main", "v1.0", "A" * 40, "a" * 39, "g" * 40])
def test_commit_that_is_not_a_pinned_hex_id_is_misconfigured(net: Net, commit: str) -> None:
    _, plain = net.upload("alice")
    net.commit("hk-a", ModelId("alice", "ft", commit, plain, "local").to_compressed_str())
    net.chain.advance(MIN_AGE)
    result = net.sync("hk-a")
    assert (result.outcome, result.reason, result.fetched) == ("misconfigured", "commit", False)
    assert net.hub.calls == Counter()
    assert net.sync("hk-a").outcome == "unchanged"


def test_download_that_would_overfill_the_store_waits_for_the_cleaner(tmp_path: Path) -> None:
    net = Net(tmp_path, max_store_bytes=600)
    cleaner = ModelCleaner(net.store, net.tracker, grace_s=3600, max_bytes=600)
    net.publish("hk-a", "alice", weights=b"a" * 80)
    net.chain.advance(MIN_AGE)
    assert net.sync("hk-a").outcome == "ok"
    net.publish("hk-b", "bob", weights=b"b" * 80)
    net.chain.advance(MIN_AGE)
    first = {r.hotkey: r for r in net.updater.sync_all(net.chain.current_block())}
    assert (first["hk-b"].outcome, first["hk-b"].reason, first["hk-b"].fetched) == ("deferred", "disk", True)
    assert net.hub.calls["download"] == 1 and net.tracker.get("hk-b") is None
    assert 0 < net.store.wanted_bytes <= 600 and net.store.size() + net.store.wanted_bytes > 600
    assert cleaner.clean() == []  # hk-a was never evaluated: it keeps its place
    net.tracker.record_evaluation("hk-a", {"step": 1, "weight": 0.0})
    assert cleaner.clean() == [net.store.model_dir("hk-a", net.tracker.get("hk-a").metadata.id)]  # type: ignore[union-attr]
    second = {r.hotkey: r.outcome for r in net.updater.sync_all(net.chain.current_block())}
    assert second == {"hk-a": "deferred", "hk-b": "ok"} and net.store.wanted_bytes == 0  # hk-a waits for room
    assert net.hub.calls["download"] == 2


def test_download_larger_than_the_whole_budget_asks_for_no_room(tmp_path: Path) -> None:
    net = Net(tmp_path, max_store_bytes=50)
    net.publish("hk-a", "alice", weights=b"a" * 80)
    net.chain.advance(MIN_AGE)
    result = net.sync("hk-a")
    assert (result.outcome, result.reason) == ("deferred", "disk") and net.store.wanted_bytes == 0


# --- the model file set (issue 11 item 6) ----------------------------------------------------------------


def _seed_layout(folder: Path, marker: Path) -> Path:
    """What a seed miner's ``push_to_hub`` leaves in a repository: the model and tokenizer files, plus a
    ``.gitattributes``, a README and a pickled ``training_args.bin`` that nothing loads."""
    from tests.finetune.zoo import build_valid, pickle_payload

    build_valid(folder)
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n# my model\n")
    (folder / "training_args.bin").write_bytes(pickle_payload(marker) + b"\0" * 100_000)
    return folder


def _hand_hash(folder: Path, names: list[str]) -> str:
    outer = hashlib.sha256()
    for name in sorted(names):
        digest = hashlib.sha256((folder / name).read_bytes()).digest()
        outer.update(base64.b64encode(digest))
    return base64.b64encode(outer.digest()).decode()


def _real_checker_net(tmp_path: Path, max_repo_bytes: int | None = None) -> Net:
    from finetune.checks import ModelChecker

    local = LOCALNET_SCHEDULE[0].competitions[0]
    if max_repo_bytes is not None:
        local = dataclasses.replace(local, max_repo_bytes=max_repo_bytes)
    return Net(tmp_path, ModelChecker(), schedule=(ScheduleEntry(0, (local,)),))  # type: ignore[arg-type]


def test_a_seed_miners_repository_passes_with_the_seeds_hash(tmp_path: Path) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    source = _seed_layout(tmp_path / "seed", marker)
    model_set = sorted(p.name for p in source.iterdir() if is_model_file(p.name))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= set(model_set)
    set_bytes = sum((source / n).stat().st_size for n in model_set)
    total_bytes = sum(p.stat().st_size for p in source.iterdir())
    # the repository as a whole is over the size limit; the model files alone are not
    net = _real_checker_net(tmp_path, max_repo_bytes=set_bytes + 10)
    assert total_bytes > set_bytes + 10
    hub = LocalHub(tmp_path / "hub", user="seed")
    hub.create_repo("seed/ft")
    commit = hub.upload_folder("seed/ft", source)
    hub.make_public("seed/ft")
    seed_hash = _hand_hash(source, model_set)
    salted = hash_with_hotkey(seed_hash, "hk-salted")
    for hotkey, committed in (("hk-plain", seed_hash), ("hk-salted", salted)):
        net.commit(hotkey, ModelId("seed", "ft", commit, committed, "local").to_compressed_str())
        result = net.sync(hotkey)
        assert (result.outcome, result.reason) == ("ok", ""), result.message
        record = net.tracker.get(hotkey)
        assert record is not None and record.model_hash == seed_hash
        folder = net.store.check(hotkey, ModelId("seed", "ft", commit, committed, "local"))
        assert sorted(p.name for p in folder.iterdir()) == model_set  # the extra files never reached the disk
    assert net.hub.patterns == [MODEL_FILE_PATTERNS, MODEL_FILE_PATTERNS]
    assert not marker.exists() and net.leftovers() == []


def test_a_repository_with_only_pickle_weights_is_refused_before_download(tmp_path: Path) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    source = _seed_layout(tmp_path / "seed", marker)
    (source / "model.safetensors").rename(source / "pytorch_model.bin")
    net = _real_checker_net(tmp_path)
    hub = LocalHub(tmp_path / "hub", user="seed")
    hub.create_repo("seed/ft")
    commit = hub.upload_folder("seed/ft", source)
    hub.make_public("seed/ft")
    net.commit("hk-a", ModelId("seed", "ft", commit, hash_directory(source), "local").to_compressed_str())
    result = net.sync("hk-a")
    assert (result.outcome, result.reason) == ("rejected", "no_weights")
    assert "pytorch_model.bin" in result.message and "safetensors" in result.message
    assert net.hub.calls["download"] == 0 and net.store.hotkeys() == [] and not marker.exists()


class ExtraServingHub(CountingHub):
    """A hub that ignores the allow patterns and serves every file of the commit."""

    def download(
        self, repo_id: str, *, commit: str, dest: Path, allow_patterns: Sequence[str] | None = None
    ) -> Path:
        self.calls["download"] += 1
        return self.inner.download(repo_id, commit=commit, dest=dest)


def test_files_a_hub_serves_beyond_the_model_file_set_are_not_hashed(tmp_path: Path) -> None:
    net = Net(tmp_path)
    net.hub = net.updater._hub = ExtraServingHub(net.hub.inner)  # type: ignore[assignment]
    model_id = net.publish("hk-a", "alice", readme="not part of the model")
    commit, _ = model_id.commit, model_id.hash
    source = net.tmp / "src" / "1"
    plain = _hand_hash(source, ["config.json", "model.safetensors"])
    net.commit("hk-b", ModelId("alice", "ft", commit, plain, "local").to_compressed_str())
    assert net.sync("hk-b").outcome == "ok"
    assert sorted(p.name for p in net.store.model_dir("hk-b", model_id).iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


# --- a copy is a copy however it is saved (issue 12 item 7) ------------------------------------------------


def test_a_copy_resaved_with_other_metadata_shares_the_weights_hash(net: Net) -> None:
    leader = net.publish("hk-lead", "alice")
    assert net.sync("hk-lead").outcome == "ok"
    served = net.store.check("hk-lead", leader)
    tensors = load((served / "model.safetensors").read_bytes())
    copy = net.tmp / "copy"
    copy.mkdir()
    (copy / "config.json").write_bytes((served / "config.json").read_bytes())
    (copy / "model.safetensors").write_bytes(save(tensors, metadata={"format": "pt", "author": "me"}))
    hub = LocalHub(net.tmp / "hub", user="mallory")
    hub.create_repo("mallory/ft")
    commit = hub.upload_folder("mallory/ft", copy)
    hub.make_public("mallory/ft")
    net.commit("hk-copy", ModelId("mallory", "ft", commit, hash_directory(copy), "local").to_compressed_str())
    assert net.sync("hk-copy").outcome == "ok"
    lead, copied = net.tracker.get("hk-lead"), net.tracker.get("hk-copy")
    assert lead is not None and copied is not None
    assert lead.model_hash != copied.model_hash  # the bytes differ (one metadata key) ...
    assert lead.weights_hash == copied.weights_hash == hash_weights(copy)  # ... the tensors do not


def test_a_record_without_a_tensor_hash_gets_one_from_the_stored_folder(net: Net) -> None:
    model_id = net.publish("hk-a", "alice")
    assert net.sync("hk-a").outcome == "ok"
    record = net.tracker.get("hk-a")
    assert record is not None and record.weights_hash is not None
    net.tracker.put(dataclasses.replace(record, weights_hash=None))  # as loaded from an older tracker
    assert net.sync("hk-a").outcome == "unchanged" and net.hub.calls["download"] == 1
    assert net.tracker.get("hk-a").weights_hash == record.weights_hash  # type: ignore[union-attr]
    assert record.weights_hash == hash_weights(net.store.check("hk-a", model_id))


# --- the store heals (issue 12 item 3) -------------------------------------------------------------------


def test_verify_stored_detects_a_deleted_or_damaged_folder_and_requeues_it(net: Net) -> None:
    model_id = net.publish("hk-a", "alice")
    assert net.sync("hk-a").outcome == "ok"
    assert net.updater.verify_stored("hk-a") is True
    folder = net.store.check("hk-a", model_id)
    with (folder / "model.safetensors").open("r+b") as handle:  # damaged in place: truncated
        handle.truncate(100)
    assert net.updater.verify_stored("hk-a") is False
    record = net.tracker.get("hk-a")
    assert record is not None and (record.status, record.reason) == ("waiting", "damaged")
    assert not folder.exists() and net.tracker.models_for("local") == {}
    assert net.sync("hk-a").outcome == "ok" and net.hub.calls["download"] == 2
    assert net.updater.verify_stored("hk-a") is True
    assert hash_directory(folder) == model_id.hash
    assert net.updater.verify_stored("hk-unknown") is False


def test_a_deleted_store_folder_is_downloaded_again_by_the_next_pass(net: Net) -> None:
    model_id = net.publish("hk-a", "alice")
    assert [r.outcome for r in net.updater.sync_all(net.chain.current_block())] == ["ok"]
    shutil.rmtree(net.store.hotkey_dir("hk-a"))
    assert [r.outcome for r in net.updater.sync_all(net.chain.current_block())] == ["ok"]
    assert net.store.check("hk-a", model_id).is_dir() and net.hub.calls["download"] == 2
    assert [r.outcome for r in net.updater.sync_all(net.chain.current_block())] == ["unchanged"]



# --- evicted is not rejected; a full disk is a disk problem (issue 12 item 10) ------------------------------


def test_an_evicted_model_comes_back_when_there_is_room(tmp_path: Path) -> None:
    net = Net(tmp_path, max_store_bytes=600)
    cleaner = ModelCleaner(net.store, net.tracker, grace_s=3600, max_bytes=600)
    first = net.publish("hk-a", "alice", weights=b"a" * 80)
    assert net.sync("hk-a").outcome == "ok"
    net.tracker.record_evaluation("hk-a", {"step": 1, "weight": 0.0})
    net.publish("hk-b", "bob", weights=b"b" * 80)
    assert [r.outcome for r in net.updater.sync_all(net.chain.current_block())] == ["unchanged", "deferred"]
    assert len(cleaner.clean()) == 1  # hk-a makes room for the newcomer
    evicted = net.tracker.get("hk-a")
    assert evicted is not None and (evicted.status, evicted.reason) == ("waiting", "evicted")
    assert evicted.evaluations  # its history is kept: it is not a verdict on the model
    calls = net.hub.calls["repo_info"]
    outcomes = {r.hotkey: (r.outcome, r.reason) for r in net.updater.sync_all(net.chain.current_block())}
    assert outcomes == {"hk-a": ("deferred", "disk"), "hk-b": ("ok", "")}
    # waiting for room costs no hub call and asks the cleaner for nothing (it would evict hk-b for it)
    assert net.hub.calls["repo_info"] == calls + 1 and net.store.wanted_bytes == 0
    assert cleaner.clean() == []
    bigger = ModelUpdater(net.chain, net.hub, net.store, net.tracker, net.checker, schedule=LOCALNET_SCHEDULE)
    outcomes = {r.hotkey: r.outcome for r in bigger.sync_all(net.chain.current_block())}
    assert outcomes == {"hk-a": "ok", "hk-b": "unchanged"}
    assert net.store.check("hk-a", first).is_dir()


def test_a_full_local_disk_is_a_disk_failure_not_a_hub_one(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    import model.storage.hub.local_hub as local_hub

    net.publish("hk-a", "alice")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_hub, "_copy_regular", full)
    result = net.sync("hk-a")
    assert (result.outcome, result.reason) == ("failed", "disk") and "No space" in result.message
    assert net.hub.calls["download"] == 1  # not retried at once: the disk will not empty itself
    assert net.leftovers() == []
    monkeypatch.undo()
    net.clock.now += 61
    assert net.sync("hk-a").outcome == "ok"


def test_the_updater_reads_the_weights_once_for_hashes_and_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import finetune.checks as checks

    source = _seed_layout(tmp_path / "seed", tmp_path / "PAYLOAD_RAN")
    net = _real_checker_net(tmp_path)

    def no_second_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the weights were read a second time for the scan")

    monkeypatch.setattr(checks, "scan_weights", no_second_read)
    hub = LocalHub(tmp_path / "hub", user="seed")
    hub.create_repo("seed/ft")
    commit = hub.upload_folder("seed/ft", source)
    hub.make_public("seed/ft")
    names = sorted(p.name for p in source.iterdir() if is_model_file(p.name))
    net.commit("hk-a", ModelId("seed", "ft", commit, _hand_hash(source, names), "local").to_compressed_str())
    result = net.sync("hk-a")
    assert (result.outcome, result.reason) == ("ok", ""), result.message
