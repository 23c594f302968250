"""CortexSource against a fake ``wandb.Api`` whose runs return rows shaped like Cortex.t's history."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finetune.data.cortex import CortexSource, find_wandb_key
from utilities.errors import ConfigError, DataSourceError

RELEASE = threading.Event()  # set at teardown so that parked "hanging" threads finish


@pytest.fixture(autouse=True)
def _release_hanging_calls() -> Iterator[None]:
    RELEASE.clear()
    yield
    RELEASE.set()


@pytest.fixture(autouse=True)
def _no_wandb_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key from the developer's environment or ~/.netrc leaks into a test."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def row(step: int, samples: dict[int, tuple[Any, Any]], *, at: float | None = None) -> dict[str, Any]:
    """A history row as wandb returns it: flattened ``prompts.<uid>``/``responses.<uid>`` and extras."""
    when = 1.7e9 + step if at is None else at
    result: dict[str, Any] = {"_step": step, "_runtime": 100.0 + step, "_timestamp": when}
    for uid, (prompt, response) in samples.items():
        result[f"prompts.{uid}"] = prompt
        result[f"responses.{uid}"] = response
        result[f"scores.{uid}"] = 0.9
    return result


class FakeRun:
    def __init__(
        self,
        run_id: str,
        created_at: str,
        rows: list[dict[str, Any]],
        *,
        run_type: str = "validator",
        state: str = "running",
        fail: bool = False,
        hang: bool = False,
        heartbeat_at: str | None = None,
    ) -> None:
        self.id = run_id
        self.state = state
        self.created_at = created_at
        self.heartbeat_at = heartbeat_at
        self.config = {"type": run_type}
        self._rows = rows
        self._fail = fail
        self._hang = hang
        self.scans: list[dict[str, Any]] = []

    @property
    def lastHistoryStep(self) -> int:
        return max((r["_step"] for r in self._rows), default=-1)

    def scan_history(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.scans.append(kwargs)
        if self._hang:
            RELEASE.wait(30)
        if self._fail:
            raise RuntimeError(f"HTTP 500 reading history of {self.id}")
        lo, hi = kwargs["min_step"], kwargs["max_step"]
        return iter([r for r in self._rows if lo <= r["_step"] < hi])


def matches(run: FakeRun, filters: dict[str, Any]) -> bool:
    """The part of wandb's MongoDB-style run filter used here: ``$and`` of field equalities."""
    conditions = filters.get("$and", [filters])
    values = {"config.type": run.config["type"], "state": run.state}
    return all(values[key] == value for condition in conditions for key, value in condition.items())


class FakeApi:
    def __init__(self, runs: list[FakeRun], *, hang: bool = False, errors: list[BaseException] | None = None):
        self._runs = runs
        self._hang = hang
        self._errors = list(errors or [])
        self.runs_calls: list[tuple[str, dict[str, Any]]] = []
        self.factory_calls: list[dict[str, Any]] = []

    def factory(self, **kwargs: Any) -> FakeApi:
        self.factory_calls.append(kwargs)
        return self

    def runs(self, path: str, **kwargs: Any) -> Iterator[FakeRun]:
        self.runs_calls.append((path, kwargs))
        if self._hang:
            RELEASE.wait(30)
        if self._errors:
            raise self._errors.pop(0)
        runs = [r for r in self._runs if matches(r, kwargs["filters"])]
        runs.sort(key=lambda r: r.created_at, reverse=kwargs["order"].startswith("-"))
        return iter(runs)


def make_runs() -> list[FakeRun]:
    old = FakeRun("old", "2024-05-01T00:00:00", [row(3, {1: ("old q", "old a")})])
    new = FakeRun(
        "new",
        "2024-05-03T00:00:00",
        [
            row(8, {5: ("new q8", "new a8")}),
            row(9, {12: ("new q9 uid12", "new a9 uid12"), 200: ("new q9 uid200", "new a9 uid200")}),
        ],
    )
    mid = FakeRun("mid", "2024-05-02T00:00:00", [row(0, {3: ("mid q", "mid a")})])
    miner = FakeRun("miner", "2024-05-04T00:00:00", [row(0, {0: ("miner q", "miner a")})], run_type="miner")
    done = FakeRun("done", "2024-05-05T00:00:00", [row(0, {0: ("done q", "done a")})], state="finished")
    return [old, new, miner, done, mid]  # not in date order: the server's order must be asked for


def source(api: FakeApi, **options: Any) -> CortexSource:
    defaults: dict[str, Any] = {
        "api_factory": api.factory,
        "timeout_s": 2.0,
        "attempts": 2,
        "retry_wait_s": 0.01,
    }
    return CortexSource(**(defaults | options))


