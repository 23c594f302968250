"""The HTML leaderboard: one self-contained file, rewritten atomically after every step.

The page needs no network and no JavaScript: styles are inline and the plots are inline SVG drawn by
:mod:`finetune.validator.svg`. Hotkeys, model names and notes come from miners, so every one of them is
passed through :func:`html.escape` before it reaches the page."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from finetune.validator import svg
from finetune.validator.records import MINER_STATES, MinerStatus, ModelRow, StepReport
from finetune.validator.table import fmt_number, short_hotkey, sorted_rows, step_cells, step_columns
from utilities.files import atomic_write_bytes

PAGE_MODE = 0o644
"""The page and summary.json are world-readable (a web server or another user may serve them)."""
SCORE_FLOOR = 1e-4
"""Bottom of the score chart's logarithmic axis."""
EXPLANATION = (
    "Each step scores one competition's models on the same fresh samples. <b>Win rate</b>: the share of "
    "(opponent, sample) pairs a model wins (lower loss; the earlier commit wins near-ties). "
    "<b>Weight</b>: this step's softmax of win rates times the competition's reward share. "
    "<b>Score</b>: the moving average of a miner's weights over steps; the weights set on chain are the "
    "scores normalised to sum to 1, so a miner needs a lead that lasts several steps. A competition "
    "judged on several tasks shows each task's win rate and the model's mean there (loss, or accuracy / "
    "rules met); the win rate is their weighted sum."
)

_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; color: #222;
       background: #fafafa; max-width: 1180px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.meta { color: #555; margin: 0; }
