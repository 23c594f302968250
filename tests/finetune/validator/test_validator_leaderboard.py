"""The HTML leaderboard: structure, plots, escaping, atomic rewrites, degenerate inputs."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from finetune.validator import svg
from finetune.validator.leaderboard import LeaderboardReporter, render_html
from finetune.validator.records import ModelRow, StepReport
from finetune.validator.table import row_cells

HOTKEYS = [f"5Hotkey{i}{'x' * 30}{i:04d}" for i in range(4)]
EVIL = "<script>alert(1)</script>"
VOID = {"meta", "br", "img", "input", "link", "hr"}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_row(uid: int, step: int, **changes: object) -> ModelRow:
    values: dict[str, object] = {
        "uid": uid,
        "hotkey": HOTKEYS[uid],
        "model": f"miner{uid}/model@c{uid}",
        "block": 100 + uid,
        "mean_loss": 2.0 - 0.1 * uid,
        "win_rate": min(1.0, 0.2 * uid + 0.01 * step),
        "ci": (0.1, 0.9),
        "weight": 0.25,
        "score": 0.1 * uid + 0.001 * step,
        "losses": tuple(1.5 + 0.01 * k + 0.1 * uid for k in range(20)),
    }
    values.update(changes)
    return ModelRow(**values)  # type: ignore[arg-type]


def make_step(step: int, rows: tuple[ModelRow, ...], **changes: object) -> StepReport:
    values: dict[str, object] = {
        "step": step,
        "block": 5000 + 10 * step,
        "competition_id": "SN9_MODEL",
        "seed": step,
        "n_samples": 20,
        "seconds": 12.5,
        "rows": rows,
        "skipped": {},
    }
    values.update(changes)
    return StepReport(**values)  # type: ignore[arg-type]


def history(n_steps: int, uids: tuple[int, ...] = (0, 1, 2)) -> tuple[StepReport, ...]:
    return tuple(make_step(s, tuple(make_row(u, s) for u in uids)) for s in range(1, n_steps + 1))


class Page(HTMLParser):
    """Checks that every element is closed in order, and collects what the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.errors: list[str] = []
        self.series: dict[str, list[str]] = {}
        self.table_rows: list[list[str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def section(self) -> str | None:
        for tag, attrs in reversed(self.stack):
            if tag == "section":
                return attrs.get("id")
        return None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "path" and values.get("class") == "series":
            self.series.setdefault(self.section() or "", []).append(values["data-series"] or "")
        if tag == "tr" and any(t == "tbody" for t, _ in self.stack):
            self.table_rows.append([])
        if tag == "td" and any(t == "tbody" for t, _ in self.stack):
            self._cell = []
        if tag not in VOID:
            self.stack.append((tag, values))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack.append((tag, dict(attrs)))
        if tag == "path" and dict(attrs).get("class") == "series":
            self.series.setdefault(self.section() or "", []).append(dict(attrs)["data-series"] or "")
        self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"unexpected </{tag}> with open {[t for t, _ in self.stack][-3:]}")
            return
        self.stack.pop()
        if tag == "td" and self._cell is not None:
            self.table_rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert [tag for tag, _ in parser.stack] == []
    return parser


def test_page_structure_table_and_one_line_per_hotkey() -> None:
    steps = history(5)
    page = render_html(steps, now=NOW)
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "<script" not in page
    parsed = parse(page)
    text = "".join(parsed.text)
    assert "competition SN9_MODEL" in text and "step 5" in text and "block 5050" in text
    assert "2026-01-02 03:04:05 UTC" in text
    latest = sorted(steps[-1].rows, key=lambda r: -r.score)
    assert parsed.table_rows == [list(row_cells(row)) for row in latest]
    assert sorted(parsed.series["win-rate"]) == sorted(HOTKEYS[:3])
    assert sorted(parsed.series["score"]) == sorted(HOTKEYS[:3])
    assert page.count('class="box"') == 3
    assert "uid 2 · miner2/model@c2" in text  # legend label: uid and model name


def test_hotkeys_that_come_and_go_get_one_line_each() -> None:
    steps = (*history(3, (0, 1)), *history(2, (1, 2, 3)))
    steps = tuple(make_step(i + 1, s.rows) for i, s in enumerate(steps))
    parsed = parse(render_html(steps, now=NOW))
    assert sorted(parsed.series["win-rate"]) == sorted(HOTKEYS)
    assert len(parsed.table_rows) == 3


def test_miner_controlled_text_is_escaped() -> None:
    row = make_row(0, 1, model=EVIL, note=f'dup "{EVIL}"', hotkey=f"5{EVIL}")
    step = make_step(1, (row, make_row(1, 1)), skipped={f"5<img src=x onerror=alert(1)>{EVIL}": EVIL})
    page = render_html((step,), now=NOW)
    assert "<script" not in page
    assert "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parsed = parse(page)
    text = "".join(parsed.text)
    assert EVIL in text  # shown literally
    assert f"5{EVIL}" in parsed.series["win-rate"]


def test_single_step_and_non_finite_values() -> None:
    rows = (
        make_row(0, 1, losses=(math.inf, math.nan, math.inf), mean_loss=math.inf, score=math.nan),
        make_row(1, 1, win_rate=math.nan, ci=(math.nan, math.inf), losses=()),
        make_row(2, 1, losses=(1.0, math.inf, 2.0, math.nan, 3.0)),
    )
    page = render_html((make_step(1, rows),), now=NOW)
    parsed = parse(page)
    text = "".join(parsed.text)
    assert "no finite losses" in text
    assert re.search(r"\bnan\b|\binf\b", page, re.IGNORECASE) is None
    assert len(parsed.series["win-rate"]) == 3
    by_uid = {cells[0]: cells for cells in parsed.table_rows}
    assert by_uid["0"][4] == "-" and by_uid["0"][7] == "-"
    assert by_uid["1"][5] == "-"
    assert [cells[0] for cells in parsed.table_rows] == ["2", "1", "0"]


def test_all_losses_infinite_and_empty_inputs() -> None:
    rows = (make_row(0, 1, losses=(math.inf,) * 5, mean_loss=math.inf, win_rate=0.0),)
    page = render_html((make_step(1, rows),), now=NOW)
    assert "no finite losses" in page
    parse(page)
    empty = render_html((), now=NOW)
    assert "no finished steps yet" in empty
    parse(empty)
    no_rows = render_html((make_step(1, (), skipped={HOTKEYS[0]: "no commitment"}),), now=NOW)
    parsed = parse(no_rows)
    assert "no models evaluated" in no_rows and "no data yet" in no_rows and "no commitment" in no_rows
    assert parsed.series == {}


def test_plots_use_only_the_latest_competition() -> None:
    other = make_step(1, (make_row(3, 1),), competition_id="OTHER")
    parsed = parse(render_html((other, *history(2)[1:]), now=NOW))
    assert HOTKEYS[3] not in parsed.series["win-rate"]


def test_reporter_rewrites_the_file_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "site" / "leaderboard.html"
    reporter = LeaderboardReporter(target, clock=lambda: NOW)
    steps = history(3)
    reporter.report(steps[0], steps[:1])
    first = target.read_text(encoding="utf-8")
    assert "step <b>1</b>" in first
    writes: list[Path] = []
    import finetune.validator.leaderboard as module

    real = module.atomic_write_bytes

    def spy(path: Path, data: bytes) -> None:
        writes.append(Path(path))
        real(path, data)

    monkeypatch.setattr(module, "atomic_write_bytes", spy)
    reporter.report(steps[2], steps)
    second = target.read_text(encoding="utf-8")
    assert writes == [target, target.with_name("summary.json")]
    assert "step <b>3</b>" in second and "step <b>1</b>" not in second
    assert sorted(p.name for p in target.parent.iterdir()) == ["leaderboard.html", "summary.json"]
    # A history that does not end with the step still shows the step.
    reporter.report(steps[1], ())
    assert "step <b>2</b>" in target.read_text(encoding="utf-8")


def test_a_failed_write_keeps_the_old_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "leaderboard.html"
    reporter = LeaderboardReporter(target, clock=lambda: NOW)
    steps = history(2)
    reporter.report(steps[0], steps[:1])
    before = target.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("utilities.files.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        reporter.report(steps[1], steps)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.html", "summary.json"]


def test_svg_helpers() -> None:
    assert svg.nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.nice_ticks(1.0, 1.0) == [1.0]
    assert svg.quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    one_point = svg.line_chart(
        [svg.Series("k", "label", ((3.0, 0.5),)), svg.Series("e", "empty", ((3.0, math.nan),))],
        title="t",
        x_label="x",
        y_label="y",
    )
    assert one_point.count('class="series"') == 2 and "<circle" in one_point
    assert "no data yet" in svg.line_chart([], title="t", x_label="x", y_label="y")
    constant = svg.box_plot([svg.Box("same", (2.0,) * 10)], title="t", x_label="x")
    assert 'class="box"' in constant and "nan" not in constant.lower()


# ---- every miner, with its status ------------------------------------------------------------------


def record(hotkey: str, status: str, *, block: int = 100, competition: str = "SN9_MODEL", **extra: object):  # type: ignore[no-untyped-def]
    from model.data import ModelId, ModelMetadata
    from model.tracker import ModelRecord

    model_id = ModelId(
        namespace=hotkey[:8].lower(), name="m", commit="c" * 40, hash="h", competition_id=competition
    )
    return ModelRecord(
        hotkey=hotkey, status=status, metadata=ModelMetadata(id=model_id, block=block), **extra
    )  # type: ignore[arg-type]


def metagraph(hotkeys: list[str]):  # type: ignore[no-untyped-def]
    import numpy as np

    from model.storage.chain.protocol import Metagraph

    n = len(hotkeys)
    return Metagraph(
        block=7000, uids=np.arange(n, dtype=np.int64), hotkeys=tuple(hotkeys), stake=np.zeros(n),
        validator_permit=np.zeros(n, dtype=bool), incentive=np.zeros(n), consensus=np.zeros(n),
    )  # fmt: skip


KEYS = [f"5Miner{name}{'y' * 30}" for name in ("Strong", "Copier", "Pickle", "Wait", "Idle", "Other", "Gone")]


def statuses_scenario() -> tuple[StepReport, tuple[object, ...]]:
    from finetune.validator.records import miner_statuses

    records = {
        KEYS[0]: record(KEYS[0], "ok", block=100, weights_hash="W1"),
        KEYS[1]: record(KEYS[1], "ok", block=140, weights_hash="W1"),  # same weights, later
        KEYS[2]: record(
            KEYS[2], "rejected", reason="forbidden_file", message="pytorch_model.bin is not allowed"
        ),
        KEYS[3]: record(KEYS[3], "failed", reason="hub", message="download failed; retry in 60 s"),
        KEYS[4]: record(KEYS[4], "ok", block=120, weights_hash="W2"),
        KEYS[5]: record(KEYS[5], "ok", competition="other", weights_hash="W3"),  # another competition
        KEYS[6]: record(KEYS[6], "ok", weights_hash="W4"),  # no longer registered
    }
    step = make_step(
        4,
        (make_row(0, 4, hotkey=KEYS[0], model="strong/m@cccccccc"),),
        skipped={KEYS[4]: "not kept from the last step"},
    )
    graph = metagraph(KEYS[:6])  # KEYS[6] deregistered
    return step, miner_statuses(records, graph, step)


def test_miner_statuses_name_every_registered_miner_of_the_competition() -> None:
    _, statuses = statuses_scenario()
    got = {m.uid: (m.status, m.reason) for m in statuses}  # type: ignore[attr-defined]
    assert got == {
        0: ("evaluated", ""),
        1: ("copy", "same weights as uid 0, committed earlier"),
        2: ("rejected", "forbidden_file: pytorch_model.bin is not allowed"),
        3: ("waiting", "download failed; retry in 60 s"),
        4: ("not evaluated", "not kept from the last step"),
    }
    assert statuses[1].model == "5minerco/m@cccccccc"  # type: ignore[attr-defined]


def test_the_page_shows_every_miner_explains_scores_and_keeps_small_scores_visible(tmp_path: Path) -> None:
    import dataclasses

    step, statuses = statuses_scenario()
    steps = [*history(3), dataclasses.replace(step, miners=statuses)]  # type: ignore[arg-type]
    page = render_html(steps, now=NOW)
    parsed = parse(page)
    assert "copy" in page and "same weights as uid 0, committed earlier" in page
    assert (
        "forbidden_file: pytorch_model.bin is not allowed" in page and "not kept from the last step" in page
    )
    assert 'id="explain"' in page and "moving average" in page
    assert any("uid 0 · strong/m@cccccccc" in t for t in parsed.text)  # legends name the model
    # JSON round trip keeps the list
    assert StepReport.from_json(steps[-1].to_json()).miners == statuses


def test_score_axis_is_logarithmic_so_the_runner_up_is_not_flattened() -> None:
    series = [svg.Series("a", "a", ((1.0, 0.998),)), svg.Series("b", "b", ((1.0, 0.002),))]
    chart = svg.line_chart(series, title="t", x_label="x", y_label="y", y_range=(1e-4, 1.0), y_log=True)
    ys = [float(y) for y in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', chart)]
    top, bottom = 16.0, 340.0 - 44.0
    low_fraction = (bottom - ys[1]) / (bottom - top)  # 0.002 sits about 1/3 up, not on the floor
    assert 0.25 < low_fraction < 0.45 and ys[0] < top + 5
    assert ">0.001<" in chart and ">1<" in chart
    with pytest.raises(ValueError):
        svg.line_chart(series, title="t", x_label="x", y_label="y", y_log=True)


def test_page_and_summary_are_world_readable_and_statuses_filled_in(tmp_path: Path) -> None:
    import json
    import os

    step, statuses = statuses_scenario()
    target = tmp_path / "leaderboard.html"
    old = os.umask(0o077)
    try:
        LeaderboardReporter(target, clock=lambda: NOW, statuses=lambda _: statuses).report(step, (step,))  # type: ignore[arg-type,return-value]
    finally:
        os.umask(old)
    for path in (target, tmp_path / "summary.json"):
        assert path.stat().st_mode & 0o777 == 0o644
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [m["status"] for m in summary["miners"]] == [
        "evaluated",
        "copy",
        "rejected",
        "waiting",
        "not evaluated",
    ]
    assert summary["rows"][0]["losses"] == []


def test_http_server_serves_the_page_read_only(tmp_path: Path) -> None:
    import json
    import urllib.error
    import urllib.request

    from finetune.validator.serve import serve_leaderboard

    target = tmp_path / "leaderboard.html"
    (tmp_path / "validator_state.json").write_text("{}")
    server = serve_leaderboard(target, port=0)
    host, port = server.server_address[:2]
    base = f"http://{host}:{port}"
    try:
        assert host == "127.0.0.1"
        with pytest.raises(urllib.error.HTTPError) as early:
            urllib.request.urlopen(base + "/", timeout=5)
        assert early.value.code == 503  # no step finished yet
        steps = history(2)
        LeaderboardReporter(target, clock=lambda: NOW).report(steps[-1], steps)
        with urllib.request.urlopen(base + "/", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/html")
            assert response.read() == target.read_bytes()
        with urllib.request.urlopen(base + "/summary.json?x=1", timeout=5) as response:
            assert json.loads(response.read())["step"] == 2
        for path in ("/validator_state.json", "/../validator_state.json", "/%2e%2e/x", "/leaderboard.html/"):
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(base + path, timeout=5)
            assert missing.value.code == 404, path
        post = urllib.request.Request(base + "/", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(post, timeout=5)
        assert refused.value.code == 501
    finally:
        server.shutdown()
        server.server_close()
