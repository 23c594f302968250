"""Screenshot the HTML leaderboard with headless Chromium (for docs and for eyeballing the page).

Run from the repository root::

    python scripts/screenshot_leaderboard.py PATH.html OUT.png           # an existing leaderboard
    python scripts/screenshot_leaderboard.py --demo PATH.html OUT.png    # first write a demo page

``--demo`` writes a leaderboard built from a few fake steps (fixed seed) to ``PATH.html``. Chromium is
not a dependency of the project: install it (e.g. ``apt-get install chromium``) or pass ``--chromium``.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from finetune.validator.leaderboard import LeaderboardReporter  # noqa: E402
from finetune.validator.records import MinerStatus, ModelRow, StepReport  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def demo_history(n_steps: int = 24, seed: int = 0) -> tuple[StepReport, ...]:
    """Fake steps: six miners of different strength, one joining late, one duplicate, one failing model
    with infinite losses, skipped hotkeys, and a hostile model name (shown escaped)."""
    rng = random.Random(seed)
    miners = [
        (1, "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty", "alice/llama-ft@9f2c1e7", 2.05),
        (4, "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy", "bob/mistral-sft@41ab0c2", 2.12),
        (7, "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", "carol/phi-tune@c0ffee1", 2.2),
        (9, "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw", "<script>alert(1)</script>@bad", 2.3),
        (12, "5CiPPseXPECbkjWCa6MnjNokrgYjMqmKndv2rSnekmSK2DjL", "dave/copy@41ab0c2", 2.12),
        (15, "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y", "erin/late-entry@77aa001", 1.98),
    ]
    scores: dict[int, float] = {}
    steps = []
    for number in range(1, n_steps + 1):
        present = [m for m in miners if m[0] != 15 or number > n_steps // 2]
        losses = {
            uid: [max(0.05, rng.gauss(base - 0.004 * number * (uid % 3), 0.35)) for _ in range(64)]
            for uid, _, _, base in present
        }
        losses[12] = losses[4]  # a copy of uid 4 (same weights, same losses)
        losses[9] = [math.inf] * 64 if number == n_steps else losses[9]
        means = {uid: sum(v) / len(v) for uid, v in losses.items()}
        wins = {
            uid: sum(
                sum(a < b for a, b in zip(losses[uid], losses[other], strict=True)) / 64
                for other in losses
                if other != uid
            )
            / max(1, len(losses) - 1)
            for uid in losses
        }
        wins[12] = 0.0  # duplicate of uid 4
        total = sum(math.exp(8 * w) for uid, w in wins.items() if uid != 12)
        rows = []
        for uid, hotkey, model, _ in present:
            weight = 0.0 if uid == 12 else math.exp(8 * wins[uid]) / total
            scores[uid] = 0.8 * scores.get(uid, 0.0) + 0.2 * weight
            note = {12: "same model as an earlier commit"}.get(uid, "")
            if uid == 9 and number == n_steps:
                note = "evaluation failed: CUDA error: device-side assert triggered"
            spread = 1.96 * math.sqrt(max(wins[uid] * (1 - wins[uid]), 1e-4) / 64)
            rows.append(
                ModelRow(
                    uid=uid,
                    hotkey=hotkey,
                    model=model,
                    block=3_400_000 + uid * 1000,
                    mean_loss=means[uid],
                    win_rate=wins[uid],
                    ci=(max(0.0, wins[uid] - spread), min(1.0, wins[uid] + spread)),
                    weight=weight,
                    score=scores[uid],
                    note=note,
                    losses=tuple(losses[uid]) if number == n_steps else (),
                )
            )
        steps.append(
            StepReport(
                step=number,
                block=3_512_000 + 360 * number,
                competition_id="l3",
                seed=rng.randrange(2**32),
                n_samples=64,
                seconds=rng.uniform(70, 110),
                rows=tuple(rows),
                skipped={
                    "5EYCAe5ijiYfyeZ2JJCGq56LmPyNRAKzpG4QkoQkkQNB5e6Z": "not kept from the last step",
                },
                miners=demo_miners(miners) if number == n_steps else (),
            )
        )
    return tuple(steps)


def demo_miners(miners: list[tuple[int, str, str, float]]) -> tuple[MinerStatus, ...]:
    """The per-miner status list of the last demo step: the evaluated ones, a copy, a rejected pickle
    model, one waiting for its download and one not evaluated this step."""
    statuses = [
        MinerStatus(uid, hotkey, model, "copy" if uid == 12 else "evaluated",
                    "same weights as uid 4, committed earlier" if uid == 12 else "")
        for uid, hotkey, model, _ in miners
    ]  # fmt: skip
    statuses += [
        MinerStatus(18, "5EYCAe5ijiYfyeZ2JJCGq56LmPyNRAKzpG4QkoQkkQNB5e6Z", "frank/llama-old@0a1b2c3d",
                    "not evaluated", "not kept from the last step"),
        MinerStatus(21, "5Ck5SLSHYac6WFt5UZRSsdJjwmpSZq85fd5TRNAdZQVzEAPT", "mallory/pickled@deadbeef",
                    "rejected", "forbidden_file: pytorch_model.bin is not allowed (pickle)"),
        MinerStatus(23, "5HpG9w8EBLe5XCrbczpwq5TSXvedjrBGCwqxK1iQ7qUsSWFc", "grace/llama-8b@5e6f7a8b",
                    "waiting", "download failed (hub timeout); retry in 10 min"),
    ]  # fmt: skip
    return tuple(statuses)


def write_demo(path: Path) -> None:
    history = demo_history()
    reporter = LeaderboardReporter(
        path, refresh_s=None, clock=lambda: datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    )
    reporter.report(history[-1], history)


def find_browser(explicit: str | None) -> str | None:
    if explicit:
        return shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(
    html: Path, out: Path, *, browser: str, width: int = 1280, height: int = 1800, timeout_s: float = 90.0
) -> None:
    """Render ``html`` with headless Chromium into ``out`` (PNG); raises ``RuntimeError`` on failure."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="leaderboard-chromium-") as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{browser} did not finish within {timeout_s:.0f} s") from exc
    if result.returncode != 0 or not out.is_file():
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise RuntimeError(f"{browser} exited with {result.returncode} and no screenshot:\n{tail}")