table { border-collapse: collapse; background: #fff; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.model { word-break: break-all; }
td.hotkey { font-family: ui-monospace, monospace; white-space: nowrap; }
tr.noted td { background: #fff8e1; }
tr.status-rejected td, tr.status-copy td { background: #fdecea; }
tr.status-waiting td, tr.status-not-evaluated td { color: #666; }
.explain { font-size: 13px; color: #444; max-width: 900px; }
.skipped { font-size: 13px; color: #555; }
.skipped code { font-size: 12px; }
.empty { color: #777; font-style: italic; }
svg { display: block; width: 100%; height: auto; border: 1px solid #e3e3e3; box-sizing: border-box; }
footer { margin-top: 28px; color: #888; font-size: 12px; }
"""

_NUMERIC = {"uid", "block", "mean loss", "weight", "score", "win rate [CI]"}


def _cell_class(column: str) -> str:
    if column in _NUMERIC or " ×" in column:  # a task's column
        return "num"
    return {"hotkey": "hotkey", "model": "model"}.get(column, "")


def _finite(value: float) -> float:
    """``value``, or NaN when it is None/inf (NaN breaks a plotted line)."""
    return value if math.isfinite(value) else math.nan


def leaderboard_table(step: StepReport) -> str:
    """The ``<table>`` of one step (same columns and order as the terminal table) plus skipped hotkeys."""
    columns = step_columns(step)
    head = "".join(f"<th>{escape(name)}</th>" for name in columns)
    body: list[str] = []
    for row in sorted_rows(step.rows):
        cells = []
        for column, text in zip(columns, step_cells(row, step), strict=True):
            attrs = f' class="{_cell_class(column)}"' if _cell_class(column) else ""
            if column == "hotkey":
                attrs += f' title="{escape(row.hotkey)}"'
            cells.append(f"<td{attrs}>{escape(text)}</td>")
        row_class = ' class="noted"' if row.note else ""
        body.append(f'<tr{row_class} data-uid="{row.uid}">{"".join(cells)}</tr>')
    if not body:
        body.append(f'<tr><td colspan="{len(columns)}" class="empty">no models evaluated</td></tr>')
    html = f'<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    if step.skipped:
        items = "".join(
            f'<li><code title="{escape(hotkey)}">{escape(short_hotkey(hotkey))}</code>: {escape(reason)}</li>'
            for hotkey, reason in sorted(step.skipped.items())
        )
        html += f'<div class="skipped" id="skipped">Skipped ({len(step.skipped)}):<ul>{items}</ul></div>'
    return html


MINER_COLUMNS = ("uid", "hotkey", "model", "status", "reason")


def miners_table(miners: Sequence[MinerStatus]) -> str:
    """Every registered miner of the competition, evaluated or not, with its status and the reason."""
    order = {state: i for i, state in enumerate(MINER_STATES)}
    head = "".join(f"<th>{name}</th>" for name in MINER_COLUMNS)
    body = []
    for miner in sorted(miners, key=lambda m: (order.get(m.status, 99), m.uid)):
        css = "status-" + miner.status.replace(" ", "-")
        body.append(
            f'<tr class="{css}" data-uid="{miner.uid}"><td class="num">{miner.uid}</td>'
            f'<td class="hotkey" title="{escape(miner.hotkey)}">{escape(short_hotkey(miner.hotkey))}</td>'
            f'<td class="model">{escape(miner.model)}</td><td>{escape(miner.status)}</td>'
            f"<td>{escape(miner.reason)}</td></tr>"
        )
    if not body:
        body.append(f'<tr><td colspan="{len(MINER_COLUMNS)}" class="empty">no miner status yet</td></tr>')
    return f'<table id="miners"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _series(steps: Sequence[StepReport], value: Callable[[ModelRow], float]) -> list[svg.Series]:
    """One series per hotkey seen in ``steps``, ordered by the latest step's table order, then by
    hotkey; labelled with the hotkey's latest uid and model name."""
    points: dict[str, list[tuple[float, float]]] = {}
    uids: dict[str, int] = {}
    models: dict[str, str] = {}
    for report in steps:
        for row in report.rows:
            points.setdefault(row.hotkey, []).append((float(report.step), _finite(value(row))))
            uids[row.hotkey] = row.uid
            models[row.hotkey] = row.model
    latest = [row.hotkey for row in sorted_rows(steps[-1].rows)] if steps else []
    order = list(dict.fromkeys(latest + sorted(points)))
    return [
        svg.Series(
            key=hotkey,
            label=f"uid {uids[hotkey]} · {models[hotkey] or short_hotkey(hotkey)}",
            points=tuple(points[hotkey]),
        )
        for hotkey in order
    ]


def win_rate_chart(steps: Sequence[StepReport]) -> str:
    return svg.line_chart(
        _series(steps, lambda row: row.win_rate),
        title="Win rate per miner",
        x_label="step",
        y_label="win rate",
        y_range=(0.0, 1.0),
    )


def score_chart(steps: Sequence[StepReport]) -> str:
    """Scores on a logarithmic axis: after the softmax the leader holds most of the score, and a linear
    axis would flatten every other miner onto zero."""
    series = _series(steps, lambda row: row.score)
    top = max((y for s in series for _, y in s.points if math.isfinite(y)), default=1.0)
    return svg.line_chart(
        series,
        title="Score (moving average) per miner, logarithmic",
        x_label="step",
        y_label="score (log scale)",
        y_range=(SCORE_FLOOR, max(1.0, top)),
        y_log=True,
    )


def loss_chart(step: StepReport) -> str:
    boxes = [
        svg.Box(label=f"uid {row.uid} · {row.model}", values=row.losses) for row in sorted_rows(step.rows)
    ]
    return svg.box_plot(boxes, title=f"Per-sample loss, step {step.step}", x_label="loss per sample")


def render_html(
    history: Sequence[StepReport], *, now: datetime | None = None, refresh_s: int | None = 60
) -> str:
    """The whole page for ``history`` (oldest first; the last step is the current leaderboard). The
    plots only use steps of the latest step's competition."""
    now = now or datetime.now(UTC)
    stamp = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""

    def head(title: str) -> str:
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"{refresh}<title>{title}</title><style>{_STYLE}</style></head><body>"
        )

    if not history:
        return (
            head("Finetune subnet leaderboard")
            + "<header><h1>Finetune subnet leaderboard</h1>"
            + f'<p class="meta">no finished steps yet · updated {stamp}</p></header></body></html>'
        )
    latest = history[-1]
    steps = [report for report in history if report.competition_id == latest.competition_id]
    competition = escape(latest.competition_id)
    sections = [
        head(f"Leaderboard · {competition}"),
        f"<header><h1>Finetune subnet leaderboard · competition {competition}</h1>",
        f'<p class="meta" id="meta">step <b>{latest.step}</b> · block <b>{latest.block}</b> · '
        f"{latest.n_samples} samples · {fmt_number(latest.seconds, 1)} s · "
        f"{len(latest.rows)} models · updated {stamp}</p></header>",
        f'<p class="explain" id="explain">{EXPLANATION}</p>',
        f"<section><h2>Leaderboard</h2>{leaderboard_table(latest)}</section>",
        (
            f'<section id="every-miner"><h2>Every miner of competition {competition}</h2>'
            f"{miners_table(latest.miners)}</section>"
            if latest.miners
            else ""
        ),
        f'<section id="win-rate"><h2>Win rate over the last {len(steps)} step(s)</h2>'
        f"{win_rate_chart(steps)}</section>",
        f'<section id="score"><h2>Score (logarithmic axis: scores below {SCORE_FLOOR:g} sit on the '
        f"bottom line)</h2>{score_chart(steps)}</section>",
        f'<section id="losses"><h2>Loss distribution (step {latest.step})</h2>{loss_chart(latest)}</section>',
        "<footer>Win-rate intervals are paired-bootstrap intervals. Boxes: quartiles and median, "
        "whiskers at 1.5 IQR, diamond = mean; non-finite losses are left out.</footer></body></html>",
    ]
    return "".join(sections)


class LeaderboardReporter:
    """:class:`~finetune.validator.records.Reporter` that rewrites ``path`` (HTML) and ``summary.json``
    beside it after every step, both world-readable. ``statuses`` fills in the per-miner status list of
    a report that has none (:func:`~finetune.validator.records.miner_statuses` on the validator's tracker
    and metagraph)."""

    def __init__(
        self,
        path: Path,
        *,
        refresh_s: int | None = 60,
        clock: Callable[[], datetime] | None = None,
        statuses: Callable[[StepReport], tuple[MinerStatus, ...]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.summary_path = self.path.with_name("summary.json")
        self.refresh_s = refresh_s
        self._clock = clock or (lambda: datetime.now(UTC))
        self._statuses = statuses

    def report(self, step: StepReport, history: tuple[StepReport, ...]) -> None:
        if not step.miners and self._statuses is not None:
            step = dataclasses.replace(step, miners=self._statuses(step))
        steps = [report for report in history if report.step != step.step] + [step]
        page = render_html(steps, now=self._clock(), refresh_s=self.refresh_s)
        atomic_write_bytes(self.path, page.encode("utf-8"))
        os.chmod(self.path, PAGE_MODE)
        summary = {"updated": self._clock().isoformat(), **step.to_json(with_losses=False)}
        atomic_write_bytes(self.summary_path, json.dumps(summary, indent=1).encode("utf-8"))
        os.chmod(self.summary_path, PAGE_MODE)
