"""Shared helpers of the BittensorChain tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import bittensor as bt
from bittensor.keyfiles import Keypair

from model.storage.chain.bittensor_chain import BittensorChain
from model.storage.chain.outage import OutageGate
from model.storage.chain.sdk_runner import SdkRunner
from tests.fakes.fake_substrate import FakeSubstrate

NETUID = 9


def address(seed_byte: int) -> str:
    return str(Keypair.create_from_seed(bytes([seed_byte]) * 32).ss58_address)


MINER_A, MINER_B, MINER_C, MINER_D = (address(b) for b in (0x31, 0x32, 0x33, 0x34))


def make_chain(runner: SdkRunner, wallet: bt.Wallet | None = None, **kwargs: float) -> BittensorChain:
    settings: dict[str, float] = {"timeout_s": 5.0, "write_timeout_s": 5.0, "attempts": 1, "wait_s": 0.01}
    settings.update(kwargs)
    wait = settings["wait_s"]
    return BittensorChain(
        runner,
        netuid=NETUID,
        signer=wallet.hotkey if wallet is not None else None,
        timeout_s=settings["timeout_s"],
        write_timeout_s=settings["write_timeout_s"],
        attempts=int(settings["attempts"]),
        gate=OutageGate(first_backoff_s=wait, max_backoff_s=wait * 4),
        poll_s=0.01,
    )


def plain_weights(fake: FakeSubstrate, wallet: bt.Wallet, *, uid: int) -> None:
    fake.register(NETUID, wallet.hotkey.ss58_address, uid)
    fake.set_storage("SubtensorModule", "CommitRevealWeightsEnabled", [NETUID], False)
    fake.set_storage("SubtensorModule", "MaxWeightsLimit", [NETUID], 65535)
    fake.set_storage("SubtensorModule", "SubnetEpochConsensus", [NETUID], "Yuma")
