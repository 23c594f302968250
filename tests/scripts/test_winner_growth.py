"""scripts/winner_growth.py: the growth of a new winner's share under the kept moving-average rule."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "winner_growth.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("winner_growth", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["winner_growth"] = module
    spec.loader.exec_module(module)
    return module


def test_the_share_follows_one_minus_alpha_to_the_k(capsys: pytest.CaptureFixture[str]) -> None:
    script = load()
    points = script.growth(alpha=0.9, steps=10, competitions=2)
    for point in points:
        assert point.new_share == pytest.approx(0.5 * (1 - 0.9**point.step), rel=1e-4)
        assert point.new_share + point.incumbent_share == pytest.approx(0.5)
    assert script.main(["--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "passes the incumbent at step 7 (~1260 blocks, 4.2 h)" in out
    with pytest.raises(SystemExit):
        script.main(["--alpha", "1.5"])
