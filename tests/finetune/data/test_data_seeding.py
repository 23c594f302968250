"""Seeds from block hashes: stable across processes (no salted ``hash()``), distinct across blocks."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from finetune.data.seeding import derive_seed, seed_from_block_hash
from finetune.data.synthetic import SyntheticSource

BLOCK_HASH = "0x5c3bd7f0e4a1b6f59d0b0f6e2a8c4d1e9f7a3b2c6d5e4f3a2b1c0d9e8f7a6b5c"


def _seed_and_samples(block_hash: str) -> tuple[int, list[tuple[str, str]], str | None]:
    seed = seed_from_block_hash(block_hash)
    return seed, SyntheticSource("train").sample(20, seed=seed), os.environ.get("PYTHONHASHSEED")


def test_seed_is_a_64_bit_int_and_ignores_case_and_whitespace() -> None:
    seed = seed_from_block_hash(BLOCK_HASH)
    assert 0 <= seed < 2**64
    assert seed_from_block_hash(f"  {BLOCK_HASH.upper()}\n") == seed


def test_different_blocks_give_different_seeds() -> None:
    seeds = {seed_from_block_hash(f"0x{i:064x}") for i in range(1000)}
    assert len(seeds) == 1000


def test_empty_block_hash_is_rejected() -> None:
    with pytest.raises(ValueError):
        seed_from_block_hash("   ")


def test_derived_seeds_differ_by_label_and_are_stable() -> None:
    assert derive_seed(7, "a") == derive_seed(7, "a")
    assert len({derive_seed(7, "a"), derive_seed(7, "b"), derive_seed(8, "a"), derive_seed(7)}) == 4


def test_two_processes_agree_on_seed_and_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    context = multiprocessing.get_context("spawn")
    results = []
    for hash_seed in ("1", "2"):  # different salts for str hash() in the two children
        monkeypatch.setenv("PYTHONHASHSEED", hash_seed)
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            results.append(pool.submit(_seed_and_samples, BLOCK_HASH).result(timeout=60))
    (seed_a, samples_a, salt_a), (seed_b, samples_b, salt_b) = results
    assert (salt_a, salt_b) == ("1", "2")
    assert seed_a == seed_b == seed_from_block_hash(BLOCK_HASH)
    assert samples_a == samples_b == SyntheticSource("train").sample(20, seed=seed_a)