def test_latest_validator_runs_in_run_step_uid_order() -> None:
    api = FakeApi(make_runs())
    samples = source(api, latest_runs=2, history_steps=2).sample(100, seed=1)
    assert samples == [  # the two newest running validator runs, "new" and "mid", sorted by run id
        ("mid q", "mid a"),
        ("new q8", "new a8"),
        ("new q9 uid12", "new a9 uid12"),
        ("new q9 uid200", "new a9 uid200"),
    ]
    path, kwargs = api.runs_calls[0]
    assert path == "cortex-t/multi-modality"
    assert kwargs["filters"] == {"$and": [{"config.type": "validator"}, {"state": "running"}]}
    assert kwargs["order"] == "-created_at"  # and the finished newest run is not read, as in the seed


def test_only_the_last_history_steps_are_scanned() -> None:
    runs = make_runs()
    samples = source(FakeApi(runs), latest_runs=1, history_steps=1).sample(100, seed=1)
    assert samples == [("new q9 uid12", "new a9 uid12"), ("new q9 uid200", "new a9 uid200")]
    assert runs[1].scans == [{"min_step": 9, "max_step": 10, "page_size": 1, "use_cache": False}]


def test_api_gets_a_timeout_and_the_base_url() -> None:
    api = FakeApi(make_runs())
    source(api, timeout_s=7.5, base_url="http://wandb.internal:8080").sample(1, seed=0)
    assert api.factory_calls == [{"timeout": 5, "overrides": {"base_url": "http://wandb.internal:8080"}}]


def test_empty_unwanted_and_duplicate_samples_are_dropped() -> None:
    rows = [
        row(
            0,
            {
                0: ("", "answer"),
                1: ("question", "  "),
                2: ("question", None),
                3: ("tell me", "As an AI language model, I cannot."),
                4: ("  first  ", " kept "),
                5: ("other prompt", "kept"),  # same response as uid 4
                6: ("second", "also kept"),
            },
        )
    ]
    api = FakeApi([FakeRun("r", "2024-01-01", rows)])
    assert source(api).sample(10, seed=0) == [("first", "kept"), ("second", "also kept")]


def test_subsample_is_determined_by_the_seed_and_keeps_pool_order() -> None:
    rows = [row(0, {uid: (f"q{uid}", f"a{uid}") for uid in range(100)})]
    api = FakeApi([FakeRun("r", "2024-01-01", rows)])
    cortex = source(api)
    first, again, other = cortex.sample(10, seed=3), cortex.sample(10, seed=3), cortex.sample(10, seed=4)
    assert first == again and first != other and len(first) == 10
    assert first == sorted(first, key=lambda s: int(s[0][1:]))


def test_a_failing_run_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    runs = make_runs()
    runs[1] = FakeRun("new", "2024-05-03T00:00:00", [row(1, {1: ("x", "y")})], fail=True)
    with caplog.at_level(logging.WARNING, logger="finetune.data.cortex"):
        samples = source(FakeApi(runs), latest_runs=3).sample(100, seed=0)
    assert samples == [("mid q", "mid a"), ("old q", "old a")]
    assert "skipping run new" in caplog.text


def test_all_runs_failing_is_a_data_source_error() -> None:
    runs = [FakeRun(f"r{i}", f"2024-01-0{i + 1}", [row(0, {0: ("q", "a")})], fail=True) for i in range(3)]
    with pytest.raises(DataSourceError, match="no run history"):
        source(FakeApi(runs)).sample(10, seed=0)


def test_no_runs_or_no_usable_sample_is_a_data_source_error() -> None:
    with pytest.raises(DataSourceError, match="no validator runs"):
        source(FakeApi([])).sample(10, seed=0)
    unusable = [FakeRun("r", "2024-01-01", [row(0, {0: ("q", "I'm sorry, but no.")})])]
    with pytest.raises(DataSourceError, match="no usable sample"):
        source(FakeApi(unusable)).sample(10, seed=0)


def test_a_transient_error_is_retried() -> None:
    api = FakeApi(make_runs(), errors=[ConnectionError("reset by peer")])
    assert source(api, latest_runs=1, attempts=2).sample(1, seed=0)
    assert len(api.runs_calls) == 2


def test_a_non_transient_error_is_not_retried() -> None:
    api = FakeApi(make_runs(), errors=[ValueError("bad filter")])
    with pytest.raises(DataSourceError, match="bad filter"):
        source(api, attempts=3).sample(1, seed=0)
    assert len(api.runs_calls) == 1


def test_a_hanging_api_call_fails_within_the_timeout_bound() -> None:
    api = FakeApi(make_runs(), hang=True)
    start = time.monotonic()
    with pytest.raises(DataSourceError, match="did not finish"):
        source(api, timeout_s=0.2, attempts=2).sample(10, seed=0)
    elapsed = time.monotonic() - start
    assert len(api.runs_calls) == 2
    assert elapsed < 2 * 0.2 + 1.0


