"""A whole subnet on this machine: miners that train and publish, a validator that scores them.

    bash scripts/demo.sh                 # installs what it needs, then runs this
    python scripts/local_subnet.py --dir localnet --steps 6

Creates a local network folder (chain file, model hub, wallets), registers a validator and five miners,
and runs them as separate processes:

- strong:    trains longest (``neurons/miner.py``) and publishes its best model
- weak:      trains briefly
- untrained: publishes the base model untouched (``scripts/upload_model.py``)
- copier:    re-uploads the strong miner's final model under its own hotkey, committed later
- pickler:   publishes a model whose weights are only a ``pytorch_model.bin`` whose unpickling would create
             a marker file (validators never download it: the repository has no safetensors weights)

then runs the validator (``neurons/validator.py``) for ``--steps`` steps, prints the final leaderboard
(validator scores and the chain's consensus incentive) and writes ``DIR/validator/leaderboard.html`` and
``DIR/summary.json``. ``--miners N`` adds more trained miners with varied budgets.

``--competition smol`` runs the same demo on the smol competition (every process gets
``--localnet.competition smol``): the miners fine-tune the real pretrained SmolLM2-135M-Instruct (converted
once by ``finetune.smol``) with a small learning rate and short budgets, and the untrained miner publishes
that pretrained model untouched.

``--competition local-tasks`` runs the local competition judged on three tasks (synthetic responses,
multiple choice over the same tasks, word sorting by greedy generation): the miners' synthetic training
data mixes in word sorting, and ``summary.json`` gives each miner's combined win rate and its per-task
win rates and means.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from constants.competitions import LOCAL, LOCAL_TASKS, SMOL, Competition  # noqa: E402
from finetune.mining import fresh_model  # noqa: E402
from finetune.publishing import Publisher  # noqa: E402
from finetune.smol import ensure_smollm2  # noqa: E402
from finetune.tokenization import load_tokenizer  # noqa: E402
from finetune.training import save_model  # noqa: E402
from finetune.validator.state import ValidatorState  # noqa: E402
from model.data import ModelId  # noqa: E402
from model.network import local_wallet  # noqa: E402
from model.storage.chain.local_chain import LocalChain  # noqa: E402
from model.storage.hub.local_hub import LocalHub  # noqa: E402
from model.tracker import ModelTracker  # noqa: E402
from utilities.errors import ConfigError  # noqa: E402
from utilities.progress import duration  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 120)
PYTHON = sys.executable
COMPETITIONS = {"local": LOCAL, "smol": SMOL, LOCAL_TASKS.id: LOCAL_TASKS}
SMOL_MINER_ARGS = ["--lr", "2e-5", "--eval_samples", "32", "--accumulation_steps", "2"]
"""Fine-tuning the 135M-parameter model on 2 CPU cores: a small learning rate, short held-out evaluations."""


@dataclass
class Miner:
    name: str
    role: str
    epochs: int = 0
    samples: int = 0
    hotkey: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class _Payload:
    """Unpickling this would create the marker file: the validator must never unpickle it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Path(self.marker).touch, ())  # type: ignore[return-value]


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROGRESS_EVERY_S = 20.0
"""Off a terminal, how often the demo writes the miners' progress (on one, the status line is live)."""


