"""An in-memory ``bittensor.Substrate`` for tests: ``bt.Subtensor(network, substrate=FakeSubstrate())``.

bittensor 11 routes every read and write of ``Client``/``SyncClient`` (namespaces, intents, the
executor) through the narrow ``Substrate`` protocol in ``bittensor/_substrate.py``; the production
backend is ``RpcSubstrate``. This fake implements that protocol, so the real SDK code above it runs
unchanged: storage reads answer from ``storage`` / ``maps``, runtime-API calls from ``runtime``, and
writes are recorded in ``submissions`` (signed with the keypair the SDK hands over, as the real
``create_signed_extrinsic`` would).

Value shapes follow what the real transport returns (plain decoded values, see ``RpcSubstrate``):

* account ids decode to ss58 strings; integers (also compact ones) to ``int``;
* byte vectors and fixed byte arrays to ``0x``-hex strings; a ``Vec<Compact<u8>>`` (the
  metagraph's ``name``/``symbol``) to a list of ints;
* enum variants with a payload to a one-key dict (``{"Raw4": "0x00010203"}``), unit variants to
  their name -- documented in ``bittensor/metagraph.py`` (``_field_items``);
* ``Commitments.CommitmentOf`` to ``{"block", "deposit", "info": {"fields": [...]}}`` (the
  pallet's ``Registration`` struct; read by ``bittensor/reads/identity.py``);
* ``SubnetInfoRuntimeApi.get_metagraph`` to a dict of per-uid columns (the runtime's
  ``Metagraph`` struct; the keys are the ones ``bittensor/metagraph.py:_build`` reads).

Failures are scripted per protocol method: ``fail(method, *errors)`` raises the errors on the
next calls, ``hang(method)`` makes every call of that method wait forever (without blocking the
SDK's event loop; ``in_flight`` counts the calls still waiting, so a test can check a timeout
cancelled them). Every call is logged in ``calls`` as ``(method, args)``.

Writes take effect like on chain: a successful ``set_commitment`` stores the commitment at the
current block, a weights call sets the signer's ``LastUpdate``. ``after_submit`` scripts a submit
whose answer is lost: ``(True, error)`` lands the write and then raises ``error`` (the connection
dropped after sending), ``(False, error)`` raises it without effect (sent and lost).
``blocks_per_read`` advances the block on every ``block_number`` read (a chain that moves on).
Unless scripted, ``Timestamp.Now`` at a block reads ``genesis_ms`` plus ``seconds_per_block`` per
block (milliseconds, as the pallet stores it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import bittensor as bt

U16_MAX = 65535
RAO_PER_UNIT = 10**9


@dataclass(frozen=True)
class ComposedCall:
    """What ``compose`` returns here (the real one returns SCALE ``CallBytes``)."""

    module: str
    function: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Submission:
    """One signed extrinsic the SDK submitted."""

    call: ComposedCall
    signer_address: str
    signer_public_key: bytes
    payload: bytes
    signature: bytes
    wait_for_inclusion: bool
    wait_for_finalization: bool
    period: int | None = None


@dataclass
class FakeNeuron:
    """One row of the fake subnet (human units; encoded like the runtime on the way out)."""

    hotkey: str
    coldkey: str = "5C4hrfjw9DjXZTzV3MwzrrAr9P1MJhSrvWGWqi1eSuyUpnhM"
    stake: float = 0.0  # alpha, in whole units
    validator_permit: bool = False
    incentive: float = 0.0  # 0..1
    consensus: float = 0.0  # 0..1


def metagraph_response(netuid: int, block: int, neurons: Iterable[FakeNeuron]) -> dict[str, Any]:
    """A decoded ``SubnetInfoRuntimeApi.get_metagraph`` answer for ``neurons`` (uid = position)."""
    rows = list(neurons)

    def per_u16(value: float) -> int:
        return round(value * U16_MAX)

    def rao(value: float) -> int:
        return round(value * RAO_PER_UNIT)

    return {
        "netuid": netuid,
        "name": list(b"finetune"),
        "symbol": list("ι".encode()),
        "identity": None,
        "network_registered_at": 100,
        "owner_hotkey": rows[0].hotkey if rows else "",
        "owner_coldkey": rows[0].coldkey if rows else "",
        "block": block,
        "tempo": 360,
        "last_step": block - 10,
        "blocks_since_last_step": 10,
        "num_uids": len(rows),
        "max_uids": 256,
        "tao_in": 0,
        "alpha_in": 0,
        "moving_price": {"bits": 0},
        "hotkeys": [n.hotkey for n in rows],
        "coldkeys": [n.coldkey for n in rows],
        "identities": [None for _ in rows],
        "axons": [{"ip": 0, "port": 0, "ip_type": 4} for _ in rows],
        "active": [True for _ in rows],
        "validator_permit": [n.validator_permit for n in rows],
        "last_update": [block - 1 for _ in rows],
        "block_at_registration": [100 for _ in rows],
        "rank": [0 for _ in rows],
        "trust": [0 for _ in rows],
        "consensus": [per_u16(n.consensus) for n in rows],
        "incentives": [per_u16(n.incentive) for n in rows],
        "dividends": [0 for _ in rows],
        "pruning_score": [0 for _ in rows],
        "emission": [0 for _ in rows],
        "alpha_stake": [rao(n.stake) for n in rows],
        "tao_stake": [0 for _ in rows],
        "total_stake": [rao(n.stake) for n in rows],
    }


def commitment_record(data: str | bytes, block: int, deposit: int = 0) -> dict[str, Any]:
    """A decoded ``Commitments.CommitmentOf`` value holding one ``Raw<n>`` field."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return {"block": block, "deposit": deposit, "info": {"fields": [{f"Raw{len(raw)}": "0x" + raw.hex()}]}}


