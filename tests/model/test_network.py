from __future__ import annotations

import argparse
import getpass
import socket
import threading
import time
from pathlib import Path

import bittensor as bt
import pytest

from model.network import PROBE_TIMEOUT_S, add_network_args, connect
from model.storage.chain.local_chain import LocalChain
from model.storage.hub.local_hub import LocalHub
from tests.fakes.fake_substrate import FakeSubstrate
from utilities.errors import ChainError, ConfigError


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


# The real network, through the real SDK with only the substrate faked ------------------------------

NETUID = 9


@pytest.fixture(autouse=True)
def _symbol_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Connecting makes the SDK cache token symbols on disk; keep that out of $HOME.
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))


def make_wallet(root: Path, *, password: str | None = None) -> bt.Wallet:
    wallet = bt.Wallet("cold", "hot", path=str(root))
    wallet.regenerate_coldkey(seed="0x" + "11" * 32, use_password=False, overwrite=True, suppress=True)
    wallet.regenerate_hotkey(seed="0x" + "22" * 32, overwrite=True, suppress=True, hotkey_password=password)
    return wallet


def real_args(wallets: Path, *extra: str) -> argparse.Namespace:
    return parse(
        "--wallet.path", str(wallets), "--wallet.name", "cold", "--wallet.hotkey", "hot",
        "--netuid", str(NETUID), "--subtensor.network", "test", *extra,
    )  # fmt: skip


def test_a_hotkey_without_its_pub_file_can_write(tmp_path: Path) -> None:
    wallet = make_wallet(tmp_path / "wallets")
    Path(wallet.hotkeypub_file.path).unlink()  # many wallets on disk have no hotkeys/<name>pub.txt
    fake = FakeSubstrate(block=100)
    network = connect(real_args(tmp_path / "wallets"), substrate=fake)
    try:
        network.chain.commit("ns:model:c0ffee:aGFzaA==:m1")
    finally:
        network.chain.close()  # type: ignore[attr-defined]
    (sent,) = fake.submissions
    assert sent.signer_address == wallet.hotkey.ss58_address


@pytest.fixture(scope="module")
def encrypted_wallets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wallet whose hotkey is encrypted (the key derivation takes seconds: made once)."""
    root = tmp_path_factory.mktemp("encrypted") / "wallets"
    assert make_wallet(root, password="s3cret-pw").hotkey_file.is_encrypted()
    return root


def test_an_encrypted_hotkey_is_unlocked_once(
    encrypted_wallets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def prompt(text: str = "") -> str:
        prompts.append(text)
        return "s3cret-pw"

    monkeypatch.setattr(getpass, "getpass", prompt)
    fake = FakeSubstrate(block=100)
    network = connect(real_args(encrypted_wallets), substrate=fake)
    try:
        assert len(prompts) == 1  # asked at start, before any write
        hotkey = network.wallet.hotkey.ss58_address  # type: ignore[union-attr]
        fake.register(NETUID, hotkey, 0)
        fake.set_storage("SubtensorModule", "CommitRevealWeightsEnabled", [NETUID], False)
        network.chain.commit("ns:model:c0ffee:aGFzaA==:m1")
        network.chain.commit("ns:model:c0ffee:aGFzaA==:m2")
        network.chain.set_weights([0, 1], [0.5, 0.5], version_key=1)
    finally:
        network.chain.close()  # type: ignore[attr-defined]
    assert len(fake.submissions) == 3
    assert len(prompts) == 1  # never again on a write


def test_a_wrong_password_is_a_config_error(encrypted_wallets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getpass", lambda text="": "wrong")
    fake = FakeSubstrate()
    with pytest.raises(ConfigError, match="cannot unlock hotkey"):
        connect(real_args(encrypted_wallets), substrate=fake)
    assert fake.calls == []  # a wallet problem is found before the chain is dialled


def test_chain_endpoint_overrides_the_network(tmp_path: Path) -> None:
    make_wallet(tmp_path / "wallets")
    args = real_args(tmp_path / "wallets", "--subtensor.chain_endpoint", "ws://10.1.2.3:9944")
    assert args.subtensor_chain_endpoint == "ws://10.1.2.3:9944"
    network = connect(args, substrate=FakeSubstrate())
    try:
        assert network.chain.endpoints == ("ws://10.1.2.3:9944",)  # type: ignore[attr-defined]
    finally:
        network.chain.close()  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="ws://"):
        connect(real_args(tmp_path / "wallets", "--subtensor.chain_endpoint", "finney"))


def test_btcli_environment_variables_are_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BT_NETWORK", "test")
    monkeypatch.setenv("BT_WALLET_PATH", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("BT_WALLET", "cold")
    monkeypatch.setenv("BT_WALLET_HOTKEY", "hot")
    args = parse()
    assert (args.subtensor_network, args.wallet_path) == ("test", str(tmp_path / "elsewhere"))
    assert (args.wallet_name, args.wallet_hotkey) == ("cold", "hot")
    assert parse("--subtensor.network", "finney").subtensor_network == "finney"  # a flag still wins
    make_wallet(tmp_path / "elsewhere")
    network = connect(args, substrate=FakeSubstrate())
    try:
        assert network.wallet is not None and network.wallet.path == str(tmp_path / "elsewhere")
    finally:
        network.chain.close()  # type: ignore[attr-defined]


def test_an_unreachable_chain_fails_fast_with_one_line(tmp_path: Path) -> None:
    make_wallet(tmp_path / "wallets")
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"ws://127.0.0.1:{port}"
    threads = threading.active_count()
    started = time.monotonic()
    with pytest.raises(ChainError) as info:
        connect(real_args(tmp_path / "wallets", "--subtensor.chain_endpoint", endpoint))
    assert time.monotonic() - started < PROBE_TIMEOUT_S
    message = str(info.value)
    assert "\n" not in message and endpoint in message and "--localnet" in message
    assert threading.active_count() == threads  # the probe's loop thread is gone


def test_a_silent_chain_is_given_up_on_after_the_probe_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_wallet(tmp_path / "wallets")
    fake = FakeSubstrate()
    fake.hang("connect")
    monkeypatch.setattr("model.network.PROBE_TIMEOUT_S", 0.5)
    started = time.monotonic()
    with pytest.raises(ChainError, match=r"within 0\.5 s"):
        connect(real_args(tmp_path / "wallets"), substrate=fake)
    assert time.monotonic() - started < 5.0
