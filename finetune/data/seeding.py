"""Seeds shared by every validator: derived from chain data with a fixed hash function.

Python's ``hash()`` is salted per process (``PYTHONHASHSEED``), so it is never used here; SHA-256 gives
the same seed in every process, on every machine.
"""

from __future__ import annotations

import hashlib

SEED_BYTES = 8
"""The seed is the first 8 bytes of the digest, read big-endian (an int in ``[0, 2**64)``)."""


def _digest_int(text: str) -> int:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:SEED_BYTES], "big")


def seed_from_block_hash(block_hash: str) -> int:
    """The sampling seed of a block: SHA-256 of its hash text (stripped, lower-cased), first 8 bytes.

    Upper/lower case hex and surrounding whitespace give the same seed, since both spell the same block.
    """
    text = block_hash.strip().lower()
    if not text:
        raise ValueError("block hash is empty")
    return _digest_int(text)


def derive_seed(seed: int, *labels: str) -> int:
    """A seed for one use of ``seed`` (e.g. one split of one source), independent of the others."""
    return _digest_int(":".join([str(seed), *labels]))
