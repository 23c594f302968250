"""Living through a chain outage: growing back-off between tries, and one log line a minute.

Without this every caller (the validator's step, its weight thread, the updater, a miner's publish)
retries on its own schedule and logs every failed attempt. :class:`OutageGate` is shared by all
calls of one chain adapter: after a call fails because the chain is unreachable, the next call waits
out a back-off window (1 s, doubling up to ``max_backoff_s``) before it dials again, so a caller's
loop slows down with the outage instead of spinning; the adapter logs a warning when the outage
starts and then at most once per ``log_every_s``, and one line when the chain answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("model.storage.chain")


class OutageGate:
    """Back-off and rate-limited logging shared by every call of one chain adapter (thread-safe)."""

    def __init__(
        self,
        *,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        log_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._first = first_backoff_s
        self._max = max_backoff_s
        self._log_every = log_every_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._since: float | None = None  # start of the current outage
        self._failures = 0
        self._backoff = 0.0
        self._next_try = 0.0
        self._last_log = -float("inf")

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    @property
    def backoff_s(self) -> float:
        """The current back-off window (0 when the chain is reachable)."""
        return self._backoff

    def wait(self, budget_s: float) -> bool:
        """Wait until the back-off window is over, at most ``budget_s``; ``False`` if it is not
        over by then (the caller then fails without dialling)."""
        with self._lock:
            remaining = self._next_try - self._clock()
        if remaining <= 0:
            return True
        if remaining > budget_s:
            self._sleep(budget_s)
            return False
        self._sleep(remaining)
        return True

    def failed(self, what: str, error: BaseException) -> None:
        """Record a call that failed because the chain could not be reached."""
        with self._lock:
            now = self._clock()
            if self._since is None:
                self._since = now
            self._failures += 1
            self._backoff = self._first if self._backoff == 0 else min(self._backoff * 2, self._max)
            self._next_try = now + self._backoff
            if now - self._last_log < self._log_every:
                return
            self._last_log = now
            down_for, failures, backoff = now - self._since, self._failures, self._backoff
        logger.warning(
            "chain unreachable for %s (%d failed call%s, last: %s: %s); retrying every %s at most",
            _duration(down_for),
            failures,
            "" if failures == 1 else "s",
            what,
            error,
            _duration(backoff),
        )

    def succeeded(self) -> None:
        """Record a call the chain answered: an outage, if any, is over."""
        with self._lock:
            if self._since is None:
                return
            down_for, failures = self._clock() - self._since, self._failures
            self._since, self._failures, self._backoff, self._next_try = None, 0, 0.0, 0.0
            self._last_log = -float("inf")
        logger.info("chain reachable again after %s (%d failed calls)", _duration(down_for), failures)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
