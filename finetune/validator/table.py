"""The terminal report: one rich table per finished step.

The cell formatting here (:func:`step_cells`, :func:`step_columns`, :func:`sorted_rows`) is shared with
the HTML leaderboard so both show the same numbers the same way. A step judged on several tasks gets one
column per task (its win rate and the model's mean value there) beside the combined win rate."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from finetune.validator.records import MinerStatus, ModelRow, StepReport, TaskScore

COLUMNS: tuple[str, ...] = (
    "uid",
    "hotkey",
    "model",
    "block",
    "mean loss",
    "win rate [CI]",
    "weight",
    "score",
    "note",
)
"""Column headings, in order, for :func:`row_cells`."""

MISSING = "-"


def fmt_number(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals, or ``-`` for None, inf and NaN."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:.{digits}f}"


def fmt_win_rate(row: ModelRow) -> str:
    """``0.62 [0.55, 0.70]``; ``-`` for a missing rate, ``-`` for a missing interval bound."""
    if not math.isfinite(row.win_rate):
        return MISSING
    low, high = row.ci
    return f"{row.win_rate:.2f} [{fmt_number(low, 2)}, {fmt_number(high, 2)}]"


def short_hotkey(hotkey: str, head: int = 6, tail: int = 4) -> str:
    """``5F3sa2…x9Kp``: enough to tell hotkeys apart in a table."""
    if len(hotkey) <= head + tail + 1:
        return hotkey
    return f"{hotkey[:head]}…{hotkey[-tail:]}"


def row_cells(row: ModelRow) -> tuple[str, ...]:
    """The cells of one row, in :data:`COLUMNS` order, as plain (unescaped) text."""
    return (
        str(row.uid),
        short_hotkey(row.hotkey),
        row.model,
        str(row.block),
        fmt_number(row.mean_loss),
        fmt_win_rate(row),
        fmt_number(row.weight),
        fmt_number(row.score),
        row.note,
    )


def step_tasks(step: StepReport) -> tuple[tuple[str, float], ...]:
    """(name, weight) of the step's evaluation tasks when it was judged on several, else ``()``."""
    for row in step.rows:
        if row.tasks:
            return tuple((task.name, task.weight) for task in row.tasks)
    return ()


_WIN_RATE_AT = COLUMNS.index("win rate [CI]") + 1


def step_columns(step: StepReport) -> tuple[str, ...]:
    """:data:`COLUMNS`, with one column per task after the combined win rate (``choice ×0.3``) when the
    step was judged on several tasks."""
    tasks = tuple(f"{name} ×{weight:g}" for name, weight in step_tasks(step))
    return COLUMNS[:_WIN_RATE_AT] + tasks + COLUMNS[_WIN_RATE_AT:]


def fmt_task(score: TaskScore | None) -> str:
    """A task's cell: the task win rate, then the mean of the model's values (``0.62 · 1.2345``)."""
    if score is None or not math.isfinite(score.win_rate):
        return MISSING
    return f"{score.win_rate:.2f} · {fmt_number(score.mean)}"


def step_cells(row: ModelRow, step: StepReport) -> tuple[str, ...]:
    """:func:`row_cells` with the task cells of :func:`step_columns` (``-`` for a task the row lacks:
    a copy of an earlier commit is not scored)."""
    cells = row_cells(row)
    by_name = {task.name: task for task in row.tasks}
    tasks = tuple(fmt_task(by_name.get(name)) for name, _ in step_tasks(step))
    return cells[:_WIN_RATE_AT] + tasks + cells[_WIN_RATE_AT:]


def sorted_rows(rows: Iterable[ModelRow]) -> list[ModelRow]:
    """Best score first; rows without a finite score last; ties by uid."""

    def key(row: ModelRow) -> tuple[int, float, int]:
        if math.isfinite(row.score):
            return (0, -row.score, row.uid)
        return (1, 0.0, row.uid)

    return sorted(rows, key=key)


def step_title(step: StepReport) -> str:
    return (
        f"step {step.step} · block {step.block} · competition {step.competition_id} · "
        f"{step.n_samples} samples · {fmt_number(step.seconds, 1)} s"
    )


def render_table(step: StepReport) -> Table:
    """The rich table of one step; skipped hotkeys and their reasons go in the caption below it.

    Every cell is a :class:`rich.text.Text`, so markup in miner-controlled strings (model names,
    notes) is shown literally, never interpreted."""
    caption: Text | None = None
    others = [m for m in step.miners if m.status != "evaluated"]
    if others:  # every miner that has no row, with its status and reason
        lines = [f"other miners ({len(others)}):"]
        lines += [f"  uid {m.uid} {m.model or m.hotkey}: {m.status}" + (f" ({m.reason})" if m.reason else "")
                  for m in others]  # fmt: skip
        caption = Text("\n".join(lines), style="dim")
    elif step.skipped:
        lines = [f"skipped {len(step.skipped)}:"]
        lines += [f"  {hotkey}: {reason}" for hotkey, reason in sorted(step.skipped.items())]
        caption = Text("\n".join(lines), style="dim")
    table = Table(
        title=Text(step_title(step), style="bold"),
        caption=caption,
        caption_justify="left",
        show_lines=False,
    )
    numeric = {"uid", "block", "mean loss", "weight", "score"}
    tasks = {f"{name} ×{weight:g}" for name, weight in step_tasks(step)}
    columns = step_columns(step)
    for name in columns:
        table.add_column(
            name,
            justify="right" if name in numeric or name in tasks else "left",
            no_wrap=name not in {"model", "note"},
            overflow="fold",
        )
    for row in sorted_rows(step.rows):
        style = "yellow" if row.note else None
        table.add_row(*(Text(cell) for cell in step_cells(row, step)), style=style)
    if not step.rows:
        table.add_row(*(Text(MISSING) for _ in columns))
    return table


class TableReporter:
    """:class:`~finetune.validator.records.Reporter` that prints :func:`render_table` to a console;
    ``statuses`` fills in the per-miner status list of a report that has none (shown under the table)."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        statuses: Callable[[StepReport], tuple[MinerStatus, ...]] | None = None,
    ) -> None:
        if console is None:
            console = Console()
            if not console.is_terminal:  # logs (pm2, files): wide enough that no column is dropped
                console = Console(width=160)
        self.console = console
        self._statuses = statuses

    def report(self, step: StepReport, history: tuple[StepReport, ...]) -> None:
        if not step.miners and self._statuses is not None:
            step = dataclasses.replace(step, miners=self._statuses(step))
        self.console.print(render_table(step))
