"""Fixtures of the BittensorChain tests: the real SDK with only the substrate (the chain) faked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import bittensor as bt
import pytest

from model.storage.chain.sdk_runner import SdkRunner
from tests.fakes.fake_substrate import FakeSubstrate


@pytest.fixture(autouse=True)
def _symbol_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Connecting makes the SDK cache token symbols on disk; keep that out of $HOME.
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))


@pytest.fixture
def wallet(tmp_path: Path) -> bt.Wallet:
    w = bt.Wallet("cold", "hot", path=str(tmp_path / "wallets"))
    w.regenerate_coldkey(seed="0x" + "11" * 32, use_password=False, overwrite=True, suppress=True)
    w.regenerate_hotkey(seed="0x" + "22" * 32, use_password=False, overwrite=True, suppress=True)
    return w


@pytest.fixture
def fake() -> FakeSubstrate:
    return FakeSubstrate(block=5000)


@pytest.fixture
def runner(fake: FakeSubstrate) -> Iterator[SdkRunner]:
    sdk = SdkRunner(bt.Client("test", substrate=fake))
    yield sdk
    sdk.close()
