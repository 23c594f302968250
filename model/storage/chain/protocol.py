"""The chain port (design.md §3): what both neurons need from a chain, and nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Metagraph:
    """The subnet's neurons at one block, as arrays indexed by position (``uids[i]`` is neuron i)."""

    block: int
    uids: npt.NDArray[np.int64]
    hotkeys: tuple[str, ...]
    stake: npt.NDArray[np.float64]
    validator_permit: npt.NDArray[np.bool_]
    incentive: npt.NDArray[np.float64]
    consensus: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        n = len(self.hotkeys)
        for name in ("uids", "stake", "validator_permit", "incentive", "consensus"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"metagraph.{name} has {len(getattr(self, name))} entries, expected {n}")

    @property
    def n(self) -> int:
        return len(self.hotkeys)

    def uid_of(self, hotkey: str) -> int | None:
        """The uid of ``hotkey``, or ``None`` if it is not registered."""
        try:
            return int(self.uids[self.hotkeys.index(hotkey)])
        except ValueError:
            return None

    def hotkey_of(self, uid: int) -> str:
        positions = np.flatnonzero(self.uids == uid)
        if len(positions) == 0:
            raise KeyError(f"uid {uid} is not in the metagraph at block {self.block}")
        return self.hotkeys[int(positions[0])]


@dataclass(frozen=True)
class Commitment:
    """The data a hotkey last committed, and the block that included it."""

    hotkey: str
    data: str
    block: int


class Chain(Protocol):
    """A subnet on a chain. Writes act as the wallet (hotkey) the chain was built with.

    Every method raises :class:`utilities.errors.ChainError` (or a subclass) on failure, within a
    bounded time; none hangs.
    """

    netuid: int

    def current_block(self) -> int:
        """The chain's latest block number."""
        ...

    def finalized_block(self) -> int:
        """The latest finalized block number (at most :meth:`current_block`): its hash can no longer
        change, so validators seed samples from it."""
        ...

    def block_hash(self, block: int) -> str:
        """The hash of ``block`` (hex text): the same for every validator, so it seeds the samples."""
        ...

    def block_timestamp(self, block: int) -> float:
        """The time of ``block`` (Unix seconds): the same for every validator, so it fixes which Cortex
        samples a sync window draws."""
        ...

    def metagraph(self) -> Metagraph:
        """The subnet's neurons with stake, permits, incentive and consensus."""
        ...

    def commit(self, data: str) -> None:
        """Commit ``data`` (at most 128 bytes) as this chain's hotkey."""
        ...

    def commitment(self, hotkey: str) -> Commitment | None:
        """The latest commitment of ``hotkey`` with its block, or ``None``."""
        ...

    def commitments(self) -> dict[str, Commitment]:
        """Every hotkey's latest commitment with its block, keyed by hotkey."""
        ...

    def min_allowed_weights(self) -> int:
        """The subnet's ``MinAllowedWeights``: the fewest non-zero weights a weights call may carry."""
        ...

    def set_weights(self, uids: Sequence[int], weights: Sequence[float], *, version_key: int) -> None:
        """Set this validator's weights (normalized by the chain) under ``version_key``."""
        ...
