"""``finetune-status``: what the subnet looks like now, for a netuid (real network or ``--localnet DIR``).

One row per uid: hotkey, stake and validator permit, the committed model (or why it is not one), the
chain's incentive, and the weight this validator last set on it (from ``--state_dir``'s state file; on
the local network also what the chain holds). Read-only: no wallet is needed unless ``--wallet.*``
names the validator whose on-chain weights to show."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.cli import types
from finetune.cli.config_file import expand_config
from finetune.cli.shared import add_config_arg, check_network_args
from model.network import Network, add_network_args

if TYPE_CHECKING:
    from rich.table import Table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune-status",
        description="Print each uid's commitment, model, incentive and the weights this validator last set.",
    )
    add_config_arg(parser)
    add_network_args(parser)
    group = parser.add_argument_group("status")
    group.add_argument(
        "--state_dir", type=types.folder, default=Path("~/.finetune/validator"),
        help="the validator's state folder, for the weights it last set (default: %(default)s)",
    )  # fmt: skip
    group.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(expand_config(parser, sys.argv[1:] if argv is None else argv))
    check_network_args(parser, args)
    return args


def _last_weights(state_dir: Path) -> tuple[int | None, dict[int, float]]:
    """(block, weights by uid) the validator last set, from its state file (nothing if absent)."""
    path = state_dir.expanduser() / "validator_state.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        weights = {int(uid): float(w) for uid, w in data.get("last_weights", {}).items()}
        block = data.get("last_weights_block")
        return (int(block) if block is not None else None), weights
    except (OSError, ValueError, TypeError, AttributeError):
        return None, {}


def collect(network: Network, state_dir: Path, validator_hotkey: str | None) -> dict[str, Any]:
    """Everything the status shows, as plain data."""
    from model.data import ModelId

    graph = network.chain.metagraph()
    commitments = network.chain.commitments()
    sent_block, sent = _last_weights(state_dir)
    on_chain: dict[int, float] | None = None
    reader = getattr(network.chain, "weights", None)  # the local chain can read weights back
    if validator_hotkey and callable(reader):
        on_chain = reader(validator_hotkey)
    rows = []
    for position, hotkey in enumerate(graph.hotkeys):
        uid = int(graph.uids[position])
        commitment = commitments.get(hotkey)
        model, competition = "", ""
        if commitment is not None:
            try:
                model_id = ModelId.from_compressed_str(commitment.data)
                model = f"{model_id.repo_id}@{(model_id.commit or '')[:8]}"
                competition = model_id.competition_id or ""
            except ValueError:
                model = f"(not a model: {commitment.data[:40]!r})"
        rows.append({
            "uid": uid, "hotkey": hotkey, "stake": float(graph.stake[position]),
            "validator_permit": bool(graph.validator_permit[position]),
            "commitment": commitment.data if commitment else None,
            "commit_block": commitment.block if commitment else None,
            "model": model, "competition": competition, "incentive": float(graph.incentive[position]),
            "weight_sent": sent.get(uid),
            "weight_on_chain": None if on_chain is None else on_chain.get(uid, 0.0),
        })  # fmt: skip
    return {"block": graph.block, "weights_sent_at_block": sent_block, "uids": rows}


def status_table(status: dict[str, Any]) -> Table:
    from rich.table import Table

    at = status["weights_sent_at_block"]
    table = Table(
        title=f"block {status['block']} · weights last set by this validator "
        + (f"at block {at}" if at is not None else "(none found in --state_dir)")
    )
    with_chain = any(row["weight_on_chain"] is not None for row in status["uids"])
    columns = [
        "uid",
        "hotkey",
        "stake",
        "vpermit",
        "model",
        "comp.",
        "commit block",
        "incentive",
        "weight sent",
    ]
    for column in [*columns, *(["weight on chain"] if with_chain else [])]:
        table.add_column(column, justify="right" if column in {"uid", "stake", "incentive"} else "left")

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for row in status["uids"]:
        cells = [
            str(row["uid"]), row["hotkey"], f"{row['stake']:.1f}", "yes" if row["validator_permit"] else "",
            row["model"] or "-", row["competition"] or "-",
            "-" if row["commit_block"] is None else str(row["commit_block"]),
            number(row["incentive"]), number(row["weight_sent"]),
        ]  # fmt: skip
        if with_chain:
            cells.append(number(row["weight_on_chain"]))
        table.add_row(*cells)
    return table


def _local_wallet_exists(args: argparse.Namespace) -> bool:
    """On the local network, the validator wallet named by ``--wallet.*`` (never created here)."""
    if args.localnet is None:
        return False
    wallets = Path(args.wallet_path).expanduser() if args.wallet_path else Path(args.localnet) / "wallets"
    return (wallets / args.wallet_name / "hotkeys" / args.wallet_hotkey).is_file()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console

    from model.network import connect
    from utilities.errors import FinetuneError
    from utilities.logs import setup_logging

    setup_logging(debug=args.logging_debug, trace=args.logging_trace)
    try:
        network = connect(args, need_wallet=_local_wallet_exists(args))
        hotkey = network.wallet.hotkey.ss58_address if network.wallet is not None else None
        status = collect(network, Path(args.state_dir), hotkey)
    except FinetuneError as exc:
        print(f"finetune-status: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        Console(width=None if sys.stdout.isatty() else 200).print(status_table(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
