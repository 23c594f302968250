"""The terminal table: formatting, order, skipped hotkeys, markup left literal."""

from __future__ import annotations

import math

from rich.console import Console

from finetune.validator.records import ModelRow, StepReport
from finetune.validator.table import (
    COLUMNS,
    TableReporter,
    fmt_win_rate,
    render_table,
    row_cells,
    short_hotkey,
    sorted_rows,
)

HOTKEY_A = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
HOTKEY_B = "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy"
HOTKEY_C = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def make_row(uid: int, hotkey: str, score: float, **changes: object) -> ModelRow:
    values: dict[str, object] = {
        "uid": uid,
        "hotkey": hotkey,
        "model": f"miner{uid}/model@abc{uid}",
        "block": 1000 + uid,
        "mean_loss": 1.2345 + uid,
        "win_rate": 0.625,
        "ci": (0.55, 0.7),
        "weight": 0.1 * uid,
        "score": score,
    }
    values.update(changes)
    return ModelRow(**values)  # type: ignore[arg-type]


def make_step(rows: tuple[ModelRow, ...], skipped: dict[str, str] | None = None) -> StepReport:
    return StepReport(
        step=7,
        block=123456,
        competition_id="SN9_MODEL",
        seed=42,
        n_samples=256,
        seconds=83.25,
        rows=rows,
        skipped=skipped or {},
    )


def render_text(step: StepReport) -> str:
    console = Console(record=True, width=260, color_system=None)
    TableReporter(console).report(step, (step,))
    return console.export_text()


def test_cells_are_formatted() -> None:
    row = make_row(3, HOTKEY_A, 0.4321)
    assert row_cells(row) == (
        "3",
        short_hotkey(HOTKEY_A),
        "miner3/model@abc3",
        "1003",
        "4.2345",
        "0.62 [0.55, 0.70]",
        "0.3000",
        "0.4321",
        "",
    )
    assert len(row_cells(row)) == len(COLUMNS)
    assert short_hotkey(HOTKEY_A) == "5FHneW…94ty"
    assert short_hotkey("short") == "short"


def test_missing_values_show_as_dash() -> None:
    row = make_row(1, HOTKEY_A, math.inf, mean_loss=math.inf, win_rate=math.nan, weight=math.nan)
    cells = dict(zip(COLUMNS, row_cells(row), strict=True))
    assert cells["mean loss"] == "-"
    assert cells["win rate [CI]"] == "-"
    assert cells["weight"] == "-"
    assert cells["score"] == "-"
    assert fmt_win_rate(make_row(1, HOTKEY_A, 0.0, ci=(math.nan, 0.9))) == "0.62 [-, 0.90]"
    # The JSON round trip turns non-finite values into None and back into inf.
    restored = ModelRow.from_json(row.to_json())
    assert row_cells(restored)[4] == "-"


def test_table_lists_rows_by_score_with_title_and_skipped() -> None:
    rows = (
        make_row(1, HOTKEY_A, 0.2),
        make_row(2, HOTKEY_B, math.inf, note="evaluation failed: OOM"),
        make_row(3, HOTKEY_C, 0.5),
    )
    step = make_step(rows, skipped={HOTKEY_B + "x": "model too large", "5Short": "no commitment"})
    text = render_text(step)
    for fragment in ("step 7", "block 123456", "SN9_MODEL", "256 samples", "83.2 s"):
        assert fragment in text
    for row in rows:
        for cell in row_cells(row):
            if cell:
                assert cell in text, cell
    positions = [text.index(f"miner{uid}/model") for uid in (3, 1, 2)]
    assert positions == sorted(positions)
    assert [row.uid for row in sorted_rows(rows)] == [3, 1, 2]
    assert "evaluation failed: OOM" in text
    skipped_at = text.index("skipped 2")
    assert skipped_at > text.index("miner2/model")
    assert f"{HOTKEY_B}x: model too large" in text
    assert "5Short: no commitment" in text


def test_markup_in_model_names_is_printed_literally() -> None:
    step = make_step((make_row(1, HOTKEY_A, 0.1, model="[bold red]evil[/] [link=x]y", note="[blink]"),))
    text = render_text(step)
    assert "[bold red]evil[/] [link=x]y" in text
    assert "[blink]" in text


def test_empty_step_renders() -> None:
    table = render_table(make_step(()))
    assert table.row_count == 1
    assert "step 7" in render_text(make_step(()))


def test_every_miner_without_a_row_is_listed_under_the_table() -> None:
    from finetune.validator.records import MinerStatus

    step = make_step((make_row(1, HOTKEY_A, 0.5),), skipped={HOTKEY_C: "not kept from the last step"})
    statuses = (
        MinerStatus(1, HOTKEY_A, "miner1/model@abc1", "evaluated"),
        MinerStatus(2, HOTKEY_B, "copier/model@abc1", "copy", "same weights as uid 1, committed earlier"),
        MinerStatus(3, HOTKEY_C, "idle/model@ff", "not evaluated", "not kept from the last step"),
    )
    console = Console(record=True, width=260, color_system=None)
    TableReporter(console, statuses=lambda _: statuses).report(step, (step,))
    text = console.export_text()
    assert "other miners (2):" in text
    assert "uid 2 copier/model@abc1: copy (same weights as uid 1, committed earlier)" in text
    assert "uid 3 idle/model@ff: not evaluated (not kept from the last step)" in text
    assert "skipped 1:" not in text  # the status list says it, with the model name
