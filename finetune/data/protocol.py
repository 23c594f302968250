"""What every data source provides: ``sample(n, seed=..., cutoff=...)`` -> up to ``n`` (prompt, response)
pairs.

A source is deterministic in its seed (given the same underlying data), so validators that derive the
seed from the same block hash evaluate on the same samples. ``cutoff`` (Unix seconds; validators pass the
sync block's time, ``None`` elsewhere) fixes the data of a source that keeps growing (Cortex.t: only what
was logged by then); a source whose data is already fixed ignores it. A source that cannot produce
samples raises :class:`~utilities.errors.DataSourceError`.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias, runtime_checkable

from utilities.errors import DataSourceError

Sample: TypeAlias = tuple[str, str]
"""One (prompt, response) pair."""


@runtime_checkable
class SampleSource(Protocol):
    """A source of (prompt, response) samples, deterministic in ``seed`` (and ``cutoff``)."""

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[Sample]:
        """Up to ``n`` samples chosen by ``seed`` from the data there was at ``cutoff`` (where that
        matters); raises ``DataSourceError`` when the source fails."""
        ...


__all__ = ["DataSourceError", "Sample", "SampleSource"]
