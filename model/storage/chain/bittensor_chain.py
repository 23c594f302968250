"""The real-network :class:`~model.storage.chain.protocol.Chain`, on the bittensor 11 SDK.

Every call is a coroutine of the SDK's async ``bt.Client`` run by :class:`SdkRunner` on one loop
thread under a timeout that cancels it (the SDK's own response timeout is 60 s; ours sit above).
Reads: ``subnets.metagraph``, one ``Commitments.CommitmentOf`` map query for all commitments, one
entry for a single hotkey, ``System.BlockHash`` for a block's hash (32 bytes, no block download),
``Timestamp.Now`` at a block for its time.
Writes: a raw ``Commitments.set_commitment`` signed by the hotkey, and the ``SetWeights`` intent
(conforms the weights, picks plaintext or timelocked commit-reveal) with the resubmit retries of
the SDK's own ``bt.set_weights`` helper.

Failures: a chain that cannot be reached is retried with growing back-off shared by all calls
(:class:`OutageGate`, one log line a minute). A write whose fate is unknown (timeout, dropped
connection: "the transaction may already be in the pool or on chain") is never blindly resent:
:class:`~model.storage.chain.writes.WriteVerifier` watches the chain until it shows the write, or
until the write's short era has passed (then it can no longer land, and only then it is resent).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import bittensor as bt
import numpy as np
from bittensor.intents.weights import SetWeights
from bittensor.keyfiles import Keypair
from bittensor.settings import default_fallback_endpoints

from model.data import MAX_COMMITMENT_BYTES
from model.storage.chain.commitment_codec import commitment_from_record
from model.storage.chain.outage import OutageGate
from model.storage.chain.protocol import Commitment, Metagraph
from model.storage.chain.sdk_runner import SdkRunner, client_for
from model.storage.chain.writes import UNREACHABLE, WriteVerifier
from utilities.errors import ChainError, CommitmentError, ConfigError

T = TypeVar("T")

logger = logging.getLogger(__name__)

SET_WEIGHTS_RETRIES = 2
"""Resubmits on transient pool rejections, as ``bt.set_weights`` does."""
WRITE_ERA_BLOCKS = 8
"""Era of our writes: a transaction not included within this many blocks can never be."""
_ZERO_HASH = "0x" + "00" * 32
_PROBE_FAILURES: tuple[type[BaseException], ...] = (*UNREACHABLE, bt.BittensorError)


class BittensorChain:
    """A subnet on a bittensor network; writes are signed by ``signer`` (the unlocked hotkey)."""

    def __init__(
        self,
        runner: SdkRunner,
        *,
        netuid: int,
        signer: Keypair | None = None,
        timeout_s: float = 90.0,
        write_timeout_s: float = 180.0,
        attempts: int = 3,
        gate: OutageGate | None = None,
        poll_s: float | None = None,
        endpoints: Sequence[str] = (),
    ) -> None:
        if netuid < 0:
            raise ConfigError(f"netuid must be >= 0, got {netuid}")
        if timeout_s <= 0 or write_timeout_s <= 0 or attempts < 1 or (poll_s is not None and poll_s <= 0):
            raise ConfigError(
                f"invalid chain settings: timeout_s={timeout_s}, write_timeout_s={write_timeout_s}, "
                f"attempts={attempts}, poll_s={poll_s}"
            )
        self.netuid = netuid
        self.endpoints = tuple(endpoints) or (runner.client.endpoint,)
        self._runner = runner
        self._signer = signer
        self._timeout_s = timeout_s
        self._write_timeout_s = write_timeout_s
        self._attempts = attempts
        self._gate = gate or OutageGate()
        self._poll_s = poll_s
        self._verifier = WriteVerifier(self, era_blocks=WRITE_ERA_BLOCKS)

    @classmethod
    def connect(
        cls,
        network: str,
        *,
        netuid: int,
        signer: Keypair | None = None,
        substrate: bt.Substrate | None = None,
        **options: Any,
    ) -> BittensorChain:
        """A chain on ``network`` (``finney``, ``test``, ``local`` or a ``ws(s)://`` URL); nothing is
        dialled until :meth:`probe` or the first call. ``substrate`` replaces the SDK's RPC backend
        (tests)."""
        try:
            client = bt.Client(network, substrate=substrate) if substrate else client_for(network)
        except ValueError as exc:  # unknown network name
            raise ConfigError(f"cannot use network {network!r}: {exc}") from exc
        endpoints = (client.endpoint, *default_fallback_endpoints(client.network))
        return cls(SdkRunner(client), netuid=netuid, signer=signer, endpoints=endpoints, **options)

    def probe(self, *, timeout_s: float = 30.0) -> int:
        """Reach the chain once, within ``timeout_s`` and without retries; the current block.

        Raises one :class:`ChainError` naming the endpoints tried and what to check.
        """
        try:
            return int(self._runner.call(lambda c: c.block(), timeout_s=timeout_s, what="chain probe"))
        except _PROBE_FAILURES as exc:
            raise ChainError(
                f"cannot reach the bittensor chain within {timeout_s:g} s (tried "
                f"{', '.join(self.endpoints)}): {type(exc).__name__}: {exc}. Check the internet "
                "connection and firewall (outgoing websockets), --subtensor.network / "
                "--subtensor.chain_endpoint, or run on the local network with --localnet DIR"
            ) from exc

    def close(self) -> None:
        """Close the connection and its loop thread."""
        self._runner.close()

    # Reads -------------------------------------------------------------------------------------

    def current_block(self) -> int:
        """The chain's latest block number."""
        return int(self.read(f"current block (netuid {self.netuid})", lambda c: c.block()))

    def finalized_block(self) -> int:
        """The chain's latest finalized block number."""
        return int(self.read(f"finalized block (netuid {self.netuid})", lambda c: c.finalized_block()))

    def min_allowed_weights(self) -> int:
        """The subnet's ``MinAllowedWeights`` hyperparameter."""
        what = f"MinAllowedWeights (netuid {self.netuid})"
        return int(self.read(what, lambda c: c.hyperparameters.min_allowed_weights(self.netuid)))

    @property
    def commit_interval_blocks(self) -> int:
        """The commitment quota: blocks that must pass between two commitments of one hotkey (the
        ``Commitments.RateLimit`` storage value; 0 when the chain states none). Read on every access."""
        value = self.read("commitment rate limit", lambda c: c.query(("Commitments", "RateLimit"), []))
        try:
            blocks = int(value or 0)
        except (TypeError, ValueError) as exc:
            raise ChainError(f"Commitments.RateLimit is not a block count: {value!r}") from exc
        return max(blocks, 0)

    def block_hash(self, block: int) -> str:
        """The hash of ``block`` (``0x``-hex): one ``System.BlockHash`` entry, not the block."""
        value = self.read(f"hash of block {block}", lambda c: c.query(("System", "BlockHash"), [block]))
        text = value.hex() if isinstance(value, bytes) else str(value or "")
        text = text if text.startswith("0x") else "0x" + text
        if text in ("0x", _ZERO_HASH):
            raise ChainError(f"block {block} is not known to the chain (in the future, or too old)")
        return text

    def block_timestamp(self, block: int) -> float:
        """The time of ``block`` (Unix seconds): the ``Timestamp.Now`` storage value (milliseconds) at
        that block. A node keeps the state of recent blocks only (256 on a pruned node), which covers
        a sync block (at most one sync interval old)."""

        async def fetch(client: bt.Client) -> Any:
            # the SDK reads a block it has no hash for at the head: refuse a block not produced yet
            if not 0 <= block <= await client.block():
                return None
            return await client.query(("Timestamp", "Now"), [], block=block)

        value = self.read(f"time of block {block}", fetch)
        if value is None:
            raise ChainError(f"block {block} is not known to the chain (in the future, or too old)")
        try:
            millis = int(value)
        except (TypeError, ValueError) as exc:
            raise ChainError(f"Timestamp.Now at block {block} is not a time: {value!r}") from exc
        if millis <= 0:
            raise ChainError(f"block {block} has no time on the chain (Timestamp.Now is {millis})")
        return millis / 1000

    def block_time(self) -> float:
        """Seconds per block, as the chain says (12 on finney)."""
        return float(self.read("block time", lambda c: c.block_time()))

    def metagraph(self) -> Metagraph:
        """The subnet's neurons; ``stake`` is each neuron's total stake in the subnet's alpha."""
        graph = self.read(
            f"metagraph of netuid {self.netuid}",
            lambda c: c.subnets.metagraph(self.netuid, commitments=False),
        )
        if graph is None:
            raise ChainError(f"subnet netuid {self.netuid} does not exist")
        neurons = list(graph.neurons)
        return Metagraph(
            block=int(graph.block),
            uids=np.array([n.uid for n in neurons], dtype=np.int64),
            hotkeys=tuple(str(n.hotkey) for n in neurons),
            stake=np.array([n.total_stake.amount for n in neurons], dtype=np.float64),
            validator_permit=np.array([n.validator_permit for n in neurons], dtype=np.bool_),
            incentive=np.array([n.incentive for n in neurons], dtype=np.float64),
            consensus=np.array([n.consensus for n in neurons], dtype=np.float64),
        )

    def commitment(self, hotkey: str) -> Commitment | None:
        """The latest plain-text commitment of ``hotkey``, or ``None`` (also when undecodable)."""
        record = self.read(
            f"commitment of hotkey {hotkey} on netuid {self.netuid}",
            lambda c: c.query(("Commitments", "CommitmentOf"), [self.netuid, hotkey]),
        )
        return commitment_from_record(hotkey, record) if record else None

    def commitments(self) -> dict[str, Commitment]:
        """Every hotkey's latest plain-text commitment (one map query); undecodable ones are logged
        and skipped."""
        rows = self.read(
            f"commitments on netuid {self.netuid}",
            lambda c: c.query_map(("Commitments", "CommitmentOf"), [self.netuid]),
        )
        out: dict[str, Commitment] = {}
        for key, record in rows:
            hotkey = str(key[0] if isinstance(key, list | tuple) and len(key) == 1 else key)
            commitment = commitment_from_record(hotkey, record)
            if commitment is not None:
                out[hotkey] = commitment
        return out

    def last_update(self, hotkey: str) -> int | None:
        """The block at which ``hotkey``'s weights last changed on this subnet (``None`` if it is
        not registered): ``SubtensorModule.LastUpdate`` at the hotkey's uid."""

        async def fetch(client: bt.Client) -> int | None:
            uid = await client.query(("SubtensorModule", "Uids"), [self.netuid, hotkey])
            if uid is None:
                return None
            column = await client.query(("SubtensorModule", "LastUpdate"), [self.netuid])
            column = list(column or [])
            return int(column[int(uid)]) if int(uid) < len(column) else 0

        return self.read(f"last weights update of {hotkey} on netuid {self.netuid}", fetch)

    # Writes ------------------------------------------------------------------------------------

    @property
    def hotkey(self) -> str | None:
        """The ss58 address that signs this chain's writes."""
        return str(self._signer.ss58_address) if self._signer is not None else None

    def commit(self, data: str) -> None:
        """Commit ``data`` (at most 128 UTF-8 bytes) as this chain's hotkey, in a ``Raw<n>`` field."""
        raw = data.encode("utf-8")
        if not raw or len(raw) > MAX_COMMITMENT_BYTES:
            raise CommitmentError(
                f"commitment on netuid {self.netuid} is {len(raw)} bytes; it must be 1 to "
                f"{MAX_COMMITMENT_BYTES} bytes"
            )
        signer = self._require_signer("commit")
        hotkey = str(signer.ss58_address)
        what = f"commit on netuid {self.netuid} as hotkey {hotkey}"
        call = bt.calls.Commitments.set_commitment(
            netuid=self.netuid, info={"fields": [{f"Raw{len(raw)}": raw}]}
        )

        def send(client: bt.Client) -> Awaitable[bt.ExtrinsicResult]:
            return client.submit_call(
                call,
                signer,
                signer="hotkey",
                period=WRITE_ERA_BLOCKS,
                wait_for_inclusion=True,
                wait_for_finalization=False,
            )

        def state() -> int | None:
            mine = self.commitment(hotkey)
            return mine.block if mine is not None else None

        def landed(before: int | None) -> bool:
            mine = self.commitment(hotkey)
            return mine is not None and mine.data == data and (before is None or mine.block > before)

        self._verifier.write(what, send, state=state, landed=landed, error=CommitmentError)

    def set_weights(self, uids: Sequence[int], weights: Sequence[float], *, version_key: int) -> None:
        """Set this validator's weights under ``version_key`` (the SDK clips, normalizes, quantizes,
        and commits them timelocked when the subnet runs commit-reveal)."""
        if len(uids) != len(weights):
            raise ChainError(
                f"set_weights on netuid {self.netuid}: {len(uids)} uids but {len(weights)} weights"
            )
        signer = self._require_signer("set_weights")
        hotkey = str(signer.ss58_address)
        what = f"set_weights on netuid {self.netuid} as hotkey {hotkey}"
        try:
            intent = SetWeights(
                netuid=self.netuid,
                uids=[int(u) for u in uids],
                weights=[float(w) for w in weights],
                version_key=int(version_key),
            )
        except bt.BittensorError as exc:  # duplicate uids and the like
            raise ChainError(f"{what}: {exc}") from exc

        def send(client: bt.Client) -> Awaitable[bt.ExtrinsicResult]:
            return client.execute(
                intent,
                signer,
                period=WRITE_ERA_BLOCKS,
                wait_for_inclusion=True,
                wait_for_finalization=False,
                retries=SET_WEIGHTS_RETRIES,
            )

        def landed(before: int | None) -> bool:
            now = self.last_update(hotkey)
            return now is not None and (before is None or now > before)

        self._verifier.write(
            what, send, state=lambda: self.last_update(hotkey), landed=landed, error=ChainError
        )

    # Plumbing ----------------------------------------------------------------------------------

    def _require_signer(self, action: str) -> Keypair:
        if self._signer is None:
            raise ConfigError(f"{action} on netuid {self.netuid} needs a wallet; this chain has none")
        return self._signer

    def poll_interval_s(self) -> float:
        """How long to wait between two looks at the chain while a write's fate is unknown."""
        return self._poll_s if self._poll_s is not None else self.block_time()

    def read(self, what: str, make: Callable[[bt.Client], Awaitable[T]]) -> T:
        """``await make(client)``: retried with back-off while the chain is unreachable; any failure
        becomes a :class:`ChainError` naming ``what``."""
        last: BaseException | None = None
        for _ in range(self._attempts):
            if not self._gate.wait(self._timeout_s):
                break
            try:
                value = self._runner.call(make, timeout_s=self._timeout_s, what=what)
            except UNREACHABLE as exc:
                self._gate.failed(what, exc)
                last = exc
                continue
            except Exception as exc:  # the SDK boundary: SDK and transport raise arbitrary types
                raise ChainError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
            self._gate.succeeded()
            return value
        detail = f"{type(last).__name__}: {last}" if last is not None else "backing off after failures"
        raise ChainError(f"{what} failed: chain unreachable ({detail})") from last

    def send(self, what: str, make: Callable[[bt.Client], Awaitable[T]]) -> T:
        """One attempt of a write (no retry: the caller decides after finding out its fate)."""
        if not self._gate.wait(self._write_timeout_s):
            raise ChainError(f"{what}: chain unreachable (backing off after failures)")
        try:
            value = self._runner.call(make, timeout_s=self._write_timeout_s, what=what)
        except UNREACHABLE as exc:
            self._gate.failed(what, exc)
            raise
        self._gate.succeeded()
        return value
