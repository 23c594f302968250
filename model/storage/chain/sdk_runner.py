"""The bittensor SDK's async client, run on one event loop on one dedicated thread.

``bt.Subtensor``'s blocking facade cannot be interrupted from outside: a thread that stops waiting
leaves the request (and the thread blocked on it) behind, and the transport resends it while the
first copy is still pending. Owning the loop fixes that. Every call is a coroutine run under
``asyncio.timeout`` on this loop, so a timeout *cancels* the request instead of abandoning it:

* one thread for the runner's whole life, however many calls time out;
* the first connection is made once, under a lock, whichever thread asks first;
* after a timeout the connection is suspect (the transport may still hold the cancelled request
  in its table, and a cancelled signed submit may have taken a nonce), so once no other call is
  running the client is closed (which fails every request the transport still holds) and any
  task it left on the loop is cancelled; the next call reconnects.

The SDK's ``RpcSubstrate.connect`` keeps the connection it is opening in a local variable until the
handshake and the metadata download are done, and closes it only on the errors it expects: a
connect *cancelled* half-way leaves its websocket open for good. :func:`client_for` therefore builds
the client on :class:`CancelSafeRpcSubstrate`, which closes every connection it opened that did not
become the live one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import bittensor as bt
from bittensor.settings import default_archive_endpoints, default_fallback_endpoints, resolve_endpoint

from utilities.retry import CallTimeoutError

T = TypeVar("T")

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 5.0
_GRACE_S = 5.0
"""How much longer than a call's own timeout the calling thread waits for the loop to answer (only
a loop blocked by synchronous code inside the SDK could need it)."""


class CancelSafeRpcSubstrate(bt.RpcSubstrate):
    """``bt.RpcSubstrate`` whose connect, when cancelled (a timeout), closes what it opened."""

    def __init__(self, endpoint: str, **options: Any) -> None:
        super().__init__(endpoint, **options)
        self._opened: list[Any] = []

    def _interface(self, endpoint: str, fallbacks: list[str]) -> Any:
        connection = super()._interface(endpoint, fallbacks)
        self._opened.append(connection)
        return connection

    async def connect(self) -> None:
        try:
            await super().connect()
        finally:
            # whatever did not become the live connection (cancelled, failed) is closed now
            stray = [c for c in self._opened if c is not self._substrate]
            self._opened = [c for c in self._opened if c is self._substrate]
            for connection in stray:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), _CLOSE_TIMEOUT_S)

    async def close(self) -> None:
        await super().close()
        self._opened.clear()


def client_for(network: str) -> bt.Client:
    """A ``bt.Client`` for ``network`` with the SDK's own endpoint pools, on
    :class:`CancelSafeRpcSubstrate`. Raises ``ValueError`` for an unknown network name."""
    label, endpoint = resolve_endpoint(network)
    fallbacks = [url for url in default_fallback_endpoints(label) if url != endpoint]
    substrate = CancelSafeRpcSubstrate(
        endpoint, fallback_endpoints=fallbacks, archive_endpoints=default_archive_endpoints(label)
    )
    return bt.Client(network, substrate=substrate)


class SdkRunner:
    """Runs coroutines of one ``bt.Client`` on a private loop thread, each under its own timeout."""

    def __init__(self, client: bt.Client, *, name: str = "bittensor") -> None:
        self.client = client
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        # Loop-side state: only touched by coroutines on the loop.
        self._connect_lock: asyncio.Lock | None = None
        self._connected = False
        self._active = 0
        self._stale = False
        self.connects = 0
        """How many times a connection was opened (one, unless timeouts forced reconnects)."""

    # Public ------------------------------------------------------------------------------------

    def call(self, make: Callable[[bt.Client], Awaitable[T]], *, timeout_s: float, what: str) -> T:
        """``await make(client)`` on the loop (connecting first if needed), within ``timeout_s``.

        Raises :class:`CallTimeoutError` when the time is up (the request is cancelled by then);
        any other exception of the call propagates unchanged.
        """
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(self._run(make, timeout_s, what), loop)
        try:
            return future.result(timeout_s + _GRACE_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise CallTimeoutError(f"{what} did not finish within {timeout_s:g} s") from None

    def pending_tasks(self) -> int:
        """Tasks alive on the loop (for tests and diagnostics): 0 when nothing is in flight."""
        loop = self._loop
        if loop is None or self._closed:
            return 0

        async def count() -> int:
            current = asyncio.current_task()
            return sum(1 for task in asyncio.all_tasks() if task is not current and not task.done())

        return asyncio.run_coroutine_threadsafe(count(), loop).result(_CLOSE_TIMEOUT_S)

    def close(self) -> None:
        """Close the connection and stop the loop thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if self._closed or loop is None or thread is None:
                self._closed = True
                return
            self._closed = True
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._reset(), loop).result(_CLOSE_TIMEOUT_S * 2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CLOSE_TIMEOUT_S)

    # Loop side ---------------------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise CallTimeoutError(f"the {self._name} client is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()
                    loop.close()

                self._thread = threading.Thread(target=run, name=f"{self._name}-loop", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    async def _run(self, make: Callable[[bt.Client], Awaitable[T]], timeout_s: float, what: str) -> T:
        self._active += 1
        try:
            try:
                async with asyncio.timeout(timeout_s) as budget:
                    await self._ensure_connected()
                    return await make(self.client)
            except TimeoutError:
                if not budget.expired():
                    raise  # the SDK's own TimeoutError, not ours
                self._stale = True
                raise CallTimeoutError(f"{what} did not finish within {timeout_s:g} s") from None
        finally:
            self._active -= 1
            if self._stale and self._active == 0:
                await self._reset()

    async def _ensure_connected(self) -> None:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if not self._connected:
                await self.client.connect()
                self._connected = True
                self.connects += 1

    async def _reset(self) -> None:
        """Drop the connection and everything left on the loop; the next call reconnects."""
        self._stale = False
        if self._connected:
            self._connected = False
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await self.client.close()
            except Exception as exc:  # noqa: BLE001 -- best effort: the connection is being dropped
                logger.debug("closing the %s connection failed: %s", self._name, exc)
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)