CHECKED_IDS = ("leaderboard", "every-miner", "explain", "win-rate", "score", "losses")


def dump_dom(url: str, *, browser: str, timeout_s: float = 90.0) -> str:
    """The DOM headless Chromium builds from ``url`` (what a person's browser would show)."""
    with tempfile.TemporaryDirectory(prefix="leaderboard-chromium-") as profile:
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
            f"--user-data-dir={profile}", "--dump-dom", url,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{browser} exited with {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def check_in_browser(html: Path, *, browser: str) -> list[str]:
    """Serve ``html`` as ``--leaderboard.port`` does and load it in headless Chromium; returns what is
    missing from the rendered page (nothing when it is whole)."""
    from finetune.validator.serve import serve_leaderboard

    server = serve_leaderboard(html, port=0)
    port = server.server_address[1]
    try:
        dom = dump_dom(f"http://127.0.0.1:{port}/", browser=browser)
    finally:
        server.shutdown()
        server.server_close()
    missing = [f"#{name}" for name in CHECKED_IDS if f'id="{name}"' not in dom]
    if "<script" in dom.replace("&lt;script", ""):
        missing.append("(an unescaped <script> element)")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("html", type=Path, help="leaderboard HTML file")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--demo", action="store_true", help="first write a demo leaderboard to HTML")
    parser.add_argument("--chromium", help="browser binary (default: the first Chromium/Chrome on PATH)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1800)
    parser.add_argument("--check", action="store_true", help="also load it over HTTP and check the DOM")
    args = parser.parse_args(argv)

    if args.demo:
        write_demo(args.html)
        print(f"wrote demo leaderboard {args.html}")
    if not args.html.is_file():
        print(f"error: {args.html} does not exist (use --demo to write a demo page)", file=sys.stderr)
        return 2
    browser = find_browser(args.chromium)
    if browser is None:
        wanted = args.chromium or " / ".join(BROWSERS)
        print(
            f"error: no headless browser found ({wanted}); install Chromium, e.g. "
            "`apt-get install chromium`, or pass --chromium PATH",
            file=sys.stderr,
        )
        return 2
    try:
        screenshot(args.html, args.out, browser=browser, width=args.width, height=args.height)
        if args.check:
            missing = check_in_browser(args.html, browser=browser)
            if missing:
                print(f"error: the page in {browser} lacks {', '.join(missing)}", file=sys.stderr)
                return 1
            print(f"checked in {browser}: every section rendered")
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
