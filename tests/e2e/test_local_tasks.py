"""The demo on the local competition judged three ways: real miner and validator processes, a short run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TASKS = {"responses", "choice", "sorting"}


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("FINETUNE_E2E_TASKS") != "1",
    reason="~4 min on 2 cores: keeps CI under 20 min; a validator step on local-tasks runs in CI "
    "(tests/finetune/validator); FINETUNE_E2E_TASKS=1 runs the whole demo",
)
@pytest.mark.timeout(1000)  # the run has its own 900 s limit
def test_local_tasks_end_to_end(tmp_path: Path) -> None:
    net = tmp_path / "net"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "local_subnet.py"), "--dir", str(net), "--quick",
         "--competition", "local-tasks", "--miners", "3", "--steps", "2"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((net / "summary.json").read_text())
    assert summary["competition"] == "local-tasks"
    miners = summary["miners"]
    strong, weak, untrained = miners["strong"], miners["weak"], miners["untrained"]
    # every evaluated miner has its numbers on each of the three tasks, weights summing to 1
    for miner in (strong, weak, untrained):
        assert set(miner["tasks"]) == TASKS
        assert sum(t["weight"] for t in miner["tasks"].values()) == pytest.approx(1.0)
        combined = sum(t["weight"] * t["win_rate"] for t in miner["tasks"].values())
        assert miner["win_rate"] == pytest.approx(combined)
    # the strong miner leads on the combined score, and so on weight
    assert strong["win_rate"] > weak["win_rate"] and strong["win_rate"] > untrained["win_rate"]
    assert strong["weight"] > weak["weight"] and strong["weight"] > untrained["weight"]
    # training lowers the response loss (a short run teaches a tiny model little multiple choice and
    # no word sorting: those scores stay near chance and 0, so only their bounds are checked)
    assert strong["tasks"]["responses"]["mean"] < weak["tasks"]["responses"]["mean"]
    assert strong["tasks"]["responses"]["mean"] < untrained["tasks"]["responses"]["mean"]
    for miner in (strong, weak, untrained):
        assert all(0.0 <= miner["tasks"][name]["mean"] <= 1.0 for name in ("choice", "sorting"))
    assert summary["weights_match"] is True
    # the leaderboard shows the tasks too
    page = json.loads((net / "validator" / "summary.json").read_text())
    assert TASKS <= set(json.dumps(page).split('"'))
