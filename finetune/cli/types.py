"""Argparse ``type=`` checks: each turns a command-line string into a value or raises
:class:`argparse.ArgumentTypeError`, whose message argparse prints as ``argument --flag: <message>``."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path

DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
HUB_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
KEY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def _number(text: str, kind: Callable[[str], float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer ``>= low``."""

    def check(text: str) -> int:
        value = int(_number(text, int))
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text}")
        return value

    check.__name__ = f"integer >= {low}"
    check.metavar = "N"  # type: ignore[attr-defined]
    return check


def float_above(low: float, *, inclusive: bool) -> Callable[[str], float]:
    """A finite float ``> low`` (or ``>= low`` when ``inclusive``)."""
    sign = ">=" if inclusive else ">"

    def check(text: str) -> float:
        value = float(_number(text, float))
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be a number {sign} {low:g}, got {text}")
        return value

    check.__name__ = f"number {sign} {low:g}"
    check.metavar = "X"  # type: ignore[attr-defined]
    return check


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = float_above(0.0, inclusive=False)
non_negative_float = float_above(0.0, inclusive=True)


def epochs(text: str) -> int:
    """``-1`` (train until stopped) or a positive number of epochs."""
    value = int(_number(text, int))
    if value == -1 or value >= 1:
        return value
    raise argparse.ArgumentTypeError(f"must be -1 (until stopped) or a number of epochs >= 1, got {text}")


epochs.metavar = "N"  # type: ignore[attr-defined]


def device(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether it exists is checked at start-up)."""
    value = text.strip()
    if not DEVICE_PATTERN.match(value):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu, cuda, cuda:N or mps")
    return value


def device_list(text: str) -> str:
    """Comma-separated devices (one evaluation worker each), e.g. ``cuda:0,cuda:1``."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"empty device in {text!r}")
    return ",".join(device(part) for part in parts)


def repo_id(text: str) -> str:
    """``namespace/name`` of a model repository."""
    namespace, slash, name = text.partition("/")
    if not slash or not HUB_NAME.match(namespace) or not HUB_NAME.match(name) or ".." in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not namespace/name (letters, digits, '.', '_', '-'; at most 96 characters each)"
        )
    return text


def repo_ref(text: str) -> str:
    """``namespace/name`` or ``namespace/name@revision``."""
    repo, at, revision = text.partition("@")
    repo_id(repo)
    if at and (not REVISION.match(revision) or ".." in revision):
        raise argparse.ArgumentTypeError(f"{text!r}: bad revision {revision!r} after '@'")
    return text


COMMIT = re.compile(r"^[0-9a-f]{40}$")


def commit_id(text: str) -> str:
    """A full 40-hex-digit commit id (a branch or tag could move under a pinned source)."""
    if not COMMIT.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a 40-hex-digit commit id")
    return text


def folder(text: str) -> Path:
    """A folder that exists or can be created: never an existing file (or ``/dev/null``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: {parent} is not a folder")
            break
    return Path(text)


folder.metavar = "DIR"  # type: ignore[attr-defined]
device.metavar = "DEVICE"  # type: ignore[attr-defined]
device_list.metavar = "DEVICES"  # type: ignore[attr-defined]
repo_id.metavar = "NS/NAME"  # type: ignore[attr-defined]
repo_ref.metavar = "NS/NAME[@REV]"  # type: ignore[attr-defined]


def existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return Path(text)


def key_name(text: str) -> str:
    """A wallet or hotkey name: a plain file name (no path separators, not empty, not hidden)."""
    if not KEY_NAME.match(text) or text in {".", ".."}:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a wallet/hotkey name (letters, digits, '_', '.', '-'; no '/'; not empty)"
        )
    return text
