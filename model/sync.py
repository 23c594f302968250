"""What the updater's steps share: the checker it is given, what one sync did, and how an error becomes a
tracker status (which failures are final, which are retried with backoff)."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from constants.competitions import Competition
from model.data import ModelId
from model.hashing import TensorVisitor
from model.storage.hub.protocol import RepoInfo
from model.tracker import Status
from utilities.errors import (
    HubError,
    ModelRejectedError,
    ModelStoreError,
    RepoNotFoundError,
    UnsafePathError,
)
from utilities.retry import CallTimeoutError

Outcome = Status | Literal["no_commitment", "unchanged", "backoff", "deferred"]


class Checker(Protocol):
    """Model safety checks (implemented by ``finetune.checks.ModelChecker``); both raise
    :class:`~utilities.errors.ModelRejectedError` with a reason code."""

    def check_repo(self, info: RepoInfo, competition: Competition) -> None:
        """Refuse a repository from its metadata alone (sizes, file names), before downloading."""
        ...

    def stream_scan(self) -> TensorVisitor | None:
        """A scan to show the tensors to while the folder is hashed (one read for both), or ``None``."""
        ...

    def check_folder(self, path: Path, competition: Competition, *, scan: object = None) -> int:
        """Refuse a downloaded model folder; returns the model's parameter count. ``scan`` is what
        :meth:`stream_scan` returned, after it saw this folder's tensors."""
        ...


@dataclass(frozen=True)
class SyncResult:
    """What one :meth:`ModelUpdater.sync` did for one hotkey."""

    hotkey: str
    outcome: Outcome
    reason: str = ""
    message: str = ""
    model_id: ModelId | None = None
    fetched: bool = False
    """Whether the hub was contacted (counts against the download budget of ``sync_all``)."""


class Verdict(Exception):
    """Ends a sync with a tracker status (internal control flow)."""

    def __init__(self, status: Status, reason: str, message: str) -> None:
        super().__init__(message)
        self.status: Status = status
        self.reason = reason
        self.message = message


def as_verdict(exc: BaseException) -> Verdict:
    """The tracker status and reason for an error raised while fetching or checking a model."""
    if isinstance(exc, Verdict):
        return exc
    status: Status = "failed"
    reason = "error"
    if disk_full(exc):
        reason = "disk"  # this host's disk, whatever layer reported it: retried with backoff
    elif isinstance(exc, RepoNotFoundError):
        reason = "not_found"  # private and missing look alike: retried with backoff, never final
    elif isinstance(exc, ModelRejectedError):
        status, reason = "rejected", exc.reason
    elif isinstance(exc, UnsafePathError):
        status, reason = "rejected", "unsafe_path"
    elif isinstance(exc, HubError | CallTimeoutError):
        reason = "hub"
    elif isinstance(exc, ModelStoreError):
        status, reason = "rejected", "store"  # no folder can be made for this hotkey and model
    elif isinstance(exc, OSError):
        reason = "disk"
    return Verdict(status, reason, str(exc))


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an error it was raised from is this host's disk being full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        current = current.__cause__ or current.__context__
    return False
