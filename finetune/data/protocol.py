"""What every data source provides: ``sample(n, seed=...)`` -> up to ``n`` (prompt, response) pairs.

A source is deterministic in its seed (given the same underlying data), so validators that derive the
seed from the same block hash evaluate on the same samples. A source that cannot produce samples raises
:class:`~utilities.errors.DataSourceError`.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias, runtime_checkable

from utilities.errors import DataSourceError

Sample: TypeAlias = tuple[str, str]
"""One (prompt, response) pair."""


@runtime_checkable
class SampleSource(Protocol):
    """A source of (prompt, response) samples, deterministic in ``seed``."""

    def sample(self, n: int, *, seed: int) -> list[Sample]:
        """Up to ``n`` samples chosen by ``seed``; raises ``DataSourceError`` when the source fails."""
        ...


__all__ = ["DataSourceError", "Sample", "SampleSource"]
