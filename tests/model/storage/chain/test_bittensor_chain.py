"""BittensorChain against the real bittensor SDK, with only the substrate (the chain) faked: reads,
writes, bounded waiting. Failure paths (timeouts, unknown fate, outages) are in test_chain_failures.py."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import bittensor as bt
import numpy as np
import pytest

from model.storage.chain.bittensor_chain import BittensorChain
from model.storage.chain.sdk_runner import SdkRunner
from tests.fakes.fake_substrate import FakeNeuron, FakeSubstrate, commitment_record
from tests.model.storage.chain.chain_support import MINER_A, MINER_B, MINER_C, MINER_D, NETUID, make_chain
from utilities.errors import ChainError, CommitmentError, ConfigError

# Reads --------------------------------------------------------------------------------------------


def test_current_block(fake: FakeSubstrate, runner: SdkRunner) -> None:
    assert make_chain(runner).current_block() == 5000
    fake.block = 5003
    assert make_chain(runner).current_block() == 5003


def test_block_hash_is_one_storage_entry_not_a_block_download(fake: FakeSubstrate, runner: SdkRunner) -> None:
    chain = make_chain(runner)
    finalized = chain.finalized_block()
    assert finalized == 4998
    assert chain.block_hash(finalized) == f"0x{finalized:064x}"
    assert chain.block_hash(4990) != chain.block_hash(4991)
    assert ("query", ("System", "BlockHash", [4990], None)) in fake.calls
    assert fake.count("get_block") == 0  # a block with its extrinsics is never fetched
    with pytest.raises(ChainError, match="block 6000"):
        chain.block_hash(6000)


def test_block_timestamp_is_timestamp_now_at_that_block(fake: FakeSubstrate, runner: SdkRunner) -> None:
    chain = make_chain(runner)
    assert chain.block_timestamp(4990) == (fake.genesis_ms + 4990 * 12_000) / 1000
    assert chain.block_timestamp(4991) - chain.block_timestamp(4990) == 12.0
    assert ("query", ("Timestamp", "Now", [], f"0x{4990:064x}")) in fake.calls  # read at the block
    with pytest.raises(ChainError, match="block 5001 is not known"):  # the SDK would read the head
        chain.block_timestamp(5001)
    # a pruned node has discarded the state of old blocks: the node's error, named
    fake.fail("query", bt.ChainError("State already discarded for 0x1234"))
    with pytest.raises(ChainError, match=r"time of block 4000 failed.*State already discarded"):
        chain.block_timestamp(4000)
    fake.set_storage("Timestamp", "Now", [], 0)
    with pytest.raises(ChainError, match="no time"):
        chain.block_timestamp(4990)
    fake.set_storage("Timestamp", "Now", [], "soon")
    with pytest.raises(ChainError, match="not a time"):
        chain.block_timestamp(4990)


def test_metagraph_fields_come_from_the_runtime_api(fake: FakeSubstrate, runner: SdkRunner) -> None:
    fake.set_metagraph(
        NETUID,
        [
            FakeNeuron(MINER_A, stake=1500.25, validator_permit=True, incentive=0.0, consensus=0.75),
            FakeNeuron(MINER_B, stake=0.0, incentive=0.6, consensus=0.1),
            FakeNeuron(MINER_C, stake=2.5, incentive=0.4),
        ],
    )
    graph = make_chain(runner).metagraph()

    assert graph.block == 5000
    assert graph.hotkeys == (MINER_A, MINER_B, MINER_C)
    assert graph.uids.dtype == np.int64 and graph.uids.tolist() == [0, 1, 2]
    assert graph.stake.dtype == np.float64
    np.testing.assert_allclose(graph.stake, [1500.25, 0.0, 2.5])
    assert graph.validator_permit.dtype == np.bool_
    assert graph.validator_permit.tolist() == [True, False, False]
    # PerU16 on chain: exact to 1/65535
    np.testing.assert_allclose(graph.incentive, [0.0, 0.6, 0.4], atol=1 / 65535)
    np.testing.assert_allclose(graph.consensus, [0.75, 0.1, 0.0], atol=1 / 65535)
    assert graph.uid_of(MINER_C) == 2
    # one runtime call for the graph, pinned to the block the SDK read first
    runtime_calls = [args for name, args in fake.calls if name == "runtime_call"]
    assert runtime_calls == [("SubnetInfoRuntimeApi", "get_metagraph", [NETUID], f"0x{5000:064x}")]


def test_metagraph_of_a_missing_subnet_is_a_chain_error(fake: FakeSubstrate, runner: SdkRunner) -> None:
    fake.set_metagraph(NETUID + 1, [FakeNeuron(MINER_A)])
    with pytest.raises(ChainError, match=f"netuid {NETUID}"):
        make_chain(runner).metagraph()


def test_commitments_with_blocks(
    fake: FakeSubstrate, runner: SdkRunner, caplog: pytest.LogCaptureFixture
) -> None:
    current = "alice:model-1:0123abcd:aGFzaA==:m2"
    legacy = "bob:model-2:ffff0000:aGFzaA=="  # 4 fields, written before competitions
    fake.add_commitment(NETUID, MINER_A, commitment_record(current, block=4990))
    fake.add_commitment(NETUID, MINER_B, commitment_record(legacy, block=3000))
    fake.add_commitment(NETUID, MINER_C, commitment_record(b"\xff\xfe\x80not utf-8", block=4000))
    # a hash-only commitment has no text to read: left out without a warning
    fake.add_commitment(
        NETUID, MINER_D, {"block": 10, "deposit": 0, "info": {"fields": [{"Sha256": "0x" + "ab" * 32}]}}
    )
    fake.register(NETUID, MINER_A, 0)

    with caplog.at_level(logging.WARNING, logger="model.storage.chain.bittensor_chain"):
        commitments = make_chain(runner).commitments()

    assert set(commitments) == {MINER_A, MINER_B}
    # one map query: neither RevealedCommitments nor the Uids map is read
    storage_reads = [args[:2] for name, args in fake.calls if name in ("query", "query_map")]
    assert storage_reads.count(("Commitments", "CommitmentOf")) == 1
    assert ("Commitments", "RevealedCommitments") not in storage_reads
    assert ("SubtensorModule", "Uids") not in storage_reads
    assert commitments[MINER_A].data == current and commitments[MINER_A].block == 4990
    assert commitments[MINER_B].data == legacy and commitments[MINER_B].block == 3000
    assert commitments[MINER_B].hotkey == MINER_B
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and MINER_C in warnings[0]


@pytest.mark.parametrize(
    "payload",
    [
        "0x" + b"ns:name:c:h:m1".hex(),  # what the transport returns for a byte array
        b"ns:name:c:h:m1",  # raw bytes
        list(b"ns:name:c:h:m1"),  # a list of ints
    ],
)
def test_commitment_bytes_in_any_shape_become_text(
    fake: FakeSubstrate, runner: SdkRunner, payload: object
) -> None:
    record = {"block": 77, "deposit": 0, "info": {"fields": [{"Raw14": payload}]}}
    fake.add_commitment(NETUID, MINER_A, record)
    chain = make_chain(runner)
    assert chain.commitments()[MINER_A].data == "ns:name:c:h:m1"
    single = chain.commitment(MINER_A)
    assert single is not None and (single.data, single.block) == ("ns:name:c:h:m1", 77)


def test_single_commitment(fake: FakeSubstrate, runner: SdkRunner, caplog: pytest.LogCaptureFixture) -> None:
    fake.add_commitment(NETUID, MINER_A, commitment_record("a:b:c:d", block=123))
    fake.add_commitment(NETUID, MINER_B, commitment_record(b"\xc3\x28", block=124))
    chain = make_chain(runner)

    got = chain.commitment(MINER_A)
    assert got is not None and (got.hotkey, got.data, got.block) == (MINER_A, "a:b:c:d", 123)
    assert ("query", ("Commitments", "CommitmentOf", [NETUID, MINER_A], None)) in fake.calls
    assert chain.commitment(MINER_C) is None
    with caplog.at_level(logging.WARNING):
        assert chain.commitment(MINER_B) is None
    assert any(MINER_B in r.getMessage() for r in caplog.records)


# Writes -------------------------------------------------------------------------------------------


def test_commit_is_signed_by_the_hotkey(fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet) -> None:
    make_chain(runner, wallet).commit("alice:model-1:0123abcd:aGFzaA==:m2")

    assert len(fake.submissions) == 1
    sent = fake.submissions[0]
    raw = b"alice:model-1:0123abcd:aGFzaA==:m2"
    assert (sent.call.module, sent.call.function) == ("Commitments", "set_commitment")
    assert sent.call.params == {"netuid": NETUID, "info": {"fields": [{f"Raw{len(raw)}": raw}]}}
    assert sent.signer_address == wallet.hotkey.ss58_address != wallet.coldkeypub.ss58_address
    assert wallet.hotkey.verify(sent.payload, sent.signature)
    assert not wallet.coldkey.verify(sent.payload, sent.signature)
    assert sent.wait_for_inclusion and not sent.wait_for_finalization


def test_commit_rejects_more_than_128_bytes_before_any_call(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet
) -> None:
    chain = make_chain(runner, wallet)
    with pytest.raises(CommitmentError, match="129 bytes"):
        chain.commit("x" * 129)
    with pytest.raises(CommitmentError, match="130 bytes"):
        chain.commit("é" * 65)  # 65 characters, 130 UTF-8 bytes
    assert fake.calls == []

    chain.commit("é" * 64)  # exactly 128 bytes
    assert fake.submissions[0].call.params["info"] == {"fields": [{"Raw128": ("é" * 64).encode()}]}


def test_failed_commit_extrinsic_raises_with_the_chain_message(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet
) -> None:
    fake.results.append(bt.ExtrinsicResult(success=False, message="SpaceLimitExceeded"))
    with pytest.raises(CommitmentError, match="SpaceLimitExceeded") as info:
        make_chain(runner, wallet).commit("a:b:c:d")
    assert wallet.hotkey.ss58_address in str(info.value)


def test_writes_without_a_wallet_are_config_errors(fake: FakeSubstrate, runner: SdkRunner) -> None:
    chain = make_chain(runner)
    with pytest.raises(ConfigError):
        chain.commit("a:b:c:d")
    with pytest.raises(ConfigError):
        chain.set_weights([0], [1.0], version_key=1)
    assert fake.calls == []


def test_set_weights_sends_version_key_and_the_sdk_converted_weights(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet
) -> None:
    hotkey = wallet.hotkey.ss58_address
    fake.register(NETUID, hotkey, 3)
    fake.set_storage("SubtensorModule", "CommitRevealWeightsEnabled", [NETUID], False)
    fake.set_storage("SubtensorModule", "MaxWeightsLimit", [NETUID], 65535)
    fake.set_storage("SubtensorModule", "SubnetEpochConsensus", [NETUID], "Yuma")

    make_chain(runner, wallet).set_weights(
        np.array([0, 1, 2, 5]), np.array([0.2, 0.5, 0.3, 0.0]), version_key=4012
    )

    assert len(fake.submissions) == 1
    sent = fake.submissions[0]
    assert (sent.call.module, sent.call.function) == ("SubtensorModule", "set_mechanism_weights")
    # max-upscaled to u16, zero weights dropped (bittensor.intents.weights.normalize)
    assert sent.call.params == {
        "netuid": NETUID,
        "mecid": 0,
        "dests": [0, 1, 2],
        "weights": [26214, 65535, 39321],
        "version_key": 4012,
    }
    assert sent.signer_address == hotkey and wallet.hotkey.verify(sent.payload, sent.signature)
    assert sent.wait_for_inclusion and not sent.wait_for_finalization


def test_set_weights_failures_are_chain_errors(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet
) -> None:
    hotkey = wallet.hotkey.ss58_address
    chain = make_chain(runner, wallet)
    # not registered: the SDK's preflight refuses before signing
    with pytest.raises(ChainError, match="not registered") as info:
        chain.set_weights([0], [1.0], version_key=1)
    assert hotkey in str(info.value) and f"netuid {NETUID}" in str(info.value)
    assert fake.submissions == []

    fake.register(NETUID, hotkey, 0)
    fake.results.append(bt.ExtrinsicResult(success=False, message="IncorrectWeightVersionKey"))
    with pytest.raises(ChainError, match="IncorrectWeightVersionKey"):
        chain.set_weights([0, 1], [0.5, 0.5], version_key=1)

    with pytest.raises(ChainError, match="Duplicate UIDs"):
        chain.set_weights([1, 1], [0.5, 0.5], version_key=1)
    with pytest.raises(ChainError, match="2 uids but 1 weights"):
        chain.set_weights([0, 1], [1.0], version_key=1)


# Bounded waiting ----------------------------------------------------------------------------------


def test_a_hanging_chain_becomes_a_chain_error_after_the_timeout(
    fake: FakeSubstrate, runner: SdkRunner
) -> None:
    fake.set_metagraph(NETUID, [FakeNeuron(MINER_A)])
    fake.hang("runtime_call")
    chain = make_chain(runner, timeout_s=0.2, attempts=1)
    started = time.monotonic()
    with pytest.raises(ChainError, match=rf"metagraph of netuid {NETUID} failed: .*0\.2 s"):
        chain.metagraph()
    assert time.monotonic() - started < 2.0


def test_connection_errors_are_retried(fake: FakeSubstrate, runner: SdkRunner) -> None:
    fake.fail("block_number", ConnectionError("reset by peer"), ConnectionError("reset by peer"))
    assert make_chain(runner, attempts=3).current_block() == 5000
    assert fake.count("block_number") == 3


def test_retries_are_bounded(fake: FakeSubstrate, runner: SdkRunner) -> None:
    fake.fail("block_number", ConnectionError("reset by peer"), ConnectionError("reset by peer"))
    with pytest.raises(ChainError, match="reset by peer") as info:
        make_chain(runner, attempts=2).current_block()
    assert isinstance(info.value.__cause__, ConnectionError)
    assert fake.count("block_number") == 2


# Construction -------------------------------------------------------------------------------------


def test_connect_builds_a_cold_client() -> None:
    threads = threading.active_count()
    chain = BittensorChain.connect("finney", netuid=NETUID)
    assert chain.netuid == NETUID
    assert chain.endpoints[0] == "wss://entrypoint-finney.opentensor.ai:443" and len(chain.endpoints) == 3
    assert threading.active_count() == threads  # nothing dialled, no loop thread yet
    with pytest.raises(ConfigError, match="nowhere"):
        BittensorChain.connect("nowhere", netuid=NETUID)


def test_bad_settings_are_config_errors(runner: SdkRunner) -> None:
    with pytest.raises(ConfigError):
        BittensorChain(runner, netuid=-1)
    with pytest.raises(ConfigError):
        BittensorChain(runner, netuid=NETUID, attempts=0)


def test_the_commitment_quota_is_read_from_the_chain_and_checked_before_publishing(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet, tmp_path: Path
) -> None:
    """Issue 14.1: the Publisher checks the chain's commitment quota (``Commitments.RateLimit``) before
    it uploads or hides anything; a chain without the value has none."""
    from finetune.publishing import Publisher
    from model.storage.hub.local_hub import LocalHub

    chain = make_chain(runner, wallet)
    assert chain.commit_interval_blocks == 0  # not stated by the chain
    fake.set_storage("Commitments", "RateLimit", [], 100)
    assert chain.commit_interval_blocks == 100
    assert ("query", ("Commitments", "RateLimit", [], None)) in fake.calls

    hotkey = wallet.hotkey.ss58_address
    fake.add_commitment(NETUID, hotkey, commitment_record("alice:tiny:c:h:local", block=4950))
    hub = LocalHub(tmp_path / "hub", user="alice")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(CommitmentError, match="block 5050"):
        Publisher(chain=chain, hub=hub, hotkey=hotkey, wait_s=0.001).publish(
            folder, repo_id="alice/tiny", competition_id="local"
        )
    assert not (tmp_path / "hub" / "alice").exists() and not fake.submissions  # nothing uploaded or sent
    fake.set_storage("Commitments", "RateLimit", [], 0)
    assert Publisher(chain=chain, hub=hub, hotkey=hotkey).check_quota() is not None
