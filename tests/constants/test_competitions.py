from __future__ import annotations

import dataclasses

import pytest

import constants
from constants.competitions import (
    L3,
    LOCAL,
    LOCALNET_SCHEDULE,
    MAINNET_SCHEDULE,
    S1,
    Competition,
    FixedEpsilon,
    LinearDecayEpsilon,
    ScheduleEntry,
    competition_at,
    competitions_at,
)


def test_spec_version_follows_package_version() -> None:
    major, minor, patch = (int(p) for p in constants.__version__.split("."))
    assert constants.SPEC_VERSION == 1000 * major + 10 * minor + patch
    assert constants._spec_version("4.6.3") == 4063


def test_seed_constants() -> None:
    assert constants.SUBNET_UID == 6
    assert (constants.TIMESTAMP_EPSILON, constants.TEMPERATURE, constants.ALPHA) == (0.01, 0.08, 0.9)
    assert constants.MAX_REPO_BYTES == 15 * 1024**3
    assert (L3.reward_share, S1.reward_share) == (0.6, 0.4)
    assert L3.max_params == 8 * 1024**3 and S1.max_params == 2 * 1024**3
    assert L3.architectures == ("LlamaForCausalLM",) and S1.architectures == ("StableLmForCausalLM",)


def test_competitions_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        L3.reward_share = 1.0  # type: ignore[misc]


def test_schedule_by_block() -> None:
    later = dataclasses.replace(L3, reward_share=1.0)
    schedule = (ScheduleEntry(0, (L3, S1)), ScheduleEntry(1000, (later,)))
    assert competitions_at(999, schedule=schedule) == (L3, S1)
    assert competitions_at(1000, schedule=schedule) == (later,)
    assert competition_at("s1", 999, schedule=schedule) == S1
    assert competition_at("s1", 1000, schedule=schedule) is None
    assert competitions_at(5, schedule=(ScheduleEntry(10, (later,)),)) == ()
    assert competitions_at(10**9) == (L3, S1)
    assert competitions_at(0, schedule=LOCALNET_SCHEDULE) == (LOCAL,)
    assert MAINNET_SCHEDULE[0].start_block == 0


def test_schedule_entry_validates_shares_and_ids() -> None:
    with pytest.raises(ValueError, match="sum to"):
        ScheduleEntry(0, (L3,))
    with pytest.raises(ValueError, match="duplicate"):
        ScheduleEntry(0, (dataclasses.replace(L3, reward_share=0.5),) * 2)


def test_competition_validation() -> None:
    with pytest.raises(ValueError):
        Competition(id="x", architectures=(), max_params=1, tokenizer="t", reward_share=1.0)
    with pytest.raises(ValueError):
        Competition(id="x", architectures=("A",), max_params=1, min_params=2, tokenizer="t", reward_share=1)
    with pytest.raises(ValueError):
        Competition(id="x", architectures=("A",), max_params=1, tokenizer="t", reward_share=0.0)


def test_epsilon_policies() -> None:
    assert FixedEpsilon().epsilon(0) == FixedEpsilon().epsilon(10**6) == 0.01
    decay = LinearDecayEpsilon(value=0.005, minimum=0.001, start_blocks=100, period_blocks=400)
    assert decay.epsilon(0) == decay.epsilon(100) == 0.005
    assert decay.epsilon(300) == pytest.approx(0.003)
    assert decay.epsilon(500) == decay.epsilon(10**6) == pytest.approx(0.001)
    with pytest.raises(ValueError):
        LinearDecayEpsilon(value=0.001, minimum=0.005, start_blocks=0, period_blocks=1)
    with pytest.raises(ValueError):
        FixedEpsilon(1.5)