def test_a_hanging_run_is_skipped_and_the_deadline_holds() -> None:
    runs = make_runs()
    runs[1] = FakeRun("new", "2024-05-03T00:00:00", [row(1, {1: ("x", "y")})], hang=True)
    start = time.monotonic()
    samples = source(FakeApi(runs), latest_runs=3, timeout_s=0.2, attempts=1, deadline_s=5).sample(9, seed=0)
    assert samples == [("mid q", "mid a"), ("old q", "old a")]
    assert time.monotonic() - start < 1.5


def test_a_spent_deadline_stops_reading_runs() -> None:
    runs = [
        FakeRun(f"r{i}", f"2024-01-0{9 - i}", [row(0, {0: (f"q{i}", f"a{i}")})], hang=(i > 0))
        for i in range(4)
    ]
    start = time.monotonic()
    samples = source(FakeApi(runs), latest_runs=4, timeout_s=0.3, attempts=1, deadline_s=0.5).sample(
        9, seed=0
    )
    assert samples == [("q0", "a0")]
    assert time.monotonic() - start < 1.5


KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 hex characters, as wandb keys are


def test_without_a_key_the_real_source_fails_at_start() -> None:
    with pytest.raises(ConfigError, match="WANDB_API_KEY or run `wandb login`"):
        CortexSource()


