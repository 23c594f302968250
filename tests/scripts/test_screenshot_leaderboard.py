"""The leaderboard as a browser shows it: served over HTTP (--leaderboard.port) and rendered by headless
Chromium. Skipped where no Chromium is installed (``apt-get install chromium``)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "screenshot_leaderboard", ROOT / "scripts" / "screenshot_leaderboard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["screenshot_leaderboard"] = module
    spec.loader.exec_module(module)
    return module


def test_demo_page_has_this_subnets_competition_and_every_miner(tmp_path: Path) -> None:
    script = load_script()
    page = tmp_path / "leaderboard.html"
    script.write_demo(page)
    html = page.read_text()
    assert "competition l3" in html and "SN9" not in html
    for status in ("evaluated", "copy", "rejected", "waiting", "not evaluated"):
        assert f"<td>{status}</td>" in html


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_headless_chromium_renders_every_section(tmp_path: Path) -> None:
    script = load_script()
    page = tmp_path / "leaderboard.html"
    script.write_demo(page)
    assert script.check_in_browser(page, browser=shutil.which("chromium")) == []
    shot = tmp_path / "shot.png"
    script.screenshot(page, shot, browser=shutil.which("chromium"), width=800, height=600)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