class FakeSubstrate:
    """A scripted chain behind the real SDK (see the module docstring)."""

    def __init__(self, *, block: int = 1000) -> None:
        self.block = block
        self.token_symbols: dict[int, str] = {}
        # (pallet, item) -> {tuple(params): value}; a missing key reads as None (an empty Option).
        self.storage: dict[tuple[str, str], dict[tuple[Any, ...], Any]] = {}
        # (pallet, item, tuple(prefix params)) -> [(key, value), ...]
        self.maps: dict[tuple[str, str, tuple[Any, ...]], list[tuple[Any, Any]]] = {}
        # (api, method) -> value, or a callable of the params returning it
        self.runtime: dict[tuple[str, str], Any] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.composed: list[ComposedCall] = []
        self.submissions: list[Submission] = []
        self.results: list[bt.ExtrinsicResult] = []  # answers for the next submits (default: success)
        self._failures: dict[str, list[BaseException]] = {}
        self._hanging: set[str] = set()
        self.connected = False
        self.connects = 0
        self.closes = 0
        self.in_flight = 0
        self.blocks_per_read = 0
        self.seconds_per_block = 12.0  # what block_time() says (the SDK sleeps one between resubmits)
        self.genesis_ms = 1_700_000_000_000  # Timestamp.Now of block 0
        self.after_submit: list[tuple[bool, BaseException]] = []

    # Scripting ---------------------------------------------------------------------------------

    def set_storage(self, pallet: str, item: str, params: list[Any], value: Any) -> None:
        self.storage.setdefault((pallet, item), {})[tuple(params)] = value

    def set_map(self, pallet: str, item: str, params: list[Any], rows: list[tuple[Any, Any]]) -> None:
        self.maps[(pallet, item, tuple(params))] = rows

    def set_metagraph(self, netuid: int, neurons: Iterable[FakeNeuron]) -> None:
        """Answer ``get_metagraph(netuid)`` with ``neurons`` at the current block (uid = position)."""
        rows = list(neurons)
        previous = self.runtime.get(("SubnetInfoRuntimeApi", "get_metagraph"))

        def answer(params: list[Any]) -> Any:
            if params == [netuid]:
                return metagraph_response(netuid, self.block, rows)
            return previous(params) if callable(previous) else None  # None: no such subnet

        self.runtime[("SubnetInfoRuntimeApi", "get_metagraph")] = answer

    def register(self, netuid: int, hotkey: str, uid: int) -> None:
        """``SubtensorModule.Uids`` (netuid, hotkey) -> uid, as a single entry and in the map."""
        self.set_storage("SubtensorModule", "Uids", [netuid, hotkey], uid)
        self.maps.setdefault(("SubtensorModule", "Uids", (netuid,)), []).append((hotkey, uid))

    def add_commitment(self, netuid: int, hotkey: str, record: dict[str, Any]) -> None:
        """``Commitments.CommitmentOf`` (netuid, hotkey) -> record, as a single entry and in the map."""
        self.set_storage("Commitments", "CommitmentOf", [netuid, hotkey], record)
        rows = self.maps.setdefault(("Commitments", "CommitmentOf", (netuid,)), [])
        rows[:] = [row for row in rows if row[0] != hotkey] + [(hotkey, record)]

    def fail(self, method: str, *errors: BaseException) -> None:
        self._failures.setdefault(method, []).extend(errors)

    def hang(self, method: str) -> None:
        self._hanging.add(method)

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    async def _enter(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)
        if method in self._hanging:
            self.in_flight += 1
            try:
                await asyncio.Event().wait()
            finally:
                self.in_flight -= 1

    # Display metadata / lifecycle -------------------------------------------------------------

    def balance(self, rao: int, netuid: int = 0) -> bt.Balance:
        return bt.Balance(int(rao), netuid, self.token_symbols.get(netuid) if netuid else None)

    async def connect(self) -> None:
        await self._enter("connect")
        await asyncio.sleep(0.05)  # a handshake takes time: concurrent first calls overlap here
        self.connected = True
        self.connects += 1

    async def close(self) -> None:
        self.connected = False
        self.closes += 1

    # Reads -------------------------------------------------------------------------------------

    async def block_hash(self, block: int | None = None) -> str:
        await self._enter("block_hash", block)
        return f"0x{self.block if block is None else block:064x}"

    async def block_number(self) -> int:
        await self._enter("block_number")
        self.block += self.blocks_per_read
        return self.block

    async def finalized_block_number(self) -> int:
        await self._enter("finalized_block_number")
        return self.block - 2

    async def block_time(self) -> float:
        return self.seconds_per_block

    async def spec_version(self) -> int:
        return 1

    async def query(
        self,
        module: str,
        storage_function: str,
        params: list[Any] | None = None,
        block_hash: str | None = None,
    ) -> Any:
        await self._enter("query", module, storage_function, list(params or []), block_hash)
        key = tuple(params or [])
        if (module, storage_function) == ("System", "BlockHash") and key not in self.storage.get(
            (module, storage_function), {}
        ):
            # frame_system keeps recent hashes; a block not produced yet reads as the zero hash
            number = int(key[0])
            return f"0x{number:064x}" if number <= self.block else "0x" + "00" * 32
        if (module, storage_function) == ("Timestamp", "Now") and key not in self.storage.get(
            (module, storage_function), {}
        ):
            number = self.block if block_hash is None else int(block_hash, 16)  # see block_hash()
            return self.genesis_ms + number * round(self.seconds_per_block * 1000)
        return self.storage.get((module, storage_function), {}).get(key)

    async def map_has_entries(
        self, module: str, storage_function: str, params: list[Any], block_hash: str | None = None
    ) -> bool:
        return bool(await self.query_map(module, storage_function, params, block_hash))

    async def query_map(
        self,
        module: str,
        storage_function: str,
        params: list[Any] | None = None,
        block_hash: str | None = None,
    ) -> list[tuple[Any, Any]]:
        await self._enter("query_map", module, storage_function, list(params or []), block_hash)
        return list(self.maps.get((module, storage_function, tuple(params or [])), []))

    async def query_batch(
        self, module: str, storage_function: str, param_sets: list[list[Any]], block_hash: str | None = None
    ) -> list[Any]:
        return [await self.query(module, storage_function, p, block_hash) for p in param_sets]

    async def runtime_call(
        self, api: str, method: str, params: list[Any], block_hash: str | None = None
    ) -> Any:
        await self._enter("runtime_call", api, method, list(params), block_hash)
        if (api, method) not in self.runtime:
            raise bt.ChainError(f"FakeSubstrate has no answer for runtime API {api}.{method}")
        answer = self.runtime[(api, method)]
        return answer(params) if callable(answer) else answer

    async def constant(self, module: str, name: str) -> Any:
        await self._enter("constant", module, name)
        if (module, name) == ("Aura", "SlotDuration"):
            return 12000
        raise bt.ChainError(f"FakeSubstrate has no constant {module}.{name}")

    async def decode_scale(self, type_string: str, data: Any) -> Any:
        raise NotImplementedError("FakeSubstrate.decode_scale")

    async def blocks(self, *, finalized: bool = False) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError("FakeSubstrate.blocks")
        yield {}  # pragma: no cover - makes this an async generator

    async def events(self, block_hash: str | None = None) -> list[dict[str, Any]]:
        return []

    async def get_block(self, block_number: int | None = None, block_hash: str | None = None) -> dict | None:
        # A block as the SDK's substrate returns it: a decoded header, and extrinsics whose
        # Timestamp.set inherent carries the block time in ms (client.block_info reads both).
        await self._enter("get_block", block_number, block_hash)
        number = self.block if block_number is None else block_number
        if number > self.block:
            return None
        timestamp = {"call": {"call_module": "Timestamp", "call_args": [{"value": 1_700_000_000_000}]}}
        header = {"number": number, "hash": await self.block_hash(number)}
        return {"header": header, "extrinsics": [timestamp]}

    # Calls and fees ----------------------------------------------------------------------------

    async def compose(self, call: Any) -> ComposedCall:
        module, function, params = call
        await self._enter("compose", module, function, params)
        composed = ComposedCall(module, function, dict(params))
        self.composed.append(composed)
        return composed

    async def estimate_fee(self, call: Any, keypair: Any) -> bt.Balance:
        await self._enter("estimate_fee", call)
        return bt.Balance.from_rao(1000)

    async def estimate_weight(self, call: Any, keypair: Any) -> dict[str, int]:
        return {"ref_time": 0, "proof_size": 0}

    async def account_next_index(self, address: str) -> int:
        return 0

    # Writes ------------------------------------------------------------------------------------

    async def mev_next_key(self) -> bytes | None:
        return None

    async def sign_extrinsic(self, call: Any, keypair: Any, *, nonce: int, period: int) -> tuple[bytes, str]:
        raise NotImplementedError("FakeSubstrate.sign_extrinsic")

    async def find_extrinsic(self, extrinsic_hash: str, block_hash: str) -> bt.ExtrinsicResult | None:
        return None

    async def prepare(self, call: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("FakeSubstrate.prepare")

    async def submit_signature(self, unsigned: Any, signature: Any, **kwargs: Any) -> bt.ExtrinsicResult:
        raise NotImplementedError("FakeSubstrate.submit_signature")

    async def submit(
        self,
        call: Any,
        keypair: Any,
        *,
        nonce: int | None = None,
        period: int | None = None,
        wait_for_inclusion: bool = True,
        wait_for_finalization: bool = True,
    ) -> bt.ExtrinsicResult:
        await self._enter("submit", call, keypair)
        # The real transport signs the extrinsic payload with this keypair; sign something
        # call-specific so a test can check whose key it was.
        payload = repr(call).encode("utf-8")
        self.submissions.append(
            Submission(
                call=call,
                signer_address=keypair.ss58_address,
                signer_public_key=bytes(keypair.public_key),
                payload=payload,
                signature=bytes(keypair.sign(payload)),
                wait_for_inclusion=wait_for_inclusion,
                wait_for_finalization=wait_for_finalization,
                period=period,
            )
        )
        if self.after_submit:
            lands, error = self.after_submit.pop(0)
            if lands:
                self._take_effect(call, keypair.ss58_address)
            raise error
        if self.results:
            result = self.results.pop(0)
            if result.success:
                self._take_effect(call, keypair.ss58_address)
            return result
        self._take_effect(call, keypair.ss58_address)
        return bt.ExtrinsicResult(
            success=True,
            message="Success",
            block_hash=f"0x{self.block:064x}",
            extrinsic_id=f"{self.block}-0002",
        )

    def _take_effect(self, call: Any, signer: str) -> None:
        """What an included call changes in storage (the calls this subnet makes)."""
        if not isinstance(call, ComposedCall):
            return
        netuid = call.params.get("netuid")
        if (call.module, call.function) == ("Commitments", "set_commitment"):
            fields = [
                {name: "0x" + bytes(value).hex() for name, value in entry.items()}
                for entry in call.params["info"]["fields"]
            ]
            record = {"block": self.block, "deposit": 0, "info": {"fields": fields}}
            self.add_commitment(netuid, signer, record)
        elif call.module == "SubtensorModule" and "weights" in call.function:
            uid = self.storage.get(("SubtensorModule", "Uids"), {}).get((netuid, signer))
            if uid is None:
                return
            column = self.storage.setdefault(("SubtensorModule", "LastUpdate"), {})
            updates = list(column.get((netuid,), []))
            updates += [0] * (int(uid) + 1 - len(updates))
            updates[int(uid)] = self.block
            column[(netuid,)] = updates

    async def submit_signed(self, extrinsic: Any, keypair: Any, **kwargs: Any) -> bt.ExtrinsicResult:
        raise NotImplementedError("FakeSubstrate.submit_signed")

    def multisig_account(self, signatories: list[str], threshold: int) -> Any:
        raise NotImplementedError("FakeSubstrate.multisig_account")

    async def submit_multisig(self, call: Any, keypair: Any, multisig_account: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("FakeSubstrate.submit_multisig")


def subtensor_with(substrate: FakeSubstrate, network: str = "test") -> bt.Subtensor:
    """A real blocking ``bt.Subtensor`` whose chain access is ``substrate``."""
    return bt.Subtensor(network, substrate=substrate)


__all__ = [
    "ComposedCall",
    "FakeNeuron",
    "FakeSubstrate",
    "Submission",
    "commitment_record",
    "metagraph_response",
    "subtensor_with",
]