def test_the_key_is_found_in_the_environment_or_netrc(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert find_wandb_key() is None
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert find_wandb_key() == KEY
    assert find_wandb_key("http://wandb.internal:8080") is None  # a key belongs to its host
    monkeypatch.setenv("WANDB_API_KEY", "from-env")
    assert find_wandb_key() == "from-env"
    api = FakeApi(make_runs())
    source(api).sample(1, seed=0)
    assert api.factory_calls[0]["api_key"] == "from-env"  # passed explicitly: wandb never prompts


def test_one_api_is_reused() -> None:
    api = FakeApi(make_runs())
    cortex = source(api, api_key=KEY)
    cortex.sample(1, seed=0)
    cortex.sample(1, seed=1)
    assert len(api.factory_calls) == 1 and len(api.runs_calls) == 2


def test_authentication_errors_are_not_retried() -> None:
    from wandb.errors import AuthenticationError, CommError

    class Refused:
        status_code = 401

    class Unauthorized(Exception):
        response = Refused()

    for error in (AuthenticationError("invalid API key"), CommError("refused", Unauthorized("401"))):
        api = FakeApi(make_runs(), errors=[error, error, error])
        with pytest.raises(DataSourceError, match="wandb refused the key"):
            source(api, attempts=3, api_key=KEY).sample(1, seed=0)
        assert len(api.runs_calls) == 1


def test_the_real_wandb_api_with_an_unverifiable_key_is_not_retried() -> None:
    import socket

    import wandb

    from finetune.data import cortex as cortex_module

    with socket.socket() as probe:  # a local port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    built: list[dict[str, Any]] = []

    def real_api(**kwargs: Any) -> Any:
        built.append(kwargs)
        return wandb.Api(**kwargs)

    cortex = CortexSource(
        api_factory=real_api,
        transient_errors=cortex_module._wandb_transient_errors(),  # CommError is transient: yet not retried
        api_key=KEY,
        base_url=f"http://127.0.0.1:{port}",
        timeout_s=30,
        request_timeout_s=1,
        attempts=3,
        retry_wait_s=0.01,
    )
    with pytest.raises(DataSourceError, match="wandb refused the key") as info:
        cortex.sample(1, seed=0)
    assert type(info.value.__cause__).__name__ == "AuthenticationError"
    assert len(built) == 1 and built[0]["api_key"] == KEY and built[0]["timeout"] == 1


# ---- a draw fixed by the sync block: cut-off, look-back, stable keys, hash ranks ---------------------
T = 1_750_000_000.0  # the sync block's time (2025-06-15T15:06:40Z)


def iso(unix: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(unix, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def logged(run_id: str, steps: range, *, first_at: float, every_s: float = 12.0) -> list[dict[str, Any]]:
    """A run's rows: 40 samples a step, ``every_s`` apart from ``first_at``."""
    return [
        row(
            step,
            {uid: (f"{run_id} q{step}.{uid}", f"{run_id} a{step}.{uid}") for uid in range(0, 200, 5)},
            at=first_at + (step - steps.start) * every_s,
        )
        for step in steps
    ]


def window_runs(*, later: bool) -> list[FakeRun]:
    """Three validator runs as read at the sync block, or (``later``) a while after it: each run has
    logged 60 more steps since, and two runs were started after the cut-off."""
    now = T + 720.0 if later else T
    runs = []
    for run_id, age_s in (("a1", 3 * 3600.0), ("b2", 2 * 3600.0), ("c3", 1800.0)):
        before = int(age_s // 12)  # steps logged from the run's start up to the cut-off
        steps = range(0, before + (60 if later else 0))
        rows = logged(run_id, steps, first_at=T - age_s + 6.0)
        runs.append(FakeRun(run_id, iso(T - age_s), rows, heartbeat_at=iso(now)))
    if later:  # c3 has stopped since the cut-off: it still counts
        runs[2].state, runs[2].heartbeat_at = "finished", iso(T + 300.0)
    # the newest run created before the cut-off stopped 1300 s before it: it takes no slot
    old_rows = logged("d4", range(0, 10), first_at=T - 1500.0, every_s=10.0)
    runs.append(FakeRun("d4", iso(T - 1500.0), old_rows, state="crashed", heartbeat_at=iso(T - 1300.0)))
    if later:
        for run_id in ("00new", "zz-new"):  # newest first by creation: they would take latest_runs' slots
            rows = logged(run_id, range(0, 20), first_at=T + 66.0)
            runs.append(FakeRun(run_id, iso(T + 60.0), rows, heartbeat_at=iso(now)))
    return runs


def window_source(runs: list[FakeRun]) -> CortexSource:
    return source(FakeApi(runs), latest_runs=3, history_steps=10, lookback_s=1200.0, scan_page_steps=16)


def test_reads_later_in_the_sync_window_draw_the_same_samples() -> None:
    at_sync = window_source(window_runs(later=False)).sample(50, seed=7, cutoff=T)
    later_runs = window_runs(later=True)
    later = window_source(later_runs).sample(50, seed=7, cutoff=T)
    assert len(at_sync) == 50 and later == at_sync
    assert window_source(window_runs(later=True)).sample(50, seed=8, cutoff=T) != at_sync  # the seed decides
    # only rows at or before the cut-off and within the look-back, the 10 newest of each run
    pool = window_source(window_runs(later=True)).read_pool(cutoff=T)
    assert len(pool) == 3 * 10 * 40
    assert {p.split()[0] for p, _ in pool} == {"a1", "b2", "c3"}
    a1_steps = {int(p.split()[1][1:].split(".")[0]) for p, _ in pool if p.startswith("a1")}
    assert a1_steps == set(range(890, 900))  # a1 logged steps 0..899 up to the cut-off
    # 60 steps logged since the cut-off are skipped by reading pages backwards, not the whole run
    a1 = next(r for r in later_runs if r.id == "a1")
    assert [scan["min_step"] for scan in a1.scans] == [944, 928, 912, 896, 880]


def test_a_late_row_in_the_window_changes_only_its_own_picks() -> None:
    runs = window_runs(later=False)
    first = window_source(runs).sample(50, seed=11, cutoff=T)
    b2 = runs[1]
    late = row(600, {uid: (f"late q{uid}", f"late a{uid}") for uid in range(100)}, at=T - 1.0)
    b2._rows.append(late)  # logged before the cut-off, visible only to the second read
    second = window_source(runs).sample(50, seed=11, cutoff=T)
    gained, lost = set(second) - set(first), set(first) - set(second)
    assert gained and all(p.startswith("late") for p, _ in gained)  # a hash rank, not a position
    assert len(lost) == len(gained)  # each late pick displaced one pick, no others moved
    assert len(set(first) & set(second)) == 50 - len(gained)


def test_without_a_cutoff_a_new_run_changes_only_its_own_picks() -> None:
    old = FakeRun("r-old", "2024-01-01", [row(0, {uid: (f"q{uid}", f"a{uid}") for uid in range(200)})])
    first = source(FakeApi([old])).sample(100, seed=12345)
    new = FakeRun("r-new", "2024-01-02", [row(0, {uid: (f"new q{uid}", f"new a{uid}") for uid in range(3)})])
    second = source(FakeApi([old, new])).sample(100, seed=12345)
    assert len(set(first) & set(second)) >= 97  # by position, 18 of 100 were left (review finding 4)


def test_rows_older_than_the_look_back_or_without_a_time_are_not_drawn() -> None:
    rows = [
        row(0, {0: ("stale q", "stale a")}, at=T - 1300.0),
        row(1, {0: ("kept q", "kept a")}, at=T - 1000.0),
        {"_step": 2, "prompts.0": "no time q", "responses.0": "no time a"},
        row(3, {0: ("after q", "after a")}, at=T + 1.0),
    ]
    run = FakeRun("r", iso(T - 2000.0), rows)
    assert window_source([run]).sample(10, seed=0, cutoff=T) == [("kept q", "kept a")]
    with pytest.raises(DataSourceError, match="no usable sample"):
        window_source([run]).sample(10, seed=0, cutoff=T - 1301.0)  # nothing logged in that window
    with pytest.raises(ValueError, match="finite"):
        window_source([run]).sample(10, seed=0, cutoff=float("nan"))