def last_line(log: Path, limit: int = 110) -> str:
    """The miner's latest progress: the last non-empty line of its log (a bar's carriage returns split
    lines too), without colours, cut to ``limit`` characters."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 8192))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ANSI.sub("", line).strip() for line in re.split(r"[\r\n]+", tail)]
    lines = [line for line in lines if line]
    text = lines[-1] if lines else "starting"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def miners_progress(root: Path, miners: list[Miner], started: float) -> str:
    """One line per training miner (its latest log line), headed by the elapsed time."""
    running = [m for m in miners if m.process is not None]
    done = sum(m.process.poll() is not None for m in running if m.process is not None)
    lines = [f"{duration(time.monotonic() - started)} elapsed · {done}/{len(running)} training miners done"]
    for miner in running:
        state = "done" if miner.process is not None and miner.process.poll() is not None else "training"
        lines.append(f"  {miner.name} ({state}): {last_line(root / 'logs' / f'{miner.name}.log')}")
    return "\n".join(lines)


def wait_for_miners(root: Path, miners: list[Miner], started: float, status: Any) -> None:
    """Wait for every training miner, showing each one's progress (epoch/step, loss, ETA from its log)
    live on a terminal, or every ``PROGRESS_EVERY_S`` seconds off one."""
    last_print = time.monotonic()
    while True:
        text = miners_progress(root, miners, started)
        status.update(text)
        if not console.is_terminal and time.monotonic() - last_print >= PROGRESS_EVERY_S:
            console.print(text, soft_wrap=True)
            last_print = time.monotonic()
        for miner in miners:
            if miner.process is not None and miner.process.poll() not in (None, 0):
                raise SystemExit(
                    f"the {miner.name} miner failed, see {root / 'logs' / (miner.name + '.log')}"
                )
        if all(m.process is None or m.process.poll() is not None for m in miners):
            return
        time.sleep(1.0)


def watch_validator(process: subprocess.Popen[bytes], log: Path, started: float) -> None:
    """Wait for the validator, showing its latest log line and the elapsed time."""
    with console.status("the validator is starting...") as status:
        last_print = time.monotonic()
        while process.poll() is None:
            text = f"{duration(time.monotonic() - started)} elapsed · validator: {last_line(log)}"
            status.update(text)
            if not console.is_terminal and time.monotonic() - last_print >= PROGRESS_EVERY_S:
                console.print(text, soft_wrap=True)
                last_print = time.monotonic()
            time.sleep(1.0)
    if process.returncode != 0:
        raise SystemExit(f"the validator failed, see {log}")


def run_logged(command: list[str], log: Path, *, wait: bool) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    if wait and process.wait() != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed, see {log}")
    return process


def publisher(root: Path, name: str, hotkey: str) -> Publisher:
    chain = LocalChain(root / "chain.sqlite", hotkey=hotkey)
    return Publisher(chain=chain, hub=LocalHub(root / "hub", user=name), hotkey=hotkey, wait_s=0.5)


def base_model(competition: Competition, folder: Path, *, seed: int) -> None:
    """Write the competition's starting model to ``folder``: a fresh tiny model (local) or a copy of the
    pretrained SmolLM2 (smol)."""
    if competition.id == SMOL.id:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(ensure_smollm2(), folder)
    else:
        model = fresh_model(competition, seed=seed, dtype=torch.float32)
        save_model(model, load_tokenizer(competition), folder)


def repo_name(miner: Miner, competition: Competition) -> str:
    return f"{miner.name}/{'tiny' if competition.id == LOCAL.id else competition.id}"


def publish_untrained(root: Path, miner: Miner, competition: Competition) -> None:
    folder = root / "miners" / miner.name / "model"
    base_model(competition, folder, seed=123)
    run_logged(
        [PYTHON, "scripts/upload_model.py", "--localnet", str(root), "--localnet.competition", competition.id,
         "--wallet.name", miner.name, "--model_dir", str(folder),
         "--hf_repo_id", repo_name(miner, competition), "--competition_id", competition.id],
        root / "logs" / f"{miner.name}.log", wait=True,
    )  # fmt: skip


def publish_copy(root: Path, miner: Miner, victim: Miner, competition: Competition) -> str:
    chain = LocalChain(root / "chain.sqlite")
    commitment = chain.commitment(victim.hotkey)
    if commitment is None:
        raise SystemExit(f"the {victim.name} miner published nothing: see {root / 'logs'}")
    original = ModelId.from_compressed_str(commitment.data)
    copy = root / "miners" / miner.name / "model"
    shutil.rmtree(copy, ignore_errors=True)
    LocalHub(root / "hub").download(original.repo_id, commit=original.commit or "", dest=copy)
    publisher(root, miner.name, miner.hotkey).publish(
        copy, repo_id=repo_name(miner, competition), competition_id=competition.id
    )
    return original.repo_id


def publish_pickle(root: Path, miner: Miner, competition: Competition) -> Path:
    folder = root / "miners" / miner.name / "model"
    base_model(competition, folder, seed=7)
    marker = root / "PICKLE_PAYLOAD_RAN"
    # weights only as a pickle: a pickle beside safetensors weights would simply never be downloaded
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    publisher(root, miner.name, miner.hotkey).publish(
        folder, repo_id=repo_name(miner, competition), competition_id=competition.id
    )
    return marker


def leaderboard(root: Path, miners: list[Miner], validator_hotkey: str) -> dict[str, Any]:
    chain = LocalChain(root / "chain.sqlite")
    graph = chain.metagraph()
    state = ValidatorState.load(root / "validator" / "state" / "validator_state.json")
    tracker = ModelTracker.load(root / "validator" / "state" / "tracker.json")
    on_chain = chain.weights(validator_hotkey)
    total = sum(state.scores.values()) or 1.0
    table = Table(title=f"local subnet after {state.step} validator steps (block {graph.block})")
    for column in ("uid", "miner", "role", "model status", "mean loss", "weight", "incentive"):
        table.add_column(
            column, justify="right" if column in ("uid", "mean loss", "weight", "incentive") else "left"
        )
    rows = {}
    last = {row.hotkey: row for row in state.history[-1].rows} if state.history else {}
    for miner in miners:
        uid = graph.uid_of(miner.hotkey)
        record = tracker.get(miner.hotkey)
        status = (
            "not published"
            if record is None
            else record.status + (f" ({record.reason})" if record.reason else "")
        )
        loss = last[miner.hotkey].mean_loss if miner.hotkey in last else None
        weight = state.scores.get(miner.hotkey, 0.0) / total
        incentive = float(graph.incentive[uid]) if uid is not None else 0.0
        scored = last.get(miner.hotkey)
        rows[miner.name] = {
            "uid": uid, "role": miner.role, "status": status, "mean_loss": loss, "weight": weight,
            "chain_weight": on_chain.get(uid, 0.0) if uid is not None else 0.0, "incentive": incentive,
            "win_rate": None if scored is None else scored.win_rate,
            "tasks": {} if scored is None else {
                t.name: {"win_rate": t.win_rate, "mean": t.mean, "weight": t.weight} for t in scored.tasks
            },
        }  # fmt: skip
        table.add_row(
            str(uid), miner.name, miner.role, status,
            "-" if loss is None else f"{loss:.4f}", f"{weight:.4f}", f"{incentive:.4f}",
        )  # fmt: skip
    console.print(table)
    # the chain holds exactly the weights the validator last computed and sent
    sent = state.last_weights
    match = (
        bool(sent)
        and set(sent) == set(on_chain)
        and all(abs(on_chain[u] - w) < 1e-9 for u, w in sent.items())
    )
    return {"steps": state.step, "block": graph.block, "miners": rows, "weights_match": match}


def plan_miners(count: int, *, smol: bool, quick: bool) -> list[Miner]:
    """The five roles, then extra trained miners with varied budgets, ``count`` in all."""
    scale = 1 if quick else 4
    if smol:  # (epochs, samples per epoch) of the strong and weak miners, fine-tuning 135M params on CPU
        strong, weak = ((1, 48), (1, 16)) if quick else ((2, 96), (1, 32))
    else:
        strong, weak = (2 if quick else 3, 256 * scale), (1, 32 * scale)
    miners = [
        Miner("strong", "trained longest", epochs=strong[0], samples=strong[1]),
        Miner("weak", "trained briefly", epochs=weak[0], samples=weak[1]),
        Miner("untrained", "base model untouched"),
        Miner("copier", "re-uploads strong's model"),
        Miner("pickler", "weights only as pickle"),
    ]
    for k in range(max(0, count - len(miners))):
        samples = 16 * (1 + k % 3) if smol else 64 * scale * (1 + k % 3)
        miners.append(Miner(f"trainer{k}", "trained", epochs=1 + k % 2, samples=samples))
    return miners[: max(count, 1)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir", type=Path, default=ROOT / "localnet", help="the local network folder (recreated)"
    )
    parser.add_argument(
        "--competition", choices=sorted(COMPETITIONS), default="local",
        help="local: tiny models trained from scratch; smol: fine-tune the pretrained SmolLM2-135M-Instruct; "
        "local-tasks: local judged on three tasks (responses, multiple choice, word sorting)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="validator steps (6; smol: 4)")
    parser.add_argument("--miners", type=int, default=5, help="miners (5 roles, then extra trained miners)")
    parser.add_argument("--samples", type=int, default=None, help="validator samples per step (64; smol: 48)")
    parser.add_argument("--quick", action="store_true", help="small budgets (the end-to-end test)")
    args = parser.parse_args(argv)
    smol = args.competition == SMOL.id
    args.steps = args.steps if args.steps is not None else (4 if smol else 6)
    args.samples = args.samples if args.samples is not None else (48 if smol else 64)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    started = time.monotonic()
    competition = COMPETITIONS[args.competition]
    smol = competition.id == SMOL.id
    if smol:
        try:
            console.print(f"SmolLM2-135M-Instruct in {ensure_smollm2()} (converted once)")
        except ConfigError as exc:
            raise SystemExit(f"--competition smol: {exc}") from exc
    root = args.dir.resolve()
    shutil.rmtree(root, ignore_errors=True)
    chain = LocalChain(root / "chain.sqlite", seconds_per_block=1.0)
    miners = plan_miners(args.miners, smol=smol, quick=args.quick)
    validator = local_wallet(root / "wallets", "validator", "default").hotkey.ss58_address
    chain.register(validator, stake=1000.0, validator_permit=True)
    for miner in miners:
        miner.hotkey = local_wallet(root / "wallets", miner.name, "default").hotkey.ss58_address
        chain.register(miner.hotkey)
    console.print(
        f"[bold]local network in {root}[/] ({competition.id} competition): 1 validator, "
        f"{len(miners)} miners; logs in {root / 'logs'}"
    )

    network = ["--localnet", str(root), "--localnet.competition", competition.id]
    for seed, miner in enumerate(miners):
        if miner.epochs:
            miner.process = run_logged(
                [PYTHON, "neurons/miner.py", *network, "--wallet.name", miner.name,
                 "--hf_repo_id", repo_name(miner, competition),
                 "--model_dir", str(root / "miners" / miner.name),
                 "--num_epochs", str(miner.epochs), "--samples_per_epoch", str(miner.samples),
                 "--seed", str(seed), "--wandb.off", "--avg_loss_upload_threshold", "0",
                 *(SMOL_MINER_ARGS if smol else [])],
                root / "logs" / f"{miner.name}.log", wait=False,
            )  # fmt: skip
    by_name = {m.name: m for m in miners}
    with console.status("miners are starting...") as status:
        if "untrained" in by_name:
            publish_untrained(root, by_name["untrained"], competition)
        marker = (
            publish_pickle(root, by_name["pickler"], competition)
            if "pickler" in by_name
            else root / "PICKLE_PAYLOAD_RAN"
        )
        wait_for_miners(root, miners, started, status)
        if "copier" in by_name and "strong" in by_name:
            chain.advance(2)  # the copy is committed strictly later than the original
            publish_copy(root, by_name["copier"], by_name["strong"], competition)
    console.print(miners_progress(root, miners, started), soft_wrap=True)
    console.print(f"miners done after {time.monotonic() - started:.0f} s; starting the validator")

    chain.advance(2)
    validator_log = root / "logs" / "validator.log"
    process = run_logged(
        [PYTHON, "neurons/validator.py", *network, "--wallet.name", "validator",
         "--device", "cpu", "--wandb.off", "--max_steps", str(args.steps),
         "--state_dir", str(root / "validator" / "state"), "--model_dir", str(root / "validator" / "models"),
         "--leaderboard", str(root / "validator" / "leaderboard.html"),
         "--samples_per_step", str(args.samples), "--blocks_per_epoch", "3",
         "--weights_check_seconds", "1", "--sample_min", str(len(miners))],
        validator_log, wait=False,
    )  # fmt: skip
    watch_validator(process, validator_log, started)
    summary = leaderboard(root, miners, validator)
    summary["competition"] = competition.id
    summary["pickle_payload_ran"] = marker.exists()
    summary["seconds"] = time.monotonic() - started
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"leaderboard: {root / 'validator' / 'leaderboard.html'}")
    console.print(f"pickle payload ran: {marker.exists()} · finished in {summary['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
