"""The demo's progress display: each miner's latest line from its log, bars and colours included."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("local_subnet", ROOT / "scripts" / "local_subnet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_subnet"] = module
    spec.loader.exec_module(module)
    return module


def test_last_line_of_a_log_with_bars_and_colours(tmp_path: Path) -> None:
    script = load_script()
    log = tmp_path / "strong.log"
    log.write_bytes(
        b"2026-12-02 03:41:20 INFO    model.network: local network\n"
        b"epoch 0:   0%|          | 0/64 [00:00<?, ?it/s]\r"
        b"\x1b[32mepoch 0:  50%|#####     | 32/64 [00:10<00:10, 3.1it/s, loss=3.120]\x1b[0m\r\n\n"
    )
    assert script.last_line(log) == "epoch 0:  50%|#####     | 32/64 [00:10<00:10, 3.1it/s, loss=3.120]"
    assert script.last_line(tmp_path / "missing.log") == ""
    log.write_text("x" * 500)
    assert len(script.last_line(log, limit=40)) == 40


def test_miners_progress_names_each_training_miner(tmp_path: Path) -> None:
    import subprocess

    script = load_script()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "strong.log").write_text("step 3 epoch 1: held-out 2.5 (best 2.5)\n")
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    miners = [
        script.Miner("strong", "trained longest", epochs=1, process=done),
        script.Miner("untrained", "base model untouched"),
    ]
    text = script.miners_progress(tmp_path, miners, started=0.0)
    lines = text.splitlines()
    assert lines[0].endswith("elapsed · 1/1 training miners done")
    assert lines[1] == "  strong (done): step 3 epoch 1: held-out 2.5 (best 2.5)" and len(lines) == 2
