"""``--config FILE.yaml``: settings from a file, overridden by the command line.

The file maps flag names (without ``--``) to values, e.g. ``wallet.name: alice`` or, nested,
``wallet: {name: alice}``; a switch takes ``true``/``false``. Its settings are turned into command-line
words placed *before* the real ones, so every value passes the same checks as when typed, and whatever
the command line says wins."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


def _flatten(data: Mapping[Any, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{str(key).lstrip('-')}"
        if isinstance(value, Mapping):
            yield from _flatten(value, prefix=name + ".")
        else:
            yield name, value


def config_words(parser: argparse.ArgumentParser, path: Path) -> list[str]:
    """The command-line words equivalent to the YAML file ``path``; a bad file or an unknown key ends
    with ``parser.error`` (exit status 2) naming it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        parser.error(f"--config {path}: cannot read it as YAML ({exc.__class__.__name__}: {exc})")
    if data is None:
        return []
    if not isinstance(data, Mapping):
        parser.error(f"--config {path}: expected a mapping of flag names to values")
    actions = parser._option_string_actions  # argparse has no public lookup by option string
    words: list[str] = []
    for name, value in _flatten(data):
        flag = "--" + name
        action = actions.get(flag)
        if action is None or name in ("config", "help"):
            parser.error(f"--config {path}: unknown setting {name!r} (keys are flag names, e.g. wallet.name)")
        if action.nargs == 0:  # a switch
            if not isinstance(value, bool):
                parser.error(f"--config {path}: {name} is a switch, give it true or false")
            words += [flag] if value else []
        elif value is None:
            continue
        elif isinstance(value, (list, bool)):
            parser.error(f"--config {path}: {name} takes one value, got {value!r}")
        else:
            words += [flag, str(value)]
    return words


def expand_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``argv`` with the settings of its ``--config FILE`` (if any) put in front."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, rest = pre.parse_known_args(list(argv))
    if known.config is None:
        return list(argv)
    if not known.config.expanduser().is_file():
        parser.error(f"--config {known.config}: no such file")
    return config_words(parser, known.config.expanduser()) + rest
