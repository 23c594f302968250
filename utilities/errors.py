"""The project's error hierarchy.

Every error a neuron is expected to survive derives from :class:`FinetuneError`, so a loop can catch
exactly these (never a bare ``except``) and log the message, which names what it concerns: the hotkey,
the repository, the block.
"""

from __future__ import annotations


class FinetuneError(Exception):
    """Base class of every expected failure in this project."""


class ConfigError(FinetuneError):
    """A setting or argument is invalid (caught at start-up, before any network call)."""


class ChainError(FinetuneError):
    """The chain could not be read or written (timeout, rejected extrinsic, missing neuron)."""


class CommitmentError(ChainError):
    """A commitment could not be written or is not acceptable (too long, rate limited)."""


class HubError(FinetuneError):
    """The model hub failed: unreachable, unknown repository or commit, refused upload."""


class RepoNotFoundError(HubError):
    """The repository or the commit does not exist (or is private to someone else)."""


class UnsafePathError(FinetuneError):
    """A file of a miner would land outside its own folder (path traversal, escaping symlink)."""


class ModelStoreError(FinetuneError):
    """The validator's on-disk model store cannot hold or find a model."""


class DataSourceError(FinetuneError):
    """A source of evaluation or training samples failed (unreachable, timed out, empty, malformed), so
    the step that needed it is skipped rather than hung or run on a silently different mix."""


class ModelRejectedError(FinetuneError):
    """A miner's model fails a check (size, files, architecture, parameters, weights); ``reason`` is a
    short machine-friendly code (e.g. ``"too_large"``) and the message says why, for logs and the
    tracker."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
