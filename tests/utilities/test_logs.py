"""Logs off a terminal: plain unwrapped lines, repeated lines held back, periodic progress lines."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from utilities.logs import RepeatFilter, setup_logging
from utilities.progress import ProgressLine, duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_off_a_terminal_lines_are_plain_and_never_wrapped(restore_logging: None) -> None:
    stream = io.StringIO()  # not a terminal, like pm2's log file
    setup_logging(stream=stream)
    path = "/very/long/path/" + "segment-" * 20 + "model.safetensors"
    hotkey = "5F3sa2TJAWMqDhXG6jhV4N8ko9SxwGy8TpaNS1repo5EYjQX"
    logging.getLogger("finetune.test").info("hotkey %s: stored %s", hotkey, path)
    logging.getLogger("finetune.test").warning("second line")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f"INFO    finetune.test: hotkey {hotkey}: stored {path}")
    assert "\x1b[" not in stream.getvalue() and "\r" not in stream.getvalue()
    assert lines[1].split(" ", 2)[2].startswith("WARNING finetune.test: second line")


def test_library_chatter_is_silenced(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging(stream=stream)
    logging.getLogger("transformers.modeling_utils").info("loading weights")
    logging.getLogger("bittensor.transport").info("could not connect")
    logging.getLogger("accelerate.utils").warning("a real warning")
    assert stream.getvalue().count("\n") == 1 and "a real warning" in stream.getvalue()


def test_a_repeated_line_is_written_once_then_when_it_changes() -> None:
    clock = Clock()
    stream = io.StringIO()
    logger = logging.getLogger("finetune.repeat_test")
    handler = logging.StreamHandler(stream)
    handler.addFilter(RepeatFilter(repeat_s=600, clock=clock))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for block in range(100, 130):  # every few seconds
            clock.now += 5
            logger.info("no scores yet: not setting weights at block %d", block)
        logger.info("set weights at block %d on %d uids", 131, 4)  # it changed: written
        logger.warning("setting weights failed (attempt %d)", 1)
        logger.warning("setting weights failed (attempt %d)", 2)  # warnings are never held back
        clock.now += 700
        logger.info("no scores yet: not setting weights at block %d", 300)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "no scores yet: not setting weights at block 100",
        "set weights at block 131 on 4 uids",
        "setting weights failed (attempt 1)",
        "setting weights failed (attempt 2)",
        "no scores yet: not setting weights at block 300 (and 29 like it in the last 845 s)",
    ]


def test_progress_lines_come_periodically_with_eta() -> None:
    clock = Clock()
    lines: list[str] = []
    progress = ProgressLine("epoch 1", total=100, write=lines.append, interval_s=30, clock=clock)
    for _ in range(100):
        clock.now += 1.0
        progress.update(1, loss="2.500")
    progress.close()
    assert len(lines) == 4  # at 30, 60 and 90 s, and the last one
    assert lines[0] == "epoch 1: 30/100 (30%) loss=2.500 · 30s elapsed · eta 1m10s"
    assert lines[-1] == "epoch 1: 100/100 (100%) loss=2.500 · 1m40s elapsed"
    assert duration(7500) == "2h05m"
