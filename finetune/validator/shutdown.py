"""Stopping the validator on a signal, within seconds, whatever it is doing.

``Validator.run`` checks its stop event only between steps, and a step can wait for minutes (a model's
evaluation, a slow download in the first sync). :func:`run_until_signalled` therefore runs the loop on
a daemon thread and keeps the main thread, where Python delivers signals, free: on SIGTERM or SIGINT
it sets the stop event, gives the loop ``grace_s`` to finish its current wait, then stops the
evaluation workers and returns. Nothing is lost: the state is written atomically after every step, so
an interrupted step is simply not recorded (as after ``kill -9``).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Protocol

logger = logging.getLogger(__name__)

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class _Closable(Protocol):
    def close(self) -> None: ...


class Runnable(Protocol):
    """What :func:`run_until_signalled` needs of a validator."""

    @property
    def evaluator(self) -> _Closable: ...

    def run(self, *, stop: threading.Event | None = None, max_steps: int | None = None) -> None: ...


def run_until_signalled(
    validator: Runnable,
    *,
    max_steps: int | None = None,
    grace_s: float = 2.0,
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
    stop: threading.Event | None = None,
) -> bool:
    """Run ``validator`` until ``max_steps`` steps ran, ``stop`` is set or one of ``signals`` arrives;
    returns whether a signal stopped it. Must be called from the main thread (signal
    handlers can only be installed there); the previous handlers are restored on return."""
    if grace_s < 0:
        raise ValueError(f"grace_s must be >= 0, got {grace_s}")
    stop = stop or threading.Event()
    received: list[int] = []
    signalled = threading.Event()

    def handle(signum: int, _: FrameType | None) -> None:
        received.append(signum)
        signalled.set()
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in signals}
    loop = threading.Thread(
        target=validator.run, kwargs={"stop": stop, "max_steps": max_steps}, name="validator", daemon=True
    )
    try:
        loop.start()
        while loop.is_alive() and not signalled.is_set():
            loop.join(timeout=0.2)  # short waits: the handler runs between them
        if signalled.is_set():
            logger.info("stopping the validator (%s)", ", ".join(signal.Signals(s).name for s in received))
            loop.join(timeout=grace_s)
            if loop.is_alive():
                logger.warning("the current step is still running: stopping its evaluation workers")
    finally:
        validator.evaluator.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return signalled.is_set()
