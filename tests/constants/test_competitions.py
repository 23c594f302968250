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
