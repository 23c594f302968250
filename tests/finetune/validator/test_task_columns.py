"""Per-task scores in the step report: JSON (old reports still load), terminal table, leaderboard."""

from __future__ import annotations

import json
import math

from rich.console import Console

from constants.competitions import FixedEpsilon
from constants.tasks import EvalTask, Method, SourceSpec
from finetune.tasks.combine import score_tasks
from finetune.validator.leaderboard import leaderboard_table, render_html
from finetune.validator.records import ModelRow, StepReport, TaskScore, task_scores
from finetune.validator.table import COLUMNS, render_table, row_cells, step_cells, step_columns

TASKS = (
    EvalTask("responses", SourceSpec("synthetic"), Method.RESPONSE_LOSS, 0.5),
    EvalTask("choice", SourceSpec("synthetic_choice"), Method.MULTIPLE_CHOICE, 0.3),
    EvalTask("sorting", SourceSpec("word_sorting"), Method.GENERATION_RULES, 0.2),
)


def judged() -> StepReport:
    values = {
        "responses": {1: [1.0, 1.5], 2: [2.0, 2.5], 3: [1.0, 1.5]},
        "choice": {1: [1.0, 1.0], 2: [0.0, 1.0], 3: [1.0, 1.0]},
        "sorting": {1: [0.5, 1.0], 2: [math.nan, math.nan], 3: [0.5, 1.0]},
    }
    result = score_tasks(
        [1, 2, 3], values, {1: 5, 2: 6, 3: 7}, {1: "a", 2: "b", 3: "a"}, tasks=TASKS, reward_share=1.0,
        epsilon_policy=FixedEpsilon(0.0), current_block=9,
    )  # fmt: skip
    rows = tuple(
        ModelRow(
            uid=uid,
            hotkey=f"hk{uid}",
            model=f"m/{uid}",
            block=4 + uid,
            mean_loss=1.0,
            win_rate=result.win_rate.get(uid, 0.0),
            ci=(0.0, 1.0),
            weight=result.weights[uid],
            score=0.1,
            tasks=task_scores(TASKS, result, uid),
        )
        for uid in (1, 2, 3)
    )
    return StepReport(
        step=3, block=9, competition_id="local-tasks", seed=1, n_samples=6, seconds=1.0, rows=rows
    )  # fmt: skip


def test_task_scores_round_trip_and_old_reports_load() -> None:
    report = judged()
    one, two, copy = report.rows
    assert [t.name for t in one.tasks] == ["responses", "choice", "sorting"]
    assert two.tasks[2] == TaskScore("sorting", 0.2, 0.0, two.tasks[2].mean) and math.isnan(two.tasks[2].mean)
    assert copy.tasks == ()  # the later identical model is a duplicate: not scored
    data = json.loads(json.dumps(report.to_json()))  # nan means are written as null, valid JSON
    assert data["rows"][1]["tasks"][2] == {"name": "sorting", "weight": 0.2, "win_rate": 0.0, "mean": None}
    again = StepReport.from_json(data)
    assert again.rows[0] == one and again.rows[1].tasks[:2] == two.tasks[:2]
    assert math.isnan(again.rows[1].tasks[2].mean)
    # a report written before tasks existed has no "tasks" key in its rows
    for row in data["rows"]:
        del row["tasks"]
    assert all(row.tasks == () for row in StepReport.from_json(data).rows)


def test_the_table_and_the_leaderboard_show_a_column_per_task() -> None:
    report = judged()
    columns = step_columns(report)
    assert columns[6:9] == ("responses ×0.5", "choice ×0.3", "sorting ×0.2")
    one = report.rows[0]
    cells = step_cells(one, report)
    assert len(cells) == len(columns)
    assert cells[6] == f"{one.tasks[0].win_rate:.2f} · 1.2500"
    assert step_cells(report.rows[2], report)[6:9] == ("-", "-", "-")  # the copy
    console = Console(width=250, record=True)
    console.print(render_table(report))
    text = console.export_text()
    assert "choice ×0.3" in text and "sorting ×0.2" in text
    html = leaderboard_table(report)
    assert "<th>sorting ×0.2</th>" in html and f"{one.tasks[1].win_rate:.2f} · 1.0000" in html
    assert "sorting ×0.2" in render_html([report])


def test_a_one_task_step_keeps_todays_columns() -> None:
    report = judged()
    plain = StepReport(
        step=1, block=2, competition_id="l3", seed=0, n_samples=2, seconds=1.0,
        rows=tuple(ModelRow(**{**r.__dict__, "tasks": ()}) for r in report.rows),
    )  # fmt: skip
    assert step_columns(plain) == COLUMNS
    assert step_cells(plain.rows[0], plain) == row_cells(plain.rows[0])
