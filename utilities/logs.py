"""Logging setup for the neurons: the standard ``logging`` module with a rich console handler."""

from __future__ import annotations

import logging

from rich.logging import RichHandler

_NOISY = ("httpx", "httpcore", "urllib3", "websockets", "filelock", "huggingface_hub", "datasets")


def setup_logging(*, debug: bool = False, trace: bool = False) -> None:
    """Configure the root logger once: INFO by default, DEBUG with ``debug``; third-party chatter
    stays at WARNING unless ``trace`` is on."""
    level = logging.DEBUG if debug or trace else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(rich_tracebacks=True, show_path=False)],
        force=True,
    )
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if trace else logging.WARNING)
