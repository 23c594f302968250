"""What a person watching the miner sees: one progress bar for the whole run, or plain lines in a log.

On a terminal, :class:`RunDisplay` shows one bar for the run (every epoch's steps; an endless run's bar
ends with the current epoch) with the epoch, the training loss, tokens/s, the time spent and the time
left, plus a line for each held-out evaluation as it goes; both stay on screen when the run ends.
Anywhere else (a log file, pm2, a pipe) it writes a plain progress line every ``interval_s`` seconds
instead, so that logs hold no bar redraws. Epochs are counted from 1 everywhere (bar, lines, logs).
:func:`quiet_libraries` keeps the libraries' chatter (accelerate's checkpoint lines, transformers'
deprecation warnings) out of the miner's output.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from rich import get_console
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

logger = logging.getLogger(__name__)


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """No accelerate INFO lines ("Saving current state to ...", one per file) and no deprecation warnings
    of transformers that peft triggers (``is_gradient_checkpointing``): the miner's output is its own."""
    accelerate_logger = logging.getLogger("accelerate")
    level = accelerate_logger.level
    accelerate_logger.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
            yield
    finally:
        accelerate_logger.setLevel(level)


def epoch_label(epoch: int, total: int | None) -> str:
    """``epoch 2/3`` (1-based), or ``epoch 2`` for a run without an end."""
    return f"epoch {epoch}/{total}" if total is not None else f"epoch {epoch}"


class RunDisplay:
    """Progress of a training run (see the module doc); every method is a no-op when not ``enabled``
    (the processes other than the main one)."""

    def __init__(
        self,
        *,
        enabled: bool,
        total_epochs: int | None,
        console: Console | None = None,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.enabled, self.total_epochs = enabled, total_epochs
        self.console = console or get_console()  # the console of the rich log handler
        self.interval_s, self.clock = interval_s, clock
        self.write = write or logger.info
        self.live = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._run: TaskID | None = None
        self._eval: TaskID | None = None
        self._done = self._total = 0
        self._epoch_steps = self._epoch_done = 0
        self._epoch = 0
        self._started = self._last = 0.0
        self._eval_total = self._eval_done = 0
        self._loss, self._tokens_per_s = float("nan"), 0.0

    def _bar(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), console=self.console, transient=False,
            )  # fmt: skip
            self._progress.start()
        return self._progress

    def start_epoch(self, epoch: int, steps: int, *, done: int) -> None:
        """Epoch ``epoch`` (1-based) of ``steps`` optimizer steps begins, ``done`` steps into the run."""
        if not self.enabled:
            return
        self._epoch, self._epoch_steps, self._epoch_done, self._done = epoch, steps, 0, done
        left = (self.total_epochs - epoch) * steps if self.total_epochs is not None else 0
        self._total = done + steps + max(left, 0)
        self._started = self._last = self.clock()
        if self.live:
            bar = self._bar()
            if self._run is None:
                self._run = bar.add_task("", total=self._total, completed=done, info="")
            bar.update(self._run, total=self._total, completed=done, info="",
                       description=epoch_label(epoch, self.total_epochs))  # fmt: skip

    def step(self, *, loss: float, tokens_per_s: float) -> None:
        """One optimizer step was taken, with this training loss and throughput."""
        if not self.enabled:
            return
        self._epoch_done += 1
        self._done += 1
        self._loss, self._tokens_per_s = loss, tokens_per_s
        if self._progress is not None and self._run is not None:
            self._progress.update(self._run, completed=self._done,
                                  info=f"loss {loss:.3f}  {tokens_per_s:,.0f} tok/s")  # fmt: skip
        elif self._due():
            self.write(self.line())

    def line(self) -> str:
        """The plain progress line: epoch, steps of the epoch and of the run, loss, tokens/s, time left."""
        elapsed = self.clock() - self._started
        rate = self._epoch_done / elapsed if elapsed > 0 else 0.0
        left = (self._total - self._done) / rate if rate > 0 else None
        eta = str(timedelta(seconds=round(left))) if left is not None else "?"
        return (
            f"{epoch_label(self._epoch, self.total_epochs)} step {self._epoch_done}/{self._epoch_steps} "
            f"(run {self._done}/{self._total}) loss {self._loss:.3f} {self._tokens_per_s:,.0f} tok/s "
            f"eta {eta}"
        )

    def start_eval(self, samples: int) -> None:
        if not self.enabled:
            return
        self._eval_total, self._eval_done = samples, 0
        self._last = self.clock()
        if self.live:
            bar = self._bar()
            if self._eval is None:
                self._eval = bar.add_task("held-out", total=samples, info="")
            bar.reset(self._eval, total=samples, info="", description="held-out")

    def eval_advance(self, samples: int) -> None:
        """``samples`` more held-out samples were scored."""
        if not self.enabled:
            return
        self._eval_done += samples
        if self._progress is not None and self._eval is not None:
            self._progress.update(self._eval, completed=self._eval_done)
        elif self._due():
            self.write(f"held-out evaluation: {self._eval_done}/{self._eval_total} samples")

    def end_eval(self, loss: float, best: float) -> None:
        if self._progress is not None and self._eval is not None:
            self._progress.update(self._eval, info=f"loss {loss:.4f} (best {best:.4f})")

    def close(self) -> None:
        """Stop the bar, leaving it on screen."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _due(self) -> bool:
        now = self.clock()
        if now - self._last < self.interval_s:
            return False
        self._last = now
        return True
