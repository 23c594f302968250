"""BittensorChain against the real bittensor SDK, with only the substrate (the chain) faked."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bittensor as bt
import numpy as np
import pytest
from bittensor.keyfiles import Keypair

from model.storage.chain.bittensor_chain import SET_WEIGHTS_RETRIES, WRITE_ERA_BLOCKS, BittensorChain
from model.storage.chain.outage import OutageGate
from model.storage.chain.sdk_runner import SdkRunner
from tests.fakes.fake_substrate import FakeNeuron, FakeSubstrate, commitment_record
from utilities.errors import ChainError, CommitmentError, ConfigError

NETUID = 9


def address(seed_byte: int) -> str:
    return str(Keypair.create_from_seed(bytes([seed_byte]) * 32).ss58_address)


MINER_A, MINER_B, MINER_C, MINER_D = (address(b) for b in (0x31, 0x32, 0x33, 0x34))


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


def test_n_hung_calls_leave_no_thread_and_no_request_behind(fake: FakeSubstrate, runner: SdkRunner) -> None:
    chain = make_chain(runner, timeout_s=0.2, attempts=3)
    assert chain.current_block() == 5000  # connected: the loop thread exists from here on
    threads = threading.active_count()
    fake.hang("runtime_call")
    fake.set_metagraph(NETUID, [FakeNeuron(MINER_A)])
    for _ in range(5):
        with pytest.raises(ChainError, match=r"0\.2 s"):
            chain.metagraph()
    assert fake.count("runtime_call") == 15  # 5 calls x 3 attempts, each one cancelled in turn
    assert fake.in_flight == 0  # no request is still waiting for an answer
    assert runner.pending_tasks() == 0
    assert threading.active_count() == threads  # not one thread per timed-out call
    # a timed-out call makes the connection suspect: it was closed, and the next call reconnects
    assert fake.closes >= 1
    fake._hanging.clear()
    assert chain.metagraph().hotkeys == (MINER_A,)
    assert fake.connected


def test_first_connection_is_made_once_by_concurrent_callers(fake: FakeSubstrate, runner: SdkRunner) -> None:
    chain = make_chain(runner)
    threads_before = threading.active_count()
    barrier = threading.Barrier(6)
    blocks: list[int] = []

    def first_call() -> None:
        barrier.wait()
        blocks.append(chain.current_block())

    workers = [threading.Thread(target=first_call) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert blocks == [5000] * 6
    assert fake.connects == 1 and fake.count("connect") == 1
    assert threading.active_count() == threads_before + 1  # one loop thread, shared


# Writes of unknown fate ---------------------------------------------------------------------------


def test_a_commit_that_landed_despite_the_error_is_not_sent_again(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet, caplog: pytest.LogCaptureFixture
) -> None:
    fake.after_submit.append((True, bt.RpcConnectionError("connection dropped")))
    fake.blocks_per_read = 1
    with caplog.at_level(logging.INFO, logger="model.storage.chain"):
        make_chain(runner, wallet, attempts=3).commit("ns:model:c0ffee:aGFzaA==:m1")
    assert fake.count("submit") == 1
    got = make_chain(runner).commitment(wallet.hotkey.ss58_address)
    assert got is not None and got.data == "ns:model:c0ffee:aGFzaA==:m1"
    assert any("landed despite" in r.getMessage() for r in caplog.records)


def test_a_commit_never_sent_is_sent_once(fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet) -> None:
    # the connection fails before anything is signed: nothing can be in the pool, so no waiting
    fake.fail("connect", bt.RpcConnectionError("could not connect to any endpoint"))
    make_chain(runner, wallet, attempts=3).commit("ns:model:c0ffee:aGFzaA==:m1")
    assert fake.count("submit") == 1
    assert fake.count("connect") == 2


def test_a_commit_sent_and_lost_is_sent_again_only_after_its_era(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet
) -> None:
    fake.after_submit.append((False, bt.RpcConnectionError("connection dropped")))
    fake.blocks_per_read = 1
    make_chain(runner, wallet, attempts=3).commit("ns:model:c0ffee:aGFzaA==:m1")
    assert fake.count("submit") == 2
    first, second = fake.submissions
    assert first.period == second.period == WRITE_ERA_BLOCKS
    # the second send came only once the first one's era was over
    reads = [i for i, (name, _) in enumerate(fake.calls) if name == "block_number"]
    submits = [i for i, (name, _) in enumerate(fake.calls) if name == "submit"]
    blocks_between = sum(1 for i in reads if submits[0] < i < submits[1])
    assert blocks_between > WRITE_ERA_BLOCKS
    got = make_chain(runner).commitment(wallet.hotkey.ss58_address)
    assert got is not None and got.data == "ns:model:c0ffee:aGFzaA==:m1"


def test_a_write_that_timed_out_is_not_sent_again_while_it_may_land(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet
) -> None:
    fake.hang("submit")  # and the chain does not move on: the first copy could still be included
    with pytest.raises(CommitmentError, match=r"0\.2 s.*not sent again"):
        make_chain(runner, wallet, write_timeout_s=0.2, attempts=3).commit("a:b:c:d")
    assert fake.count("submit") == 1
    assert fake.in_flight == 0


def test_weights_that_landed_despite_the_error_are_not_sent_again(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet
) -> None:
    plain_weights(fake, wallet, uid=3)
    fake.set_storage("SubtensorModule", "LastUpdate", [NETUID], [0, 0, 0, 4000])
    fake.after_submit.append((True, bt.RpcConnectionError("connection dropped")))
    fake.blocks_per_read = 1
    make_chain(runner, wallet).set_weights([0, 1], [0.5, 0.5], version_key=1)
    assert fake.count("submit") == 1
    assert fake.storage[("SubtensorModule", "LastUpdate")][(NETUID,)][3] > 4000


def test_weights_sent_and_lost_are_sent_again_after_their_era(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet
) -> None:
    plain_weights(fake, wallet, uid=3)
    fake.set_storage("SubtensorModule", "LastUpdate", [NETUID], [0, 0, 0, 4000])
    fake.after_submit.append((False, bt.RpcConnectionError("connection dropped")))
    fake.blocks_per_read = 1
    make_chain(runner, wallet).set_weights([0, 1], [0.5, 0.5], version_key=1)
    assert fake.count("submit") == 2


def test_the_sdk_unknown_fate_result_is_watched_not_reported_as_a_refusal(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet
) -> None:
    # what RpcSession answers when the connection drops while a submission is in flight
    message = (
        "Connection dropped while an extrinsic submission was in flight; the transaction may "
        "already be in the pool or on chain. Verify chain state before retrying."
    )
    fake.results.append(bt.ExtrinsicResult(success=False, message=message))
    fake.blocks_per_read = 1
    make_chain(runner, wallet).commit("a:b:c:d")
    assert fake.count("submit") == 2  # never landed, era over: sent again, and that one landed


# Weights: retries, refusals, commit-reveal -------------------------------------------------------


def plain_weights(fake: FakeSubstrate, wallet: bt.Wallet, *, uid: int) -> None:
    fake.register(NETUID, wallet.hotkey.ss58_address, uid)
    fake.set_storage("SubtensorModule", "CommitRevealWeightsEnabled", [NETUID], False)
    fake.set_storage("SubtensorModule", "MaxWeightsLimit", [NETUID], 65535)
    fake.set_storage("SubtensorModule", "SubnetEpochConsensus", [NETUID], "Yuma")


def test_set_weights_resubmits_transient_pool_rejections_like_the_sdk_helper(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet
) -> None:
    plain_weights(fake, wallet, uid=0)
    fake.seconds_per_block = 0.01
    fake.results.append(bt.ExtrinsicResult(success=False, message="Priority is too low"))
    make_chain(runner, wallet).set_weights([0, 1], [0.5, 0.5], version_key=1)
    assert fake.count("submit") == 2 and SET_WEIGHTS_RETRIES == 2


def test_a_refusal_is_logged_with_the_chain_reason(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet, caplog: pytest.LogCaptureFixture
) -> None:
    plain_weights(fake, wallet, uid=0)
    fake.results.append(bt.ExtrinsicResult(success=False, message="IncorrectWeightVersionKey"))
    with caplog.at_level(logging.WARNING), pytest.raises(ChainError, match="IncorrectWeightVersionKey"):
        make_chain(runner, wallet).set_weights([0, 1], [0.5, 0.5], version_key=1)
    assert fake.count("submit") == 1  # a refusal would fail identically: not resent
    logged = [r.getMessage() for r in caplog.records]
    assert any("refused" in line and "IncorrectWeightVersionKey" in line for line in logged)


def test_set_weights_takes_the_timelocked_path_when_commit_reveal_is_on(
    fake: FakeSubstrate, runner: SdkRunner, wallet: bt.Wallet
) -> None:
    # DefaultCommitRevealWeightsEnabled = true: the chain's default, so a subnet runs it unless
    # its owner turned it off
    plain_weights(fake, wallet, uid=2)
    fake.set_storage("SubtensorModule", "CommitRevealWeightsEnabled", [NETUID], True)
    for item, value in {
        "Tempo": 360,
        "RevealPeriodEpochs": 1,
        "LastEpochBlock": 4900,
        "PendingEpochAt": 0,
        "SubnetEpochIndex": 10,
        "BlocksSinceLastStep": 100,
    }.items():
        fake.set_storage("SubtensorModule", item, [NETUID], value)

    make_chain(runner, wallet).set_weights([0, 1, 2], [0.2, 0.3, 0.5], version_key=4012)

    (sent,) = fake.submissions
    assert sent.call.module == "SubtensorModule"
    assert sent.call.function == "commit_timelocked_mechanism_weights"
    params = sent.call.params
    assert params["netuid"] == NETUID and params["mecid"] == 0
    assert params["commit_reveal_version"] == 4
    assert isinstance(params["reveal_round"], int) and params["reveal_round"] > 0
    commit = bytes(params["commit"])
    assert len(commit) > 100  # the weights, encrypted to the drand round
    for plain in (b"4012", bytes([0x0F, 0xAC])):  # the version key never shows in clear
        assert plain not in commit
    assert sent.signer_address == wallet.hotkey.ss58_address
    # the commit counts as this uid's weights update
    assert fake.storage[("SubtensorModule", "LastUpdate")][(NETUID,)][2] == fake.block


# Outages ------------------------------------------------------------------------------------------


def test_an_outage_backs_off_and_logs_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    gate = OutageGate(clock=lambda: now[0], sleep=sleep)
    with caplog.at_level(logging.INFO, logger="model.storage.chain"):
        for _ in range(40):  # a caller retrying in a tight loop for as long as the chain is down
            assert gate.wait(budget_s=90.0)
            gate.failed("current block", ConnectionError("refused"))
        down_for = now[0]
        gate.succeeded()
    assert slept[:7] == [1, 2, 4, 8, 16, 32, 60]  # growing back-off, capped at a minute
    assert all(s == 60 for s in slept[7:])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) <= down_for / 60 + 1  # at most one line a minute
    assert len(warnings) >= 2 and "chain unreachable" in warnings[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert gate.backoff_s == 0 and gate.wait(budget_s=0.0)


def test_a_call_during_back_off_waits_and_gives_up_within_its_budget() -> None:
    now = [0.0]
    gate = OutageGate(clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    for _ in range(5):
        gate.failed("x", ConnectionError("refused"))  # back-off now 16 s
    assert not gate.wait(budget_s=3.0)  # budget shorter than the window: no dial at all
    assert now[0] == 3.0


def test_probe_fails_fast_with_one_line_naming_the_endpoints(fake: FakeSubstrate, runner: SdkRunner) -> None:
    fake.fail("connect", bt.RpcConnectionError("could not connect to any endpoint: refused"))
    chain = BittensorChain(runner, netuid=NETUID, endpoints=("wss://a.example:443", "wss://b.example:443"))
    with pytest.raises(ChainError) as info:
        chain.probe(timeout_s=1.0)
    message = str(info.value)
    assert "\n" not in message
    assert "wss://a.example:443, wss://b.example:443" in message and "--localnet" in message


def test_probe_of_a_hanging_chain_stops_at_its_timeout(fake: FakeSubstrate, runner: SdkRunner) -> None:
    fake.hang("connect")
    started = time.monotonic()
    with pytest.raises(ChainError, match=r"within 0\.3 s"):
        BittensorChain(runner, netuid=NETUID).probe(timeout_s=0.3)
    assert time.monotonic() - started < 3.0 and fake.in_flight == 0


# Construction -------------------------------------------------------------------------------------


def test_connect_builds_a_cold_client() -> None:
    chain = BittensorChain.connect("finney", netuid=NETUID)
    assert chain.netuid == NETUID
    assert chain.endpoints[0] == "wss://entrypoint-finney.opentensor.ai:443" and len(chain.endpoints) == 3
    assert threading.active_count() >= 1
    with pytest.raises(ConfigError, match="nowhere"):
        BittensorChain.connect("nowhere", netuid=NETUID)


def test_bad_settings_are_config_errors(runner: SdkRunner) -> None:
    with pytest.raises(ConfigError):
        BittensorChain(runner, netuid=-1)
    with pytest.raises(ConfigError):
        BittensorChain(runner, netuid=NETUID, attempts=0)
