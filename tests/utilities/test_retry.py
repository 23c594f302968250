from __future__ import annotations

import threading
import time

import pytest

from utilities.retry import CallTimeoutError, call_with_timeout, retry, retry_call


def test_call_with_timeout_returns_value_and_propagates_errors() -> None:
    assert call_with_timeout(lambda: 42, timeout_s=1, what="answer") == 42
    with pytest.raises(KeyError):
        call_with_timeout(lambda: {}["missing"], timeout_s=1, what="lookup")


def test_call_with_timeout_stops_waiting_for_a_hung_call() -> None:
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(CallTimeoutError, match="hang"):
        call_with_timeout(lambda: release.wait(10), timeout_s=0.1, what="hang")
    assert time.monotonic() - started < 2
    release.set()


def test_retry_call_retries_transient_errors_then_succeeds() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    assert retry_call(flaky, what="flaky", timeout_s=1, attempts=3, wait_s=0.001) == "ok"
    assert len(calls) == 3


def test_retry_call_gives_up_after_attempts_and_skips_other_errors() -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        retry_call(down, what="down", timeout_s=1, attempts=2, wait_s=0.001)
    assert len(calls) == 2

    def bad() -> None:
        calls.append(1)
        raise ValueError("not transient")

    calls.clear()
    with pytest.raises(ValueError):
        retry_call(bad, what="bad", timeout_s=1, attempts=3, wait_s=0.001)
    assert len(calls) == 1


def test_retry_waits_by_doubling_up_to_the_cap_through_the_given_sleep() -> None:
    waits: list[float] = []
    calls = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError, match="down"):
        retry(down, what="down", attempts=5, retry_on=(ConnectionError,), wait_s=2.0, max_wait_s=5.0,
              sleep=waits.append)  # fmt: skip
    assert len(calls) == 5 and waits == [2.0, 4.0, 5.0, 5.0]  # no wait after the last attempt


def test_retry_returns_the_first_success_and_never_retries_other_errors() -> None:
    waits: list[float] = []
    outcomes: list[BaseException | str] = [TimeoutError("slow"), "ok"]

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    assert retry(flaky, what="flaky", attempts=3, retry_on=(OSError,), sleep=waits.append) == "ok"
    assert waits == [1.0]
    with pytest.raises(KeyError):
        retry(lambda: {}["x"], what="lookup", attempts=3, retry_on=(OSError,), sleep=waits.append)
    assert waits == [1.0]
    with pytest.raises(ValueError, match="attempts"):
        retry(lambda: 1, what="none", attempts=0, retry_on=(OSError,))


def test_retry_call_passes_the_sleep_on() -> None:
    waits: list[float] = []

    def down() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        retry_call(down, what="down", timeout_s=1, attempts=3, wait_s=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0]


def test_retry_gives_up_on_what_the_predicate_names_and_waits_through_sleep() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise ConnectionError("final" if len(calls) == 2 else "transient")

    with pytest.raises(ConnectionError, match="final"):
        retry(failing, what="x", attempts=5, retry_on=(ConnectionError,), wait_s=2.0, sleep=waits.append,
              give_up=lambda e: "final" in str(e))  # fmt: skip
    assert len(calls) == 2 and waits == [2.0]
