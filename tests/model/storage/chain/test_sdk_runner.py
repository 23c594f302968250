"""SdkRunner against the SDK's real websocket transport: a node that accepts connections and never
answers. A timed-out call must leave no thread, no task and no open request behind."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bittensor as bt
import pytest
from websockets.asyncio.server import ServerConnection, serve

from model.storage.chain.sdk_runner import SdkRunner, client_for
from utilities.retry import CallTimeoutError


class SilentNode:
    """A websocket server on its own thread that reads every request and answers none."""

    def __init__(self) -> None:
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


def test_a_closed_runner_refuses_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))
    runner = SdkRunner(bt.Client("ws://127.0.0.1:9"))
    runner.close()
    with pytest.raises(CallTimeoutError, match="closed"):
        runner.call(lambda client: client.block(), timeout_s=1.0, what="current block")
