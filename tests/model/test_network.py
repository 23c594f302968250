from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from model.network import add_network_args, connect
from model.storage.chain.local_chain import LocalChain
from model.storage.hub.local_hub import LocalHub
from utilities.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_network_args(parser)
    return parser.parse_args(list(argv))


def test_conventional_flags_parse() -> None:
    args = parse(
        "--wallet.name", "cold", "--wallet.hotkey", "hot", "--subtensor.network", "test",
        "--netuid", "9", "--logging.debug",
    )  # fmt: skip
    assert (args.wallet_name, args.wallet_hotkey, args.subtensor_network) == ("cold", "hot", "test")
    assert args.netuid == 9 and args.logging_debug and args.localnet is None
    assert parse().netuid == 6


def test_localnet_switches_every_port(tmp_path: Path) -> None:
    args = parse("--localnet", str(tmp_path / "net"), "--wallet.name", "m1", "--wallet.hotkey", "h")
    network = connect(args, hub_user="m1")
    assert network.is_local
    assert isinstance(network.chain, LocalChain) and isinstance(network.hub, LocalHub)
    assert (tmp_path / "net" / "chain.sqlite").exists()
    assert network.wallet is not None
    hotkey = network.wallet.hotkey.ss58_address
    assert network.chain.hotkey == hotkey
    # a second connect reuses the same unencrypted wallet and the same chain file
    again = connect(args, hub_user="m1")
    assert again.wallet is not None and again.wallet.hotkey.ss58_address == hotkey
    network.chain.register(hotkey)
    network.chain.commit("m1:model:None:None:local")
    assert again.chain.commitment(hotkey) is not None


def test_localnet_read_only_view(tmp_path: Path) -> None:
    network = connect(parse("--localnet", str(tmp_path)), need_wallet=False)
    assert network.wallet is None
    with pytest.raises(ConfigError):
        network.chain.commit("x")


def test_real_network_needs_an_existing_hotkey(tmp_path: Path) -> None:
    args = parse("--wallet.path", str(tmp_path / "wallets"), "--wallet.name", "nobody")
    with pytest.raises(ConfigError, match="no hotkey"):
        connect(args)
