"""Options as dataclasses: each field's default, help, flag name and value check are written once, and
both the command line (:func:`add_options`) and the code that builds a neuron (:func:`read_options`) read
them from there."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    type: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A dataclass field that is also a command-line flag (``--<field name>`` unless ``flag`` says
    otherwise). A ``bool`` field with default ``False`` becomes a switch (``store_true``)."""
    metadata = {"help": help, "flag": flag, "type": type, "choices": choices, "metavar": metavar}
    metadata["aliases"] = aliases
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get("flag") or "--" + field.name)


def describe_default(value: Any) -> str:
    """`` (default: X)`` for a meaningful default; nothing for None/False (the help says what they mean)."""
    if value is None or value is False:
        return ""
    return f" (default: {value:g})" if isinstance(value, float) else f" (default: {value})"


def add_options(
    group: argparse._ActionsContainer, cls: type[Any], *, defaults: Mapping[str, Any] | None = None
) -> None:
    """One flag per field of the dataclass ``cls``; ``defaults`` replaces some fields' defaults (a
    neuron-specific default of a shared option)."""
    overrides = dict(defaults or {})
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    for field in dataclasses.fields(cls):
        meta = field.metadata
        default = overrides.get(field.name, field.default)
        names = [flag_of(field), *meta.get("aliases", ())]
        help_text = str(meta["help"]) + describe_default(default)
        if isinstance(default, bool):
            group.add_argument(*names, dest=field.name, action="store_true", default=default, help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": field.name, "default": default, "help": help_text}
        for key in ("type", "choices", "metavar"):
            if meta.get(key) is not None:
                kwargs[key] = meta[key]
        if "metavar" not in kwargs and "choices" not in kwargs:
            kwargs["metavar"] = getattr(meta.get("type"), "metavar", None) or _metavar(default)
        group.add_argument(*names, **kwargs)


def _metavar(default: Any) -> str:
    if isinstance(default, int):
        return "N"
    if isinstance(default, float):
        return "X"
    return "VALUE"


def read_options(args: argparse.Namespace, cls: type[T]) -> T:
    """The dataclass ``cls`` filled from parsed arguments (fields missing from ``args`` keep defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}  # type: ignore[arg-type]
    return cls(**values)


def default_of(cls: type[Any], name: str) -> Any:
    """The default of field ``name`` of the dataclass ``cls``."""
    for field in dataclasses.fields(cls):
        if field.name == name:
            return field.default
    raise KeyError(f"{cls.__name__} has no field {name!r}")
