"""The real-network :class:`~model.storage.chain.protocol.Chain`, on the bittensor 11 SDK.

Reads go through ``bt.Subtensor`` (the blocking client): ``subnets.metagraph``,
``subnets.commitments``, ``identity.commitment``, ``block``. Writes are a raw
``Commitments.set_commitment`` call signed by the hotkey, and the ``SetWeights`` intent (which
conforms the weights to the subnet and picks plaintext or commit-reveal itself).

Every call runs under :func:`utilities.retry.retry_call`. Reads are retried on timeouts and
connection errors. Writes are retried only on connection errors: a write that timed out may still
be in flight on the SDK's event loop, and sending it again could double-submit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import bittensor as bt
import numpy as np
from bittensor.intents.weights import SetWeights

from model.data import MAX_COMMITMENT_BYTES
from model.storage.chain.protocol import Commitment, Metagraph
from utilities.errors import ChainError, CommitmentError, ConfigError
from utilities.retry import CallTimeoutError, retry_call

T = TypeVar("T")

logger = logging.getLogger(__name__)

_READ_RETRY_ON: tuple[type[BaseException], ...] = (
    CallTimeoutError,
    ConnectionError,
    OSError,
    bt.RpcConnectionError,
)
# No timeouts here (CallTimeoutError is an OSError, so OSError is left out too): see module doc.
_WRITE_RETRY_ON: tuple[type[BaseException], ...] = (ConnectionError, bt.RpcConnectionError)


class BittensorChain:
    """A subnet on a bittensor network; writes act as ``wallet``'s hotkey."""

    def __init__(
        self,
        subtensor: bt.SyncClient,
        *,
        netuid: int,
        wallet: bt.Wallet | None = None,
        timeout_s: float = 60.0,
        attempts: int = 3,
        wait_s: float = 1.0,
    ) -> None:
        if netuid < 0:
            raise ConfigError(f"netuid must be >= 0, got {netuid}")
        if timeout_s <= 0 or attempts < 1 or wait_s < 0:
            raise ConfigError(
                f"invalid retry settings: timeout_s={timeout_s}, attempts={attempts}, wait_s={wait_s}"
            )
        self.netuid = netuid
        self._subtensor = subtensor
        self._wallet = wallet
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._wait_s = wait_s

    @classmethod
    def connect(
        cls,
        network: str,
        *,
        netuid: int,
        wallet: bt.Wallet | None = None,
        timeout_s: float = 60.0,
        attempts: int = 3,
        wait_s: float = 1.0,
    ) -> BittensorChain:
        """A chain on ``network`` (``finney``, ``test``, ``local`` or a ``ws(s)://`` URL).

        Nothing is dialled here: the SDK connects on the first call, under that call's timeout.
        """
        try:
            subtensor = bt.Subtensor(network)
        except ValueError as exc:  # unknown network name
            raise ConfigError(f"cannot use network {network!r}: {exc}") from exc
        return cls(
            subtensor, netuid=netuid, wallet=wallet, timeout_s=timeout_s, attempts=attempts, wait_s=wait_s
        )

    # Reads -------------------------------------------------------------------------------------

    def current_block(self) -> int:
        """The chain's latest block number."""
        return self._call(f"current block (netuid {self.netuid})", lambda: int(self._subtensor.block))

    def finalized_block(self) -> int:
        """The chain's latest finalized block number."""
        return self._call(
            f"finalized block (netuid {self.netuid})", lambda: int(self._subtensor.finalized_block)
        )

    def min_allowed_weights(self) -> int:
        """The subnet's ``MinAllowedWeights`` hyperparameter."""
        return self._call(
            f"MinAllowedWeights (netuid {self.netuid})",
            lambda: int(self._subtensor.hyperparameters.min_allowed_weights(self.netuid)),
        )

    def block_hash(self, block: int) -> str:
        """The hash of ``block`` (``0x``-hex), read from its header."""
        what = f"hash of block {block}"

        def fetch() -> str:
            info = self._subtensor.block_info(block)
            if info is None or not info.hash:
                raise ChainError(f"block {block} is not known to the chain")
            return str(info.hash)

        return self._call(what, fetch)

    def metagraph(self) -> Metagraph:
        """The subnet's neurons; ``stake`` is each neuron's total stake in the subnet's alpha."""
        return self._call(f"metagraph of netuid {self.netuid}", self._fetch_metagraph)

    def _fetch_metagraph(self) -> Metagraph:
        graph = self._subtensor.subnets.metagraph(self.netuid, commitments=False)
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
        what = f"commitment of hotkey {hotkey} on netuid {self.netuid}"
        record = self._call(what, lambda: self._subtensor.identity.commitment(self.netuid, hotkey))
        if record is None:
            return None
        return _to_commitment(hotkey, record.fields, int(record.block))

    def commitments(self) -> dict[str, Commitment]:
        """Every hotkey's latest plain-text commitment; undecodable entries are logged and skipped."""
        what = f"commitments on netuid {self.netuid}"
        records = self._call(what, lambda: dict(self._subtensor.subnets.commitments(self.netuid)))
        out: dict[str, Commitment] = {}
        for hotkey, record in records.items():
            commitment = _to_commitment(str(hotkey), record.fields, int(record.block))
            if commitment is not None:
                out[commitment.hotkey] = commitment
        return out

    # Writes ------------------------------------------------------------------------------------

    def commit(self, data: str) -> None:
        """Commit ``data`` (at most 128 UTF-8 bytes) as this chain's hotkey, in a ``Raw<n>`` field."""
        raw = data.encode("utf-8")
        if not raw or len(raw) > MAX_COMMITMENT_BYTES:
            raise CommitmentError(
                f"commitment on netuid {self.netuid} is {len(raw)} bytes; it must be 1 to "
                f"{MAX_COMMITMENT_BYTES} bytes"
            )
        wallet = self._require_wallet("commit")
        what = f"commit on netuid {self.netuid} as hotkey {self._hotkey_of(wallet)}"
        call = bt.calls.Commitments.set_commitment(
            netuid=self.netuid, info={"fields": [{f"Raw{len(raw)}": raw}]}
        )

        def submit() -> None:
            result = self._subtensor.submit_call(
                call, wallet, signer="hotkey", wait_for_inclusion=True, wait_for_finalization=False
            )
            _check(result, what, CommitmentError)

        self._call(what, submit, error=CommitmentError, retry_on=_WRITE_RETRY_ON)

    def set_weights(self, uids: Sequence[int], weights: Sequence[float], *, version_key: int) -> None:
        """Set this validator's weights under ``version_key`` (the SDK clips, normalizes, quantizes)."""
        if len(uids) != len(weights):
            raise ChainError(
                f"set_weights on netuid {self.netuid}: {len(uids)} uids but {len(weights)} weights"
            )
        wallet = self._require_wallet("set_weights")
        what = f"set_weights on netuid {self.netuid} as hotkey {self._hotkey_of(wallet)}"

        def submit() -> None:
            intent = SetWeights(  # raises on duplicate uids: inside, so it becomes a ChainError
                netuid=self.netuid,
                uids=[int(u) for u in uids],
                weights=[float(w) for w in weights],
                version_key=int(version_key),
            )
            result = self._subtensor.execute(
                intent, wallet, wait_for_inclusion=True, wait_for_finalization=False
            )
            _check(result, what, ChainError)

        self._call(what, submit, retry_on=_WRITE_RETRY_ON)

    # Plumbing ----------------------------------------------------------------------------------

    def _require_wallet(self, action: str) -> bt.Wallet:
        if self._wallet is None:
            raise ConfigError(f"{action} on netuid {self.netuid} needs a wallet; this chain has none")
        return self._wallet

    def _hotkey_of(self, wallet: bt.Wallet) -> str:
        try:
            return str(wallet.hotkeypub.ss58_address)
        except (OSError, ValueError) as exc:  # missing or unreadable key file
            raise ConfigError(f"cannot read the hotkey of wallet {wallet.name!r}: {exc}") from exc

    def _call(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        error: type[ChainError] = ChainError,
        retry_on: tuple[type[BaseException], ...] = _READ_RETRY_ON,
    ) -> T:
        """``fn()`` under the timeout and retries; any failure becomes ``error`` naming ``what``."""
        try:
            return retry_call(
                fn,
                what=what,
                timeout_s=self._timeout_s,
                attempts=self._attempts,
                retry_on=retry_on,
                wait_s=self._wait_s,
            )
        except ChainError:
            raise
        except CallTimeoutError as exc:
            raise error(f"{what}: no answer within {self._timeout_s:g} s ({exc})") from exc
        except Exception as exc:  # the SDK boundary: SDK and transport raise arbitrary types
            raise error(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def _check(result: bt.ExtrinsicResult, what: str, error: type[ChainError]) -> None:
    """Raise ``error`` with the chain's message if the extrinsic did not succeed."""
    if not result.success:
        raise error(f"{what} was rejected: {result.message or 'no message from the chain'}")


def _to_commitment(hotkey: str, fields: Sequence[Any], block: int) -> Commitment | None:
    """The text of the ``Raw*`` commitment fields, or ``None`` (logged) if there is none usable."""
    try:
        raw = _raw_bytes(fields)
        text = raw.decode("utf-8") if raw is not None else None
    except ValueError as exc:  # bad hex, not bytes, or not UTF-8 (UnicodeDecodeError)
        logger.warning("skipping the commitment of hotkey %s: cannot decode it as text (%s)", hotkey, exc)
        return None
    if text is None:
        logger.debug("hotkey %s has no plain-text commitment fields: %r", hotkey, fields)
        return None
    return Commitment(hotkey=hotkey, data=text, block=block)


def _raw_bytes(fields: Sequence[Any]) -> bytes | None:
    """The concatenated payloads of the ``Raw<n>`` variants in ``fields``, ``None`` if none."""
    chunks: list[bytes] = []
    for entry in fields:
        if not isinstance(entry, dict):
            continue  # a unit variant such as "ResetBondsFlag"
        for variant, value in entry.items():
            if isinstance(variant, str) and variant.startswith("Raw"):
                chunks.append(_as_bytes(value))
    return b"".join(chunks) if chunks else None


def _as_bytes(value: Any) -> bytes:
    """Bytes from the shapes the SDK uses for byte arrays: bytes, ``0x``-hex, or a list of ints."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    if isinstance(value, list | tuple):
        try:
            return bytes(int(b) for b in value)
        except TypeError as exc:
            raise ValueError(f"not a byte list: {value!r}") from exc
    raise ValueError(f"unexpected {type(value).__name__} for a byte array")
