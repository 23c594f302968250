"""Decoding the ``Commitments.CommitmentOf`` records the SDK returns into :class:`Commitment`.

A record is the pallet's ``Registration`` (``{"block", "deposit", "info": {"fields": [...]}}``); the
text of a commitment is the concatenation of its ``Raw<n>`` fields, UTF-8.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from model.storage.chain.protocol import Commitment

logger = logging.getLogger("model.storage.chain.bittensor_chain")


def commitment_from_record(hotkey: str, record: Any) -> Commitment | None:
    """The commitment in a decoded ``CommitmentOf`` value, or ``None`` (logged when undecodable)."""
    if not isinstance(record, dict):
        return None
    info = record.get("info") or {}
    fields = info.get("fields") if isinstance(info, dict) else None
    return _to_commitment(hotkey, list(fields or []), int(record.get("block") or 0))


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
