"""Writes of unknown fate: find out what the chain did before reporting failure or sending again.

After a timeout or a dropped connection a transaction "may already be in the pool or on chain"
(the SDK's words). Sending it again blindly can double-submit; giving up blindly can report a
failure for a write that landed. :class:`WriteVerifier` does neither:

1. it reads the state the write changes (``state()``: the hotkey's commitment block, or its uid's
   weights ``LastUpdate``) before sending; a failure there means nothing was sent, and is retried
   like any read;
2. it sends once; success, or a refusal with the chain's reason, is final;
3. on an unknown outcome it polls ``landed(before)`` once a block. The write is signed with a short
   era (:data:`~model.storage.chain.bittensor_chain.WRITE_ERA_BLOCKS`), so once the chain is that
   many blocks past the failure the transaction can never be included: only then, with the state
   still unchanged, is it sent again (at most ``attempts`` sends in all).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import bittensor as bt

from utilities.errors import ChainError
from utilities.retry import CallTimeoutError

if TYPE_CHECKING:
    from model.storage.chain.bittensor_chain import BittensorChain

S = TypeVar("S")

logger = logging.getLogger("model.storage.chain.bittensor_chain")

UNREACHABLE: tuple[type[BaseException], ...] = (
    CallTimeoutError,
    ConnectionError,
    OSError,
    bt.RpcConnectionError,
)
"""Errors that mean the chain did not answer: transient for reads, unknown fate for writes."""

_UNKNOWN_FATE = re.compile(
    r"may already be|in flight|usurped|retracted|finality ?timeout|dropped", re.IGNORECASE
)
STALL_POLLS = 5
"""Polls in a row without a new block after which the chain counts as stalled (fate unresolvable)."""
_UNKNOWN_FATE_NAMES = frozenset({"Usurped", "Retracted", "FinalityTimeout", "Dropped"})


class WriteVerifier:
    """Send a write, and resolve an unknown outcome from chain state (see the module doc)."""

    def __init__(
        self,
        chain: BittensorChain,
        *,
        era_blocks: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._chain = chain
        self._era = era_blocks
        self._sleep = sleep

    def write(
        self,
        what: str,
        send: Callable[[bt.Client], Awaitable[bt.ExtrinsicResult]],
        *,
        state: Callable[[], S | None],
        landed: Callable[[S | None], bool],
        error: type[ChainError],
        attempts: int = 2,
    ) -> None:
        """Send ``send`` until the chain shows ``landed`` or refuses it; ``error`` on failure."""
        for sent in range(1, attempts + 1):
            before = _as(error, state)  # nothing sent yet: a failure here is a plain read failure
            try:
                result = self._chain.send(what, send)
            except UNREACHABLE as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except ChainError as exc:
                raise error(str(exc)) from exc
            except Exception as exc:  # the SDK refused before sending (preflight, policy, encoding)
                logger.warning("%s was refused before sending: %s: %s", what, type(exc).__name__, exc)
                raise error(f"{what} was refused: {type(exc).__name__}: {exc}") from exc
            else:
                if result.success:
                    return
                message = result.message or "no message from the chain"
                name = getattr(result.error, "name", None)
                if not (_UNKNOWN_FATE.search(message) or name in _UNKNOWN_FATE_NAMES):
                    logger.warning("%s was refused by the chain: %s", what, message)
                    raise error(f"{what} was refused by the chain: {message}")
                reason = message
            logger.warning("%s: outcome unknown (%s); watching the chain for it", what, reason)
            if self._watch(what, before, landed, error, reason):
                logger.info("%s landed despite the error (%s)", what, reason)
                return
            if sent < attempts:
                logger.warning("%s did not land and its era is over; sending it again", what)
        raise error(f"{what} was sent {attempts} times and never landed (last error: {reason})")

    def _watch(
        self,
        what: str,
        before: S | None,
        landed: Callable[[S | None], bool],
        error: type[ChainError],
        reason: str,
    ) -> bool:
        """``True`` once the write shows on chain; ``False`` once it can no longer land."""
        try:
            poll_s = self._chain.poll_interval_s()
            failed_at = last_seen = self._chain.current_block()
            still = 0
            while True:
                if landed(before):
                    return True
                block = self._chain.current_block()
                if block > failed_at + self._era:
                    return landed(before)  # one last look: it may have landed in the last block
                still = still + 1 if block == last_seen else 0
                last_seen = block
                if still > STALL_POLLS:
                    break
                self._sleep(poll_s)
        except ChainError as exc:
            raise error(
                f"{what}: outcome unknown ({reason}) and the chain cannot be read to find out "
                f"({exc}); not sent again"
            ) from exc
        raise error(f"{what}: outcome unknown ({reason}) and the chain stopped making blocks; not sent again")


def _as(error: type[ChainError], read: Callable[[], S | None]) -> S | None:
    try:
        return read()
    except ChainError as exc:
        raise error(str(exc)) from exc
