"""``HeldOutSplit``: disjoint train and held-out sides of a source without a split of its own."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from finetune.data import DatasetSource, SyntheticSource
from finetune.data.heldout import MAX_ROUNDS, HeldOutSplit, is_heldout
from finetune.miner_config import build_parser, build_sources
from utilities.errors import ConfigError, DataSourceError


class Pool:
    """``size`` distinct prompts, ``n`` of them drawn at random from ``seed``; counts the draws."""

    def __init__(self, size: int) -> None:
        self.samples = [(f"question {i}?", f"answer {i}") for i in range(size)]
        self.requests: list[int] = []
        self.cutoffs: list[float | None] = []

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[tuple[str, str]]:
        self.requests.append(n)
        self.cutoffs.append(cutoff)
        return random.Random(seed).sample(self.samples, min(n, len(self.samples)))


def test_the_sides_are_disjoint_and_stable() -> None:
    pool = Pool(5000)
    train, heldout = HeldOutSplit(pool, split="train"), HeldOutSplit(pool, split="heldout")
    train_prompts = {p for seed in range(5) for p, _ in train.sample(300, seed=seed)}
    heldout_samples = heldout.sample(100, seed=7)
    assert len(heldout_samples) == 100 and len(set(heldout_samples)) == 100
    assert not train_prompts & {p for p, _ in heldout_samples}
    assert all(is_heldout(p) for p, _ in heldout_samples) and not any(is_heldout(p) for p in train_prompts)
    # the same prompts are held out by another instance (another process, another epoch)
    assert HeldOutSplit(Pool(5000), split="heldout").sample(100, seed=7) == heldout_samples
    share = sum(is_heldout(p) for p, _ in pool.samples) / len(pool.samples)
    assert 0.08 < share < 0.12


def test_the_salt_and_fraction_choose_the_split() -> None:
    prompts = [f"q{i}" for i in range(2000)]
    assert {p for p in prompts if is_heldout(p)} != {p for p in prompts if is_heldout(p, salt="other")}
    assert sum(is_heldout(p, fraction=0.5) for p in prompts) > 800


def test_overdrawing_is_bounded() -> None:
    pool = Pool(30)  # about 3 held-out prompts in all
    heldout = HeldOutSplit(pool, split="heldout")
    got = heldout.sample(10, seed=0)
    assert 0 < len(got) < 10 and len(pool.requests) == MAX_ROUNDS and pool.requests[0] == 100
    assert all(is_heldout(p) for p, _ in got)


def test_every_draw_of_the_wrapped_source_gets_the_cutoff() -> None:
    """The split wraps Cortex.t on the validator: the sync block's time reaches it in every round."""
    pool = Pool(30)
    HeldOutSplit(pool, split="heldout").sample(10, seed=0, cutoff=1_700_000_123.5)
    assert pool.cutoffs == [1_700_000_123.5] * MAX_ROUNDS
    HeldOutSplit(pool, split="train").sample(3, seed=0)
    assert pool.cutoffs[-1] is None


def test_an_empty_side_is_a_data_source_error() -> None:
    pool = Pool(50)
    pool.samples = [s for s in pool.samples if not is_heldout(s[0])]  # no held-out prompt at all
    with pytest.raises(DataSourceError):
        HeldOutSplit(pool, split="heldout").sample(5, seed=0)
    assert HeldOutSplit(pool, split="heldout").sample(0, seed=0) == []


def test_invalid_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        HeldOutSplit(Pool(3), split="test")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        HeldOutSplit(Pool(3), split="train", fraction=1.0)


def test_the_miner_splits_a_dataset_by_prompt(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) + "\n" for i in range(400)))
    args = build_parser().parse_args(["--offline", "--data", "dataset", "--data.path", str(path)])
    train, heldout = build_sources(args, local=False)
    assert isinstance(train, HeldOutSplit) and isinstance(heldout, HeldOutSplit)
    assert isinstance(train.source, DatasetSource) and train.source is heldout.source
    train_prompts = {p for p, _ in train.sample(400, seed=1)}
    heldout_prompts = {p for p, _ in heldout.sample(400, seed=2)}
    assert train_prompts and heldout_prompts and not train_prompts & heldout_prompts
    assert len(train_prompts) + len(heldout_prompts) == 400
    synthetic = build_sources(build_parser().parse_args(["--offline", "--data", "synthetic"]), local=False)
    assert all(isinstance(s, SyntheticSource) for s in synthetic)
