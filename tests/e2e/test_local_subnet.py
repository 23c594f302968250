"""The README's first command, scaled down: real miner and validator processes on the local network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1000)  # the run has its own 900 s limit; 300 s is too short on a busy machine
def test_local_subnet_end_to_end(tmp_path: Path) -> None:
    net = tmp_path / "net"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "local_subnet.py"), "--dir", str(net), "--quick",
         "--steps", "3"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((net / "summary.json").read_text())
    miners = summary["miners"]
    strong, weak, untrained = miners["strong"], miners["weak"], miners["untrained"]
    copier, pickler = miners["copier"], miners["pickler"]

    # trained miners beat the untrained one, on loss and on weight
    assert strong["mean_loss"] < weak["mean_loss"] < untrained["mean_loss"]
    assert strong["weight"] > weak["weight"] > untrained["weight"]
    # the copier of the leader's model earns at most 5% of the leader's weight
    assert copier["status"] == "ok" and copier["weight"] <= 0.05 * strong["weight"]
    # the pickle-only model is rejected before download with its reason, and its payload never ran
    assert pickler["status"] == "rejected (no_weights)"
    assert summary["pickle_payload_ran"] is False and not (net / "PICKLE_PAYLOAD_RAN").exists()
    # the chain holds the weights the validator computed, and consensus follows them
    assert summary["weights_match"] is True
    assert max(miners.values(), key=lambda m: m["incentive"]) is strong
    assert "local subnet after 3 validator steps" in result.stdout
    assert (net / "validator" / "leaderboard.html").stat().st_size > 1000
    # the demo shows each miner's progress and the elapsed time while they train
    assert "training miners done" in result.stdout and "elapsed" in result.stdout
    # the leaderboard lists every miner with its status: the copy and the rejected pickle model too
    page = json.loads((net / "validator" / "summary.json").read_text())
    statuses = {m["uid"]: (m["status"], m["reason"]) for m in page["miners"]}
    assert statuses[copier["uid"]] == ("copy", f"same weights as uid {strong['uid']}, committed earlier")
    assert statuses[pickler["uid"]][0] == "rejected" and "no_weights" in statuses[pickler["uid"]][1]
    assert statuses[strong["uid"]][0] == "evaluated"
    assert (net / "validator" / "leaderboard.html").stat().st_mode & 0o777 == 0o644
