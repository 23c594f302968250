"""SdkRunner against the SDK's real websocket transport and a scripted node on a local socket: one
that never answers, and one that answers like subtensor (with the runtime's real metadata) until it
goes silent on one method. A timed-out call must leave no thread, no task, no socket and no open
request behind, and nothing is resent while its first copy is pending."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bittensor as bt
import pytest
from websockets.asyncio.server import ServerConnection, serve

from model.storage.chain.sdk_runner import SdkRunner, client_for
from utilities.retry import CallTimeoutError

METADATA = Path(__file__).parents[3] / "fakes" / "data" / "subtensor_metadata_v15.scale.gz"


def metadata_answer() -> str:
    """``Metadata_metadata_at_version(15)`` as the node returns it: ``Option<OpaqueMetadata>``."""
    meta = gzip.decompress(METADATA.read_bytes())
    length = (len(meta) << 2 | 0b10).to_bytes(4, "little")  # SCALE compact, four-byte mode
    return "0x01" + length.hex() + meta.hex()


class SilentNode:
    """A websocket server on its own thread that reads every request and answers those whose method
    is in ``answers`` (a JSON-RPC result), unless the method is in ``silent``."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers = answers or {}
        self.silent: set[str] = set()
        self.open = 0
        self.connections = 0
        self.frames: list[list[str]] = []  # per connection, in order
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(10)

    async def _handle(self, connection: ServerConnection) -> None:
        self.open += 1
        self.connections += 1
        received: list[str] = []
        self.frames.append(received)
        try:
            async for frame in connection:
                received.append(str(frame))
                request = json.loads(frame)
                method = request.get("method")
                if method in self.answers and method not in self.silent:
                    reply = {"jsonrpc": "2.0", "id": request["id"], "result": self.answers[method]}
                    await connection.send(json.dumps(reply))
        finally:
            self.open -= 1

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            async with serve(self._handle, "127.0.0.1", 0) as server:
                self.port = next(iter(server.sockets)).getsockname()[1]
                self._started.set()
                await self._stop.wait()

        self._loop.run_until_complete(main())

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def node() -> Iterator[SilentNode]:
    server = SilentNode()
    yield server
    server.close()


def wait_until(condition: object, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


def test_timed_out_calls_on_the_real_transport_leave_nothing_behind(
    node: SilentNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))
    threads = threading.active_count()
    runner = SdkRunner(client_for(f"ws://127.0.0.1:{node.port}"))
    try:
        for _ in range(4):
            with pytest.raises(CallTimeoutError, match=r"0\.5 s"):
                runner.call(lambda client: client.block(), timeout_s=0.5, what="current block")
        # each timed-out call was cancelled and its connection dropped: no socket stays open,
        # no task of the transport (supervisor, pending request) is left on the loop
        assert wait_until(lambda: node.open == 0)
        assert runner.pending_tasks() == 0
        assert threading.active_count() == threads + 1  # the runner's one loop thread
        # one connection per call, and no request was sent twice while its first copy was pending
        assert node.connections == 4
        assert all(frames and len(frames) == len(set(frames)) for frames in node.frames)
    finally:
        runner.close()
    assert wait_until(lambda: threading.active_count() == threads)


SUBTENSOR_ANSWERS: dict[str, Any] = {
    "state_getRuntimeVersion": {"specVersion": 300, "transactionVersion": 1, "specName": "node-subtensor"},
    "chain_getBlockHash": "0x" + "11" * 32,
    "chain_getHead": "0x" + "22" * 32,
    "chain_getFinalizedHead": "0x" + "22" * 32,
    "chain_getHeader": {"number": hex(5000), "parentHash": "0x" + "33" * 32},
    "state_getKeysPaged": [],
}


def test_a_read_cancelled_on_a_live_connection_is_not_left_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))
    node = SilentNode({**SUBTENSOR_ANSWERS, "state_call": metadata_answer()})
    runner = SdkRunner(client_for(f"ws://127.0.0.1:{node.port}"))
    try:
        assert runner.call(lambda client: client.block(), timeout_s=10.0, what="current block") == 5000
        answered = sum('"chain_getHeader"' in frame for frame in node.frames[0])
        node.silent.add("chain_getHeader")  # the node stops answering block reads
        for _ in range(3):
            with pytest.raises(CallTimeoutError):
                runner.call(lambda client: client.block(), timeout_s=0.5, what="current block")
            # the request was cancelled and the connection holding it closed
            assert wait_until(lambda: node.open == 0)
            assert runner.pending_tasks() == 0
        header_reads = [sum('"chain_getHeader"' in frame for frame in frames) for frames in node.frames]
        # one unanswered read per connection: nothing was resent while its first copy was pending
        assert header_reads == [answered + 1, 1, 1]
        node.silent.clear()
        assert runner.call(lambda client: client.block(), timeout_s=10.0, what="current block") == 5000
        assert runner.connects == 4  # the first, then one after each timeout
    finally:
        runner.close()
        node.close()


def test_a_closed_runner_refuses_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))
    runner = SdkRunner(bt.Client("ws://127.0.0.1:9"))
    runner.close()
    with pytest.raises(CallTimeoutError, match="closed"):
        runner.call(lambda client: client.block(), timeout_s=1.0, what="current block")
