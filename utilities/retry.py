"""Bounded waiting: every network call runs under a timeout, and is retried a bounded number of times.

``call_with_timeout`` runs a blocking call on a daemon thread and stops waiting after ``timeout_s``
(a hung socket then costs a parked thread, never a hung neuron). :func:`retry` is the one retry loop of
the project: tenacity, a bounded number of attempts, exponential backoff (``wait_s``, doubled each time,
at most ``max_wait_s``), a warning per failure, and an injectable ``sleep`` (tests pass a list's
``append`` and never wait). ``retry_call`` is :func:`retry` around ``call_with_timeout``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")

logger = logging.getLogger(__name__)


class CallTimeoutError(TimeoutError):
    """A call did not return within its time limit."""


def call_with_timeout(fn: Callable[[], T], *, timeout_s: float, what: str) -> T:
    """Run ``fn()`` and return its result, or raise :class:`CallTimeoutError` after ``timeout_s``.

    Exceptions raised by ``fn`` propagate unchanged. ``what`` names the call in the timeout message.
    """
    outcome: dict[str, object] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller's thread below
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"timeout:{what}", daemon=True).start()
    if not done.wait(timeout_s):
        raise CallTimeoutError(f"{what} did not finish within {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def retry(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int,
    retry_on: tuple[type[BaseException], ...],
    wait_s: float = 1.0,
    max_wait_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    give_up: Callable[[BaseException], bool] | None = None,
) -> T:
    """``fn()``, tried up to ``attempts`` times while it raises one of ``retry_on`` for which
    ``give_up`` (if given) is false; the last error is re-raised unchanged. Before try ``n + 1`` it
    waits ``min(wait_s * 2 ** (n - 1), max_wait_s)``."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")

    def retryable(error: BaseException) -> bool:
        return isinstance(error, retry_on) and not (give_up is not None and give_up(error))

    def warn(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else "?"
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning("%s failed (attempt %d/%d): %s; retrying in %.3g s",
                       what, state.attempt_number, attempts, error, wait)  # fmt: skip

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=wait_s, max=max_wait_s),
        retry=tenacity.retry_if_exception(retryable),
        reraise=True,
        sleep=sleep,
        before_sleep=warn,
    )
    return retrying(fn)


def retry_call(
    fn: Callable[[], T],
    *,
    what: str,
    timeout_s: float,
    attempts: int = 3,
    retry_on: tuple[type[BaseException], ...] = (CallTimeoutError, ConnectionError, OSError),
    wait_s: float = 1.0,
    max_wait_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call_with_timeout`` with up to ``attempts`` tries on the ``retry_on`` errors (backoff between)."""
    return retry(
        lambda: call_with_timeout(fn, timeout_s=timeout_s, what=what),
        what=what, attempts=attempts, retry_on=retry_on, wait_s=wait_s, max_wait_s=max_wait_s, sleep=sleep,
    )  # fmt: skip
