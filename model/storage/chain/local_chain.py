"""The embedded local network's chain: one SQLite file shared by every neuron process.

Tables: ``neurons`` (uid, hotkey, stake, validator permit), ``commitments`` (hotkey, data, block),
``weights`` (validator hotkey -> uid -> weight) and ``meta`` (the block clock). The block is derived
from the wall clock (``seconds_per_block``, 12 s by default) plus an offset that tests advance. A
block's time is approximate: genesis plus ``block * seconds_per_block``, whatever the offset.

Incentive follows a simplified Yuma consensus: for each uid, the consensus weight is the largest
weight that validators holding at least half the stake give it (or exceed); each validator's weight is
clipped to that consensus, and incentive is the stake-weighted sum of clipped weights, normalized.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from model.data import MAX_COMMITMENT_BYTES
from model.storage.chain.protocol import Commitment, Metagraph
from utilities.errors import ChainError, CommitmentError, ConfigError

MAX_UIDS = 256
KAPPA = 0.5
"""Share of validator stake that must support a weight for it to count in consensus."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS neurons (
    uid INTEGER PRIMARY KEY, hotkey TEXT UNIQUE NOT NULL, coldkey TEXT NOT NULL,
    stake REAL NOT NULL, validator_permit INTEGER NOT NULL, registered_block INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS commitments (
    hotkey TEXT PRIMARY KEY, data TEXT NOT NULL, block INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS weights (
    validator TEXT NOT NULL, uid INTEGER NOT NULL, weight REAL NOT NULL, block INTEGER NOT NULL,
    version_key INTEGER NOT NULL, PRIMARY KEY (validator, uid));
"""


class LocalChain:
    """A :class:`~model.storage.chain.protocol.Chain` on a SQLite file (WAL, busy timeout).

    Several processes may open the same file at once; every write is one short transaction.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        netuid: int = 1,
        hotkey: str | None = None,
        seconds_per_block: float = 12.0,
        commit_interval_blocks: int = 0,
        finality_lag_blocks: int = 2,
        min_allowed_weights: int = 1,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.netuid = netuid
        self.hotkey = hotkey
        if finality_lag_blocks < 0 or min_allowed_weights < 0:
            raise ValueError("finality_lag_blocks and min_allowed_weights must be >= 0")
        self.commit_interval_blocks = commit_interval_blocks
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('genesis', ?), ('offset', 0), ('seconds_per_block', ?),"
                " ('finality_lag_blocks', ?), ('min_allowed_weights', ?)",
                (self._clock(), seconds_per_block, finality_lag_blocks, min_allowed_weights),
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise ChainError(f"cannot open local chain {self.path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ChainError(f"local chain {self.path} failed: {exc}") from exc
        finally:
            db.close()

    # ---- the block clock -------------------------------------------------------------------------
    def _block(self, db: sqlite3.Connection) -> int:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        elapsed = max(0.0, self._clock() - meta["genesis"])
        return int(meta["offset"]) + int(elapsed // meta["seconds_per_block"])

    def current_block(self) -> int:
        with self._transaction() as db:
            return self._block(db)

    def finalized_block(self) -> int:
        """The current block less the chain's finality lag (fixed when the chain file was created, so
        every process agrees), never below 0."""
        with self._transaction() as db:
            lag = self._meta(db, "finality_lag_blocks", 0)
            return max(0, self._block(db) - int(lag))

    def min_allowed_weights(self) -> int:
        """``MinAllowedWeights`` of this local subnet (fixed when the chain file was created)."""
        with self._transaction() as db:
            return int(self._meta(db, "min_allowed_weights", 1))

    @staticmethod
    def _meta(db: sqlite3.Connection, key: str, default: float) -> float:
        """A value of the meta table; ``default`` for chain files made before the key existed."""
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else float(row[0])

    def block_hash(self, block: int) -> str:
        """A stand-in block hash: SHA-256 of the chain's genesis time and the block number, so every
        process reading this chain file gets the same hash for the same block."""
        with self._transaction() as db:
            current = self._block(db)
            (genesis,) = db.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
        if not 0 <= block <= current:
            raise ChainError(f"block {block} does not exist yet on {self.path} (now {current})")
        return "0x" + hashlib.sha256(f"{genesis!r}:{block}".encode()).hexdigest()

    def block_timestamp(self, block: int) -> float:
        """An approximate time of ``block`` (Unix seconds): the chain's genesis time plus ``block``
        blocks of ``seconds_per_block``. The same in every process and for every call, it runs ahead
        of the wall clock by the blocks :meth:`advance` added; only the Cortex source's cut-off uses
        it."""
        with self._transaction() as db:
            current = self._block(db)
            genesis, seconds = self._meta(db, "genesis", 0.0), self._meta(db, "seconds_per_block", 12.0)
        if not 0 <= block <= current:
            raise ChainError(f"block {block} does not exist yet on {self.path} (now {current})")
        return genesis + block * seconds

    def advance(self, blocks: int = 1) -> int:
        """Move the clock ``blocks`` forward (tests and the demo); returns the new block."""
        if blocks < 0:
            raise ValueError("the chain cannot go back in time")
        with self._transaction() as db:
            db.execute("UPDATE meta SET value = value + ? WHERE key = 'offset'", (blocks,))
            return self._block(db)

    # ---- registration ----------------------------------------------------------------------------
    def register(
        self, hotkey: str, *, coldkey: str = "", stake: float = 0.0, validator_permit: bool = False
    ) -> int:
        """Register ``hotkey`` (idempotent: updates stake and permit) and return its uid."""
        if not hotkey:
            raise ConfigError("cannot register an empty hotkey")
        with self._transaction() as db:
            row = db.execute("SELECT uid FROM neurons WHERE hotkey = ?", (hotkey,)).fetchone()
            if row is not None:
                db.execute(
                    "UPDATE neurons SET stake = ?, validator_permit = ? WHERE uid = ?",
                    (stake, int(validator_permit), row[0]),
                )
                return int(row[0])
            (count,) = db.execute("SELECT COUNT(*) FROM neurons").fetchone()
            if count >= MAX_UIDS:
                raise ChainError(f"subnet {self.netuid} on {self.path} is full ({MAX_UIDS} uids)")
            db.execute(
                "INSERT INTO neurons VALUES (?, ?, ?, ?, ?, ?)",
                (count, hotkey, coldkey, stake, int(validator_permit), self._block(db)),
            )
            return int(count)

    # ---- the Chain protocol ----------------------------------------------------------------------
    def metagraph(self) -> Metagraph:
        with self._transaction() as db:
            block = self._block(db)
            rows = db.execute(
                "SELECT uid, hotkey, stake, validator_permit FROM neurons ORDER BY uid"
            ).fetchall()
            weight_rows = db.execute(
                "SELECT w.validator, w.uid, w.weight FROM weights w JOIN neurons n ON n.hotkey = w.validator"
                " WHERE n.validator_permit = 1"
            ).fetchall()
        uids = np.array([r[0] for r in rows], dtype=np.int64)
        hotkeys = tuple(r[1] for r in rows)
        stake = np.array([r[2] for r in rows], dtype=np.float64)
        permit = np.array([bool(r[3]) for r in rows], dtype=np.bool_)
        consensus, incentive = _yuma(uids, hotkeys, stake, weight_rows)
        return Metagraph(
            block=block,
            uids=uids,
            hotkeys=hotkeys,
            stake=stake,
            validator_permit=permit,
            incentive=incentive,
            consensus=consensus,
        )

    def _require_hotkey(self, action: str) -> str:
        if self.hotkey is None:
            raise ConfigError(f"cannot {action} on {self.path}: this chain was opened without a hotkey")
        return self.hotkey

    def commit(self, data: str) -> None:
        hotkey = self._require_hotkey("commit")
        size = len(data.encode("utf-8"))
        if size > MAX_COMMITMENT_BYTES:
            raise CommitmentError(
                f"commitment of {hotkey} is {size} bytes, over the limit of {MAX_COMMITMENT_BYTES}"
            )
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM neurons WHERE hotkey = ?", (hotkey,)).fetchone() is None:
                raise CommitmentError(f"hotkey {hotkey} is not registered on subnet {self.netuid}")
            block = self._block(db)
            last = db.execute("SELECT block FROM commitments WHERE hotkey = ?", (hotkey,)).fetchone()
            if last is not None and block - last[0] < self.commit_interval_blocks:
                raise CommitmentError(
                    f"hotkey {hotkey} committed at block {last[0]}; the next commitment is allowed at "
                    f"block {last[0] + self.commit_interval_blocks} (now {block})"
                )
            db.execute("INSERT OR REPLACE INTO commitments VALUES (?, ?, ?)", (hotkey, data, block))

    def commitment(self, hotkey: str) -> Commitment | None:
        with self._transaction() as db:
            row = db.execute("SELECT data, block FROM commitments WHERE hotkey = ?", (hotkey,)).fetchone()
        return None if row is None else Commitment(hotkey=hotkey, data=row[0], block=int(row[1]))

    def commitments(self) -> dict[str, Commitment]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT c.hotkey, c.data, c.block FROM commitments c JOIN neurons n ON n.hotkey = c.hotkey"
            ).fetchall()
        return {r[0]: Commitment(hotkey=r[0], data=r[1], block=int(r[2])) for r in rows}

    def set_weights(self, uids: Sequence[int], weights: Sequence[float], *, version_key: int) -> None:
        hotkey = self._require_hotkey("set weights")
        if len(uids) != len(weights):
            raise ChainError(f"{len(uids)} uids but {len(weights)} weights from {hotkey}")
        values = [float(w) for w in weights]
        if any(not math.isfinite(w) or w < 0 for w in values):
            raise ChainError(f"weights from {hotkey} must be finite and non-negative")
        if len(set(uids)) != len(uids):
            raise ChainError(f"weights from {hotkey} name a uid twice")
        total = sum(values)
        with self._transaction() as db:
            row = db.execute("SELECT validator_permit FROM neurons WHERE hotkey = ?", (hotkey,)).fetchone()
            if row is None or not row[0]:
                raise ChainError(f"{hotkey} has no validator permit on subnet {self.netuid}")
            known = {r[0] for r in db.execute("SELECT uid FROM neurons").fetchall()}
            unknown = sorted(set(uids) - known)
            if unknown:
                raise ChainError(f"weights from {hotkey} name unknown uids {unknown}")
            block = self._block(db)
            db.execute("DELETE FROM weights WHERE validator = ?", (hotkey,))
            db.executemany(
                "INSERT INTO weights VALUES (?, ?, ?, ?, ?)",
                [
                    (hotkey, int(uid), w / total if total > 0 else 0.0, block, version_key)
                    for uid, w in zip(uids, values, strict=True)
                ],
            )

    def weights(self, validator_hotkey: str) -> dict[int, float]:
        """The normalized weights ``validator_hotkey`` last set, by uid (for tests and the demo)."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT uid, weight FROM weights WHERE validator = ?", (validator_hotkey,)
            ).fetchall()
        return {int(uid): float(w) for uid, w in rows}


def _yuma(
    uids: np.ndarray,
    hotkeys: tuple[str, ...],
    stake: np.ndarray,
    weight_rows: list[tuple[str, int, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """Consensus (stake-weighted median weight per uid) and incentive (clipped, normalized)."""
    n = len(uids)
    consensus = np.zeros(n, dtype=np.float64)
    incentive = np.zeros(n, dtype=np.float64)
    validators = sorted({r[0] for r in weight_rows})
    if n == 0 or not validators:
        return consensus, incentive
    position = {int(uid): i for i, uid in enumerate(uids)}
    row_of = {v: i for i, v in enumerate(validators)}
    w = np.zeros((len(validators), n), dtype=np.float64)
    for validator, uid, weight in weight_rows:
        if int(uid) in position:
            w[row_of[validator], position[int(uid)]] = weight
    s = np.array([stake[hotkeys.index(v)] for v in validators], dtype=np.float64)
    s = s / s.sum() if s.sum() > 0 else np.full(len(validators), 1.0 / len(validators))
    for j in range(n):
        # the largest weight that validators holding at least half the stake give (or exceed)
        order = np.argsort(-w[:, j], kind="stable")
        cumulative = np.cumsum(s[order])
        consensus[j] = w[order, j][int(np.searchsorted(cumulative, KAPPA - 1e-12))]
    clipped = np.minimum(w, consensus[None, :])
    ranks = s @ clipped
    if ranks.sum() > 0:
        incentive = ranks / ranks.sum()
    return consensus, incentive
