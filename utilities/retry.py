"""Bounded waiting: every network call runs under a timeout, and is retried a bounded number of times.

``call_with_timeout`` runs a blocking call on a daemon thread and stops waiting after ``timeout_s``
(a hung socket then costs a parked thread, never a hung neuron). ``retry_call`` adds tenacity retries
with exponential backoff around it, for the errors the caller names as transient.
"""

from __future__ import annotations

import logging
import threading
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


def retry_call(
    fn: Callable[[], T],
    *,
    what: str,
    timeout_s: float,
    attempts: int = 3,
    retry_on: tuple[type[BaseException], ...] = (CallTimeoutError, ConnectionError, OSError),
    wait_s: float = 1.0,
    max_wait_s: float = 30.0,
) -> T:
    """``call_with_timeout`` with up to ``attempts`` tries on the ``retry_on`` errors (backoff between)."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=wait_s, max=max_wait_s),
        retry=tenacity.retry_if_exception_type(retry_on),
        reraise=True,
        before_sleep=lambda state: logger.warning(
            "%s failed (attempt %d/%d): %s",
            what,
            state.attempt_number,
            attempts,
            state.outcome.exception() if state.outcome else "?",
        ),
    )
    return retrying(call_with_timeout, fn, timeout_s=timeout_s, what=what)
