"""BittensorChain under real failures, through the real SDK with only the substrate faked: hung calls,
concurrent first connections, writes of unknown fate, commit-reveal, outages, the start-up probe."""

from __future__ import annotations

import logging
import threading
import time

import bittensor as bt
import pytest

from model.storage.chain.bittensor_chain import SET_WEIGHTS_RETRIES, WRITE_ERA_BLOCKS, BittensorChain
from model.storage.chain.outage import OutageGate
from model.storage.chain.sdk_runner import SdkRunner
from tests.fakes.fake_substrate import FakeNeuron, FakeSubstrate
from tests.model.storage.chain.chain_support import MINER_A, NETUID, make_chain, plain_weights
from utilities.errors import ChainError, CommitmentError


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
    # refused before sending (the SDK's preflight reads the rate limit): logged with the reason too
    fake.set_storage("SubtensorModule", "WeightsSetRateLimit", [NETUID], 100)
    fake.set_storage("SubtensorModule", "LastUpdate", [NETUID], [fake.block - 10])
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(ChainError, match="rate limit"):
        make_chain(runner, wallet).set_weights([0, 1], [0.5, 0.5], version_key=1)
    assert fake.count("submit") == 1
    assert any("refused" in r.getMessage() and "rate limit" in r.getMessage() for r in caplog.records)


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
