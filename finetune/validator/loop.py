"""The validator's loop: steps on the calling thread, weight setting and model syncing on their own
threads, so a slow step never delays weights and no failure of one ends the loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from utilities.errors import FinetuneError

if TYPE_CHECKING:
    from finetune.validator.validator import Validator

logger = logging.getLogger(__name__)


def run_loop(
    validator: Validator, *, stop: threading.Event | None = None, max_steps: int | None = None
) -> None:
    """Step until ``stop`` is set (or ``max_steps`` steps ran); sets ``stop`` on the way out, so the
    background threads end too."""
    stop = stop or threading.Event()
    settings = validator.settings
    # the first chain call from one thread: the SDK sets up its connection on first use
    guarded(validator.chain.current_block)
    weights = threading.Thread(
        target=every,
        args=(stop, settings.weights_check_interval_s, validator.maybe_set_weights),
        name="weights",
        daemon=True,
    )
    weights.start()  # first, so a restarted validator keeps setting weights while it syncs
    guarded(validator.sync_models)  # the first step needs the models on disk
    sync = threading.Thread(
        target=every,
        args=(stop, settings.sync_interval_s, validator.sync_models, settings.sync_interval_s),
        name="model-sync",
        daemon=True,
    )
    sync.start()
    steps = 0
    try:
        while not stop.is_set() and (max_steps is None or steps < max_steps):
            report = None
            try:
                report = validator.step()
            except FinetuneError as exc:
                logger.warning("step failed: %s", exc)
            except Exception:  # a bug or an unexpected library error must not stop validation
                logger.exception("step failed unexpectedly")
            steps += 1
            # nothing evaluated (no models yet, data source down): no point in spinning
            stop.wait(settings.step_pause_s if report is not None else settings.idle_pause_s)
    finally:
        stop.set()
        for thread in (weights, sync):
            thread.join(timeout=30)


def every(stop: threading.Event, interval_s: float, work: Callable[[], object], delay_s: float = 0.0) -> None:
    """Run ``work`` every ``interval_s`` (after ``delay_s``) until ``stop`` is set."""
    stop.wait(delay_s)
    while not stop.is_set():
        guarded(work)
        stop.wait(interval_s)


def guarded(work: Callable[[], object]) -> None:
    """Run background ``work``; no failure of it may end its thread."""
    name = getattr(work, "__name__", "background work")
    try:
        work()
    except FinetuneError as exc:
        logger.warning("%s failed: %s", name, exc)
    except Exception:  # the thread must outlive any single failure
        logger.exception("%s failed unexpectedly", name)
