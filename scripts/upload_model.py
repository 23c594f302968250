"""Publish an existing model folder the way the miner does: ``python scripts/upload_model.py --help``.

The folder is first checked with the validator's own :class:`ModelChecker` (a model validators would
refuse is not worth a commitment), then published: upload private -> hash what the hub serves -> commit
on chain -> make public (see :mod:`finetune.publishing`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from finetune.checks import ModelChecker  # noqa: E402
from finetune.miner_config import choose_competition  # noqa: E402
from finetune.publishing import Publisher  # noqa: E402
from model.network import add_network_args, connect  # noqa: E402
from model.storage.chain.local_chain import LocalChain  # noqa: E402
from utilities.errors import FinetuneError  # noqa: E402
from utilities.logs import setup_logging  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/upload_model.py",
        description="Check a model folder and publish it (hub, then a commitment on chain).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_network_args(parser)
    parser.add_argument("--model_dir", type=Path, required=True, help="the model folder to publish")
    parser.add_argument("--hf_repo_id", required=True, help="namespace/name to upload to")
    parser.add_argument("--competition_id", default=None, help="competition ('local' on --localnet)")
    parser.add_argument("--use_hotkey_in_hash", action="store_true", help="salt the hash with the hotkey")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(debug=args.logging_debug, trace=args.logging_trace)
    try:
        network = connect(args, hub_user=args.hf_repo_id.split("/")[0])
        competition = choose_competition(args, network)
        if network.wallet is None:
            parser.exit(2, "upload_model: a wallet is needed to commit\n")
        hotkey = network.wallet.hotkey.ss58_address
        publisher = Publisher(chain=network.chain, hub=network.hub, hotkey=hotkey)
        publisher.check_access(args.hf_repo_id, competition.id)  # credentials and write access first
        params = ModelChecker().check_folder(args.model_dir.expanduser(), competition)
        print(f"{args.model_dir} passed the checks ({params:,} parameters)")
        if isinstance(network.chain, LocalChain):
            network.chain.register(hotkey)  # free on the local network
        model_id = publisher.publish(
            args.model_dir.expanduser(), repo_id=args.hf_repo_id, competition_id=competition.id,
            use_hotkey_in_hash=args.use_hotkey_in_hash,
        )  # fmt: skip
    except FinetuneError as exc:
        parser.exit(1, f"upload_model: {exc}\n")
    print(f"committed {model_id.to_compressed_str()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
