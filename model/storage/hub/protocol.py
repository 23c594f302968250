"""The hub port (design.md §3): repositories of files, each commit immutable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from model.data import ModelId
from utilities.errors import HubError


def split_repo_id(repo_id: str) -> tuple[str, str]:
    """``namespace/name`` -> (namespace, name), each a plain Hugging Face name (the rules of
    :class:`~model.data.ModelId`: no path tricks); raises :class:`HubError` otherwise."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2:
        raise HubError(f"invalid repository id {repo_id!r}: expected 'namespace/name'")
    try:
        ModelId(namespace=parts[0], name=parts[1])
    except ValueError as exc:
        raise HubError(f"invalid repository id {repo_id!r}: {exc}") from exc
    return parts[0], parts[1]


class TransferTimeoutError(HubError):
    """A transfer ran past its size-scaled backstop. Never retried: the abandoned attempt may still be
    writing in the background and holding the hub library's file locks."""


@dataclass(frozen=True)
class RepoFile:
    """One file of a commit: its path inside the repository (``/``-separated) and size in bytes."""

    path: str
    size: int


@dataclass(frozen=True)
class RepoInfo:
    """What the hub says about one commit of a repository, read without downloading it."""

    repo_id: str
    commit: str
    files: tuple[RepoFile, ...]
    private: bool

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


class Hub(Protocol):
    """A model hub. Every method raises :class:`utilities.errors.HubError` (or a subclass) on failure;
    an unknown repository or commit raises :class:`utilities.errors.RepoNotFoundError`."""

    def create_repo(self, repo_id: str, *, private: bool = True) -> None:
        """Create ``namespace/name`` if it does not exist (private unless told otherwise)."""
        ...

    def upload_folder(self, repo_id: str, folder: Path, *, message: str = "Upload model") -> str:
        """Upload every file under ``folder`` as one new commit; returns the commit id."""
        ...

    def repo_info(self, repo_id: str, *, commit: str) -> RepoInfo:
        """The file list (with sizes) and visibility of ``commit``, without downloading it."""
        ...

    def download(
        self, repo_id: str, *, commit: str, dest: Path, allow_patterns: Sequence[str] | None = None
    ) -> Path:
        """Download ``commit`` into the plain folder ``dest`` (real files, no links); returns it.

        ``dest`` must be absent or empty, so a stale folder never passes for this commit. With
        ``allow_patterns`` (``fnmatch`` patterns, e.g. :data:`model.model_files.MODEL_FILE_PATTERNS`)
        only the top-level files matching one of them are fetched."""
        ...

    def make_private(self, repo_id: str) -> None:
        """Hide the repository from everyone but its owner."""
        ...

    def make_public(self, repo_id: str) -> None:
        """Make the repository visible to everyone."""
        ...


class PublishingHub(Hub, Protocol):
    """The side of the hub port that publishing needs besides :class:`Hub` (a miner's view)."""

    def is_private(self, repo_id: str) -> bool | None:
        """Whether ``repo_id`` is private now; ``None`` when it does not exist (or this user cannot see
        it)."""
        ...

    def check_write_access(self, repo_id: str) -> str:
        """Raise :class:`~utilities.errors.HubError` unless this hub's credentials may create and write
        ``repo_id`` (a missing or read-only token, another user's namespace); returns the user name."""
        ...
