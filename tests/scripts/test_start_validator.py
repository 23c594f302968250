from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("start_validator", ROOT / "scripts" / "start_validator.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeRunner:
    def __init__(self, answers: dict[str, tuple[int, str]]) -> None:
        self.answers = answers
        self.commands: list[list[str]] = []

    def __call__(self, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.commands.append(list(command))
        for prefix, (code, out) in self.answers.items():
            if " ".join(command).startswith(prefix):
                return subprocess.CompletedProcess(list(command), code, out, "boom" if code else "")
        return subprocess.CompletedProcess(list(command), 0, "", "")


def test_update_detected_only_when_upstream_moved() -> None:
    script = load_script()
    same = FakeRunner({"git rev-parse HEAD": (0, "abc\n"), "git rev-parse @{upstream}": (0, "abc\n")})
    assert not script.update_available(same)
    moved = FakeRunner({"git rev-parse HEAD": (0, "abc\n"), "git rev-parse @{upstream}": (0, "def\n")})
    assert script.update_available(moved)
    offline = FakeRunner({"git fetch": (1, "")})
    assert not script.update_available(offline)
    assert offline.commands == [["git", "fetch", "--quiet"]]


def test_apply_update_pulls_installs_and_restarts_or_stops_at_a_failure() -> None:
    script = load_script()
    ok = FakeRunner({})
    assert script.apply_update("v", ok)
    assert ok.commands[0][:2] == ["git", "pull"] and ["pm2", "restart", "v"] in ok.commands
    failing_pull = FakeRunner({"git pull": (1, "")})
    assert not script.apply_update("v", failing_pull)
    assert not any(c[:2] == ["pm2", "restart"] for c in failing_pull.commands)


def test_pm2_command_runs_the_validator_with_its_arguments() -> None:
    command = load_script().pm2_start_command("v", ["--wallet.name", "w"])
    assert command[:2] == ["pm2", "start"] and command[2].endswith("neurons/validator.py")
    assert command[-3:] == ["--", "--wallet.name", "w"] and sys.executable in command
