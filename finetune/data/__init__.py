"""Sources of (prompt, response) samples for miners and validators.

``make_source(kind, **options)`` builds the source named by a neuron's ``--data`` flag:
``"cortex"`` (:class:`CortexSource`), ``"dataset"`` (:class:`DatasetSource`) or ``"synthetic"``
(:class:`SyntheticSource`); ``options`` are the constructor's keyword arguments.
"""

from __future__ import annotations

from typing import Any

from finetune.data.cortex import CortexSource
from finetune.data.dataset import DatasetSource
from finetune.data.filters import UNWANTED_PHRASES, clean_sample, filter_samples, is_unwanted
from finetune.data.protocol import DataSourceError, Sample, SampleSource
from finetune.data.seeding import derive_seed, seed_from_block_hash
from finetune.data.synthetic import SyntheticSource
from utilities.errors import ConfigError

SOURCE_KINDS: dict[str, type[Any]] = {
    "cortex": CortexSource,
    "dataset": DatasetSource,
    "synthetic": SyntheticSource,
}


def make_source(kind: str, **options: Any) -> SampleSource:
    """The source of ``kind`` built with ``options``; ``ConfigError`` for an unknown kind or option."""
    try:
        cls = SOURCE_KINDS[kind.strip().lower()]
    except KeyError:
        raise ConfigError(f"unknown data source {kind!r}; expected one of {sorted(SOURCE_KINDS)}") from None
    try:
        source: SampleSource = cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid options for data source {kind!r}: {exc}") from exc
    return source


__all__ = [
    "SOURCE_KINDS",
    "UNWANTED_PHRASES",
    "CortexSource",
    "DataSourceError",
    "DatasetSource",
    "Sample",
    "SampleSource",
    "SyntheticSource",
    "clean_sample",
    "derive_seed",
    "filter_samples",
    "is_unwanted",
    "make_source",
    "seed_from_block_hash",
]
