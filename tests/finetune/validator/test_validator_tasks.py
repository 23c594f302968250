"""A validator step on a competition judged on several tasks: every task runs, a crash costs its tasks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from constants.competitions import LOCALNET_SCHEDULES, VALIDATOR_SOURCE
from constants.tasks import EvalTask, Method, SourceSpec
from constants.tasks_local import LOCAL_MULTI_TASKS
from finetune.data import SyntheticSource
from finetune.validator.judge import TaskSources
from tests.finetune.validator.localnet import LocalNet, save_tiny

SCHEDULE = LOCALNET_SCHEDULES["local-tasks"]


def test_task_sources_use_the_validators_own_and_build_the_others_once() -> None:
    built: list[str] = []

    def build(task: EvalTask) -> Any:
        built.append(task.name)
        return SyntheticSource("heldout")

    own = SyntheticSource("heldout")
    sources = TaskSources(own, timeout_s=5.0, build=build)
    mine = EvalTask("responses", VALIDATOR_SOURCE, Method.RESPONSE_LOSS)
    other = EvalTask("other", SourceSpec("synthetic", {"split": "heldout"}), Method.RESPONSE_LOSS)
    assert sources.source_for(mine) is own
    first = sources.source_for(other)
    assert sources.source_for(other) is first and built == ["other"]
    assert first.sample(3, seed=1) == own.sample(3, seed=1)  # behind the same draw deadline


@pytest.mark.slow
def test_a_step_runs_every_task_of_the_competition(tmp_path: Path) -> None:
    net = LocalNet(tmp_path)
    for k, hotkey in enumerate(("m_a", "m_b", "crash_c")):
        net.publish(hotkey, save_tiny(tmp_path / "src" / hotkey, seed=k + 1), competition_id="local-tasks")
    net.ripen()
    validator = net.validator(schedule=SCHEDULE, samples_per_step=8)
    try:
        validator.sync_models()
        report = validator.step()
    finally:
        validator.evaluator.close()
    assert report is not None and report.competition_id == "local-tasks"
    # 8 responses (the validator's samples_per_step) + 40 questions + 16 sorting prompts (the tasks' own)
    assert report.n_samples == 8 + 40 + 16
    rows = {row.hotkey: row for row in report.rows}
    names = [task.name for task in LOCAL_MULTI_TASKS]
    for hotkey in ("m_a", "m_b"):
        row = rows[hotkey]
        assert [t.name for t in row.tasks] == names and [t.weight for t in row.tasks] == [0.5, 0.3, 0.2]
        assert row.win_rate == pytest.approx(sum(t.weight * t.win_rate for t in row.tasks))
        assert math.isfinite(row.tasks[0].mean) and 0.0 <= row.tasks[1].mean <= 1.0
        assert len(row.losses) == 8 and row.weight > 0.0
    # the crashing model fails every task: no finite value anywhere, out of every match, no weight
    crashed = rows["crash_c"]
    assert all(t.win_rate == 0.0 and math.isnan(t.mean) for t in crashed.tasks)
    assert crashed.weight == 0.0 and "responses:" in crashed.note and "sorting:" in crashed.note
    # the two working models meet only each other: their response win rates sum to 1 (a crashed
    # opponent would add a win per sample); on the 0/1 tasks a tie at the same block is nobody's
    assert rows["m_a"].tasks[0].win_rate + rows["m_b"].tasks[0].win_rate == pytest.approx(1.0)
    for k in (1, 2):
        assert rows["m_a"].tasks[k].win_rate + rows["m_b"].tasks[k].win_rate <= 1.0
    assert rows["m_a"].weight + rows["m_b"].weight == pytest.approx(1.0)
