"""A held-out split of any sample source, decided by the prompt.

:class:`HeldOutSplit` wraps a source that has no split of its own (Cortex.t, a dataset) and keeps only one
side of it: a sample is held out when SHA-256 of ``(salt, prompt)`` falls in the first ``fraction`` of
the hash space. The decision depends on nothing else, so it is the same in every process, every epoch and
every run, and the training side never sees a held-out prompt (in any response).

``sample(n, seed=...)`` draws more than ``n`` samples from the wrapped source (``n / share``, the share
being ``fraction`` for the held-out side and ``1 - fraction`` for training) and keeps its side's first
``n``; when that is not enough it draws again with derived seeds, at most ``MAX_ROUNDS`` draws in all, and
returns what it has (fewer than ``n`` when the source is small).
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Literal

from finetune.data.protocol import DataSourceError, Sample, SampleSource
from finetune.data.seeding import derive_seed
from utilities.errors import ConfigError

logger = logging.getLogger(__name__)

Split = Literal["train", "heldout"]
MAX_ROUNDS = 3
_SCALE = 2**64


def is_heldout(prompt: str, *, fraction: float = 0.1, salt: str = "heldout") -> bool:
    """Whether ``prompt`` belongs to the held-out side (stable: SHA-256 of the salt and the prompt)."""
    digest = hashlib.sha256(f"{salt}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * _SCALE


class HeldOutSplit:
    """One side (``"train"`` or ``"heldout"``) of ``source``, split by prompt (see the module doc)."""

    def __init__(
        self, source: SampleSource, *, split: Split, fraction: float = 0.1, salt: str = "heldout"
    ) -> None:
        if split not in ("train", "heldout"):
            raise ConfigError(f"split must be 'train' or 'heldout', not {split!r}")
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"the held-out fraction must be in (0, 1), got {fraction}")
        self.source, self.split, self.fraction, self.salt = source, split, fraction, salt

    def keeps(self, sample: Sample) -> bool:
        """Whether ``sample`` is on this side of the split."""
        held = is_heldout(sample[0], fraction=self.fraction, salt=self.salt)
        return held == (self.split == "heldout")

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[Sample]:
        """Up to ``n`` samples of this side, drawn from the wrapped source with ``seed`` and ``cutoff``."""
        if n <= 0:
            return []
        share = self.fraction if self.split == "heldout" else 1.0 - self.fraction
        request = math.ceil(n / share)
        kept: list[Sample] = []
        seen: set[Sample] = set()
        for round_ in range(MAX_ROUNDS):
            round_seed = seed if round_ == 0 else derive_seed(seed, "heldout-split", str(round_))
            for sample in self.source.sample(request, seed=round_seed, cutoff=cutoff):
                if sample not in seen and self.keeps(sample):
                    seen.add(sample)
                    kept.append(sample)
                    if len(kept) == n:
                        return kept
        if not kept:
            raise DataSourceError(f"no {self.split} sample in {MAX_ROUNDS} draws of {request}")
        logger.warning("%s split: only %d samples of %d", self.split, len(kept), n)
        return kept

    def __repr__(self) -> str:
        return f"HeldOutSplit({self.source!r}, split={self.split!r}, fraction={self.fraction})"
