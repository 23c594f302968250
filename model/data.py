"""Model identity: what a miner commits on chain, and what a validator tracks.

``ModelId.to_compressed_str`` / ``ModelId.from_compressed_str`` are a wire format shared with the live
network (design.md §4): ``namespace:name:commit:hash:competition_id``, a missing field written as the
text ``None``, at most 128 bytes. A legacy 4-field string has no competition id and belongs to the
original competition ``m1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MAX_COMMITMENT_BYTES = 128
"""The chain stores at most this many bytes of commitment data."""

LEGACY_COMPETITION_ID = "m1"
"""The competition of a legacy 4-field commitment (written before competitions existed)."""

_NONE = "None"
# Hugging Face repository naming rules, which also keep every field safe to use in a path.
_REPO_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?")
_COMMIT = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HASH = re.compile(r"[A-Za-z0-9+/=_-]{1,88}")
_COMPETITION = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _check(
    field: str, value: str | None, pattern: re.Pattern[str], *, optional: bool, path_part: bool
) -> None:
    if value is None:
        if not optional:
            raise ValueError(f"ModelId.{field} is required")
        return
    if not isinstance(value, str) or not pattern.fullmatch(value) or value == _NONE:
        raise ValueError(f"ModelId.{field} is not valid: {value!r}")
    if path_part and (".." in value or "--" in value or value == "."):
        raise ValueError(f"ModelId.{field} may not be '.' or contain '..' or '--': {value!r}")


@dataclass(frozen=True)
class ModelId:
    """A model on a hub, pinned to a commit, with its content hash and competition."""

    namespace: str
    name: str
    commit: str | None = None
    hash: str | None = None
    competition_id: str | None = None

    def __post_init__(self) -> None:
        # namespace, name and commit become folder names on the validator's disk: keep them plain.
        _check("namespace", self.namespace, _REPO_PART, optional=False, path_part=True)
        _check("name", self.name, _REPO_PART, optional=False, path_part=True)
        _check("commit", self.commit, _COMMIT, optional=True, path_part=True)
        _check("hash", self.hash, _HASH, optional=True, path_part=False)
        _check("competition_id", self.competition_id, _COMPETITION, optional=True, path_part=True)

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_compressed_str(self) -> str:
        """The commitment string; raises ``ValueError`` if it would not fit on chain. A model of the
        legacy competition is written in the legacy 4-field form it was parsed from, so every parsed
        commitment can be written back within the chain's limit."""
        fields: tuple[str | None, ...] = (self.namespace, self.name, self.commit, self.hash)
        if self.competition_id != LEGACY_COMPETITION_ID:
            fields = (*fields, self.competition_id)
        text = ":".join(_NONE if f is None else f for f in fields)
        size = len(text.encode("utf-8"))
        if size > MAX_COMMITMENT_BYTES:
            raise ValueError(
                f"commitment for {self.repo_id} is {size} bytes, over the chain's limit of "
                f"{MAX_COMMITMENT_BYTES}: use a shorter namespace or repository name "
                f"(at most {max_repo_chars(self)} characters for namespace + name)"
            )
        return text

    @classmethod
    def from_compressed_str(cls, text: str) -> ModelId:
        """Parse a commitment string; anything malformed raises ``ValueError`` and nothing else."""
        if not isinstance(text, str):
            raise ValueError(f"a commitment must be text, not {type(text).__name__}")
        if len(text.encode("utf-8", errors="replace")) > MAX_COMMITMENT_BYTES:
            raise ValueError(f"commitment is longer than {MAX_COMMITMENT_BYTES} bytes")
        parts = text.split(":")
        if len(parts) == 4:
            parts.append(LEGACY_COMPETITION_ID)
        if len(parts) != 5:
            raise ValueError(f"commitment has {len(parts)} fields, expected 4 or 5: {text!r}")
        namespace, name, commit, hash_, competition = (None if p == _NONE else p for p in parts)
        if namespace is None or name is None:
            raise ValueError(f"commitment names no repository: {text!r}")
        return cls(
            namespace=namespace,
            name=name,
            commit=commit,
            hash=hash_,
            competition_id=competition,
        )


def max_repo_chars(model_id: ModelId) -> int:
    """How many characters namespace + name may have together, given the other fields' lengths."""
    others = [model_id.commit, model_id.hash]
    if model_id.competition_id != LEGACY_COMPETITION_ID:
        others.append(model_id.competition_id)
    used = sum(len(_NONE if f is None else f) for f in others) + len(others) + 1  # the ':' separators
    return MAX_COMMITMENT_BYTES - used


@dataclass(frozen=True)
class ModelMetadata:
    """A model id together with the block of the commitment that named it."""

    id: ModelId
    block: int


@dataclass(frozen=True)
class Model:
    """A model downloaded to the validator's disk: its id and the folder holding its files."""

    id: ModelId
    path: Path
