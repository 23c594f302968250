"""A deadline on drawing samples: a data source that hangs (a stuck wandb or dataset read) skips the
step instead of freezing the validator's loop."""

from __future__ import annotations

import logging
import threading
from typing import Any

from finetune.data import Sample, SampleSource
from utilities.errors import DataSourceError

logger = logging.getLogger(__name__)


class DeadlineSource:
    """``source`` with a time limit on every draw.

    Each draw runs on its own daemon thread; when it does not finish within ``timeout_s`` the caller
    gets a :class:`DataSourceError` and the draw is left to end on its own (a thread cannot be killed).
    While it is still stuck, later draws fail at once with the same error rather than stacking up
    threads on a source that does not answer. Whatever the source raises is raised to the caller.
    """

    def __init__(self, source: SampleSource, *, timeout_s: float) -> None:
        if not timeout_s > 0.0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.source, self.timeout_s = source, timeout_s
        self._stuck: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"DeadlineSource({self.source!r}, timeout_s={self.timeout_s:g})"

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[Sample]:
        if self._stuck is not None:
            if self._stuck.is_alive():
                raise DataSourceError(
                    f"{self.source!r} is still stuck in a draw that passed its {self.timeout_s:g} s limit"
                )
            self._stuck = None
        outcome: dict[str, Any] = {}

        def draw() -> None:
            try:
                outcome["samples"] = self.source.sample(n, seed=seed, cutoff=cutoff)
            except Exception as exc:  # noqa: BLE001 - raised again in the caller's thread below
                outcome["error"] = exc

        thread = threading.Thread(target=draw, name="sample-draw", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            self._stuck = thread
            raise DataSourceError(f"{self.source!r} gave no samples within {self.timeout_s:g} s")
        if "error" in outcome:
            raise outcome["error"]
        samples: list[Sample] = outcome["samples"]
        return samples