def test_a_competition_is_model_rules_and_judging_read_through() -> None:
    from constants.competitions import Judging, ModelRules
    from constants.tasks import EvalTask, Method, SourceSpec

    rules = ModelRules(architectures=("A",), max_params=10, tokenizer="t", sequence_length=64)
    judging = Judging(reward_share=0.5, sync_interval_blocks=7, samples_per_step=12)
    split = Competition("x", model=rules, judging=judging)
    flat = Competition(
        id="x", architectures=("A",), max_params=10, tokenizer="t", sequence_length=64, reward_share=0.5,
        sync_interval_blocks=7, samples_per_step=12,
    )  # fmt: skip
    assert split == flat and split.model is rules and split.judging is judging
    assert (split.sequence_length, split.reward_share, split.sync_interval_blocks) == (64, 0.5, 7)
    assert split.tasks == judging.tasks and len(split.tasks) == 1
    # a field beside a part overrides it; replace keeps the other part as it is
    later = dataclasses.replace(split, reward_share=1.0, max_params=20)
    assert (later.reward_share, later.max_params, later.sequence_length) == (1.0, 20, 64)
    assert later.judging.sync_interval_blocks == 7 and split.reward_share == 0.5
    assert split.replace(tokenizer="u").model == dataclasses.replace(rules, tokenizer="u")
    two = (
        EvalTask("a", SourceSpec("synthetic"), Method.RESPONSE_LOSS, 0.5),
        EvalTask("b", SourceSpec("synthetic_choice"), Method.MULTIPLE_CHOICE, 0.5),
    )
    assert split.replace(tasks=list(two)).tasks == two  # stored as a tuple
    with pytest.raises(ValueError, match="competition x: task weights sum to"):
        split.replace(tasks=two[:1])
    with pytest.raises(ValueError, match="competition x: a competition needs at least one"):
        split.replace(tasks=())
    with pytest.raises(ValueError, match="competition x: samples_per_step"):
        split.replace(samples_per_step=0)
    with pytest.raises(ValueError, match="competition x"):
        Competition("x", judging=judging)  # no model rules


def test_l3_and_s1_keep_the_single_response_loss_task_on_the_validators_source() -> None:
    from constants.competitions import S1, VALIDATOR_SOURCE
    from constants.tasks import Method

    for competition in (L3, S1):
        (task,) = competition.tasks
        assert (task.method, task.weight, task.source, task.kwargs()) == (
            Method.RESPONSE_LOSS, 1.0, VALIDATOR_SOURCE, {},
        )  # fmt: skip
        assert competition.samples_per_step is None


def test_local_tasks_is_local_judged_three_ways_and_miners_train_for_it() -> None:
    from constants.competitions import LOCAL, LOCAL_TASKS, LOCALNET_SCHEDULES, competitions_at
    from constants.tasks_local import LOCAL_MULTI_TASKS
    from finetune.miner_config import training_extras

    assert competitions_at(0, schedule=LOCALNET_SCHEDULES["local-tasks"]) == (LOCAL_TASKS,)
    assert LOCAL_TASKS.model == LOCAL.model and LOCAL_TASKS.tasks == LOCAL_MULTI_TASKS
    assert (LOCAL_TASKS.reward_share, LOCAL_TASKS.sync_interval_blocks) == (1.0, LOCAL.sync_interval_blocks)
    assert training_extras(LOCAL_TASKS) == ("word_sorting",)
    assert training_extras(LOCAL) == () == training_extras(None)


def test_every_scheduled_task_names_a_source_that_builds_for_its_method() -> None:
    """A task added to a competition in constants/ is usable: its source kind and options build, and
    its data fits its method (the validator builds them at its first step)."""
    from constants.competitions import LOCALNET_SCHEDULES, MAINNET_SCHEDULE, VALIDATOR_SOURCE
    from finetune.tasks.sources import build_task_source

    schedules = [MAINNET_SCHEDULE, *LOCALNET_SCHEDULES.values()]
    tasks = {t for s in schedules for e in s for c in e.competitions for t in c.tasks}
    assert len(tasks) >= 4
    for task in tasks:
        if task.source != VALIDATOR_SOURCE:
            assert build_task_source(task).sample(2, seed=3)
