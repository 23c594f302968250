"""Logging setup for the neurons: the standard ``logging`` module, readable on a terminal and in files.

On a terminal, a rich handler (colours, aligned columns). Off a terminal (pm2, a file, a pipe), plain
lines, one record per line, never wrapped, so ids and paths stay whole and ``grep`` works; library
progress bars are switched off there (their carriage returns make one giant line in pm2's logs).

An INFO line that repeats with only its numbers changed (``no scores yet: not setting weights at block
N`` every few seconds) is written once, then again only when its text changes, or after ``repeat_s``
with the count of lines held back. Warnings and errors are always written."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from typing import TextIO

NOISY = (
    "httpx", "httpcore", "urllib3", "websockets", "filelock", "huggingface_hub", "datasets", "fsspec",
    "transformers", "accelerate", "torch", "bittensor", "async_substrate_interface", "asyncio", "wandb",
    "git", "PIL", "matplotlib", "numexpr", "peft", "safetensors",
)  # fmt: skip
"""Libraries whose INFO chatter says nothing to an operator: WARNING and above unless ``--logging.trace``."""
PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DIGITS = re.compile(r"\d+(\.\d+)?")


class RepeatFilter(logging.Filter):
    """Drops an INFO (or lower) record whose text, digits masked, equals one written less than
    ``repeat_s`` ago; the next one written after that says how many were held back."""

    def __init__(self, repeat_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.repeat_s = repeat_s
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        key = (record.name, DIGITS.sub("#", record.getMessage()))
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.repeat_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = f"{record.getMessage()} (and {last[1]} like it in the last {now - last[0]:.0f} s)"
            record.args = None
        self._seen[key] = (now, 0)
        if len(self._seen) > 4096:  # bounded: forget the oldest half
            for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:2048]:
                del self._seen[old]
        return True


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def plain_handler(stream: TextIO) -> logging.Handler:
    """One unwrapped line per record: ``2026-12-02 03:30:00 INFO    name: message``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    return handler


def quiet_progress_bars() -> None:
    """Switch off the progress bars of huggingface_hub, datasets and transformers (off a terminal)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def setup_logging(
    *, debug: bool = False, trace: bool = False, stream: TextIO | None = None, repeat_s: float = 600.0
) -> logging.Handler:
    """Configure the root logger once: INFO by default, DEBUG with ``debug``; third-party chatter stays
    at WARNING unless ``trace`` is on. Returns the handler (plain off a terminal, rich on one)."""
    stream = stream or sys.stderr
    level = logging.DEBUG if debug or trace else logging.INFO
    handler: logging.Handler
    if is_terminal(stream):
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(file=stream), rich_tracebacks=True, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s", datefmt="[%X]"))
    else:
        quiet_progress_bars()
        handler = plain_handler(stream)
    if not trace:
        handler.addFilter(RepeatFilter(repeat_s))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if trace else logging.WARNING)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if trace else logging.ERROR)
    return handler
