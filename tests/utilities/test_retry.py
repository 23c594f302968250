from __future__ import annotations

import threading
import time

import pytest

from utilities.retry import CallTimeoutError, call_with_timeout, retry_call


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
