"""The Hugging Face implementation of the hub port (``huggingface_hub`` 2.x, whose HTTP layer is ``httpx2``).

Every call runs under :func:`utilities.retry.retry_call`: a timeout per attempt, a bounded number of
attempts, and retries only for transient failures (network, timeouts, 408/429/5xx). Everything the hub
library raises is converted to :class:`~utilities.errors.HubError` or
:class:`~utilities.errors.RepoNotFoundError`; programming errors (``TypeError`` ...) are left alone.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import TypeVar

import httpx2
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (
    DisabledRepoError,
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from model.storage.hub.protocol import RepoFile, RepoInfo, split_repo_id
from utilities.errors import HubError, RepoNotFoundError, UnsafePathError
from utilities.files import check_contained
from utilities.retry import CallTimeoutError, retry_call

T = TypeVar("T")

_COMMIT = re.compile(r"[0-9a-f]{40}")
# What the hub library raises; anything else is a bug and propagates unchanged.
_LIBRARY_ERRORS = (httpx2.HTTPError, OSError, ValueError, RuntimeError, EntryNotFoundError)
_TRANSIENT_STATUS = frozenset({408, 429})


class _TransientError(Exception):
    """Marks a failure worth another attempt; its ``__cause__`` is the library's error."""


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _wrapped(exc: BaseException) -> BaseException | None:
    """The hub error that ``snapshot_download`` hid behind "not in the local cache", if any."""
    return exc.__cause__ if isinstance(exc, LocalEntryNotFoundError) else None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OfflineModeIsEnabled):  # a ConnectionError, but retrying cannot help
        return False
    if isinstance(exc, HfHubHTTPError):
        status = _status(exc)
        return status is not None and (status in _TRANSIENT_STATUS or status >= 500)
    if isinstance(exc, httpx2.TransportError | ConnectionError | TimeoutError):
        return True
    cause = _wrapped(exc)
    return cause is not None and _is_transient(cause)


def _is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, RepositoryNotFoundError | RevisionNotFoundError | DisabledRepoError):
        return True  # GatedRepoError is a RepositoryNotFoundError
    if isinstance(exc, HfHubHTTPError) and _status(exc) == 404:
        return True
    cause = _wrapped(exc)
    return cause is not None and _is_not_found(cause)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _check_repo_id(repo_id: str) -> None:
    split_repo_id(repo_id)


def _check_commit(repo_id: str, commit: str) -> None:
    if not _COMMIT.fullmatch(commit):
        raise HubError(f"{repo_id}: {commit!r} is not a commit id (40 lowercase hex digits)")


def _check_repo_path(repo_id: str, path: str) -> None:
    """Refuse a file name that could land outside the download folder."""
    parts = PurePosixPath(path).parts
    if not path or "\\" in path or path.startswith("/") or ".." in parts or ":" in path:
        raise UnsafePathError(f"{repo_id}: file {path!r} would escape the model folder")


class HuggingFaceHub:
    """:class:`~model.storage.hub.protocol.Hub` on huggingface.co (model repositories only).

    ``token=None`` lets ``huggingface_hub`` find one itself (``HF_TOKEN``, then the cached login).
    ``timeout_s`` bounds each attempt of a metadata call, ``transfer_timeout_s`` each attempt of an
    upload or download; a timed-out attempt leaves its worker thread running in the background.
    """

    def __init__(
        self,
        *,
        api: HfApi | None = None,
        token: str | None = None,
        timeout_s: float = 60.0,
        transfer_timeout_s: float = 3600.0,
        attempts: int = 3,
        retry_wait_s: float = 1.0,
    ) -> None:
        if attempts < 1 or timeout_s <= 0 or transfer_timeout_s <= 0:
            raise ValueError("attempts must be >= 1 and timeouts > 0")
        self._api = api if api is not None else HfApi(token=token)
        self._token = token if token is not None else self._api.token
        self._timeout_s = timeout_s
        self._transfer_timeout_s = transfer_timeout_s
        self._attempts = attempts
        self._retry_wait_s = retry_wait_s

    def _call(
        self, what: str, repo_id: str, commit: str | None, fn: Callable[[], T], *, transfer: bool = False
    ) -> T:
        """Run ``fn`` with timeout and retries, converting the library's errors to ours."""
        where = repo_id if commit is None else f"{repo_id}@{commit}"

        def attempt() -> T:
            try:
                return fn()
            except _LIBRARY_ERRORS as exc:
                if _is_transient(exc):
                    raise _TransientError(_first_line(exc)) from exc
                if _is_not_found(exc):
                    raise RepoNotFoundError(f"{where}: not found on the hub ({_first_line(exc)})") from exc
                if isinstance(exc, ValueError) and "Invalid filename" in str(exc):
                    raise UnsafePathError(f"{where}: {_first_line(exc)}") from exc  # hub's own path check
                raise HubError(f"{what} {where} failed: {_first_line(exc)}") from exc

        try:
            return retry_call(
                attempt,
                what=f"{what} {where}",
                timeout_s=self._transfer_timeout_s if transfer else self._timeout_s,
                attempts=self._attempts,
                retry_on=(_TransientError, CallTimeoutError),
                wait_s=self._retry_wait_s,
            )
        except (_TransientError, CallTimeoutError) as exc:
            cause = exc.__cause__ if isinstance(exc, _TransientError) else exc  # the library's own error
            raise HubError(f"{what} {where} failed after {self._attempts} attempt(s): {exc}") from cause

    def create_repo(self, repo_id: str, *, private: bool = True) -> None:
        """Create the model repository ``repo_id`` unless it exists (an existing one keeps its visibility)."""
        _check_repo_id(repo_id)
        self._call(
            "create_repo",
            repo_id,
            None,
            lambda: self._api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"),
        )

    def upload_folder(self, repo_id: str, folder: Path, *, message: str = "Upload model") -> str:
        """Upload every file under ``folder`` as one commit; returns its 40-hex commit id."""
        _check_repo_id(repo_id)
        if not Path(folder).is_dir():
            raise HubError(f"{repo_id}: cannot upload {folder}: not a folder")
        info = self._call(
            "upload_folder",
            repo_id,
            None,
            # delete_patterns="*": the new commit holds exactly this folder (stale shards of an earlier
            # upload would otherwise stay and get the model rejected); the hub keeps .gitattributes
            lambda: self._api.upload_folder(
                repo_id=repo_id, folder_path=folder, commit_message=message, delete_patterns="*"
            ),
            transfer=True,
        )
        oid = getattr(info, "oid", None)
        if not isinstance(oid, str) or not _COMMIT.fullmatch(oid):
            raise HubError(f"upload_folder {repo_id}: the hub returned no commit id ({oid!r})")
        return oid

    def repo_info(self, repo_id: str, *, commit: str) -> RepoInfo:
        """Files (path and size, LFS files at their real size) and visibility of ``commit``; no download."""
        _check_repo_id(repo_id)
        _check_commit(repo_id, commit)
        info = self._call(
            "repo_info",
            repo_id,
            commit,
            lambda: self._api.model_info(
                repo_id, revision=commit, files_metadata=True, timeout=self._timeout_s
            ),
        )
        if info.sha is not None and info.sha != commit:
            raise HubError(f"{repo_id}@{commit}: the hub answered for commit {info.sha}")
        files = []
        for sibling in info.siblings or ():
            _check_repo_path(repo_id, sibling.rfilename)
            size = sibling.lfs.size if sibling.lfs is not None else sibling.size
            if size is None:
                raise HubError(f"{repo_id}@{commit}: the hub gave no size for {sibling.rfilename!r}")
            files.append(RepoFile(path=sibling.rfilename, size=int(size)))
        return RepoInfo(repo_id=repo_id, commit=commit, files=tuple(files), private=bool(info.private))

    def download(
        self, repo_id: str, *, commit: str, dest: Path, allow_patterns: Sequence[str] | None = None
    ) -> Path:
        """Download ``commit`` into ``dest`` (absent or empty) as plain files; returns ``dest``.

        Raises :class:`UnsafePathError` if anything would land outside ``dest`` or is a link; ``dest``
        is then left for the caller to delete. The library's ``.cache/huggingface`` metadata is removed.
        """
        _check_repo_id(repo_id)
        _check_commit(repo_id, commit)
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            # snapshot_download would hand back stale contents of dest when the hub is unreachable
            raise HubError(f"{repo_id}@{commit}: download folder {dest} is not empty")
        dest.mkdir(parents=True, exist_ok=True)
        returned = self._call(
            "download",
            repo_id,
            commit,
            lambda: snapshot_download(
                repo_id,
                revision=commit,
                local_dir=dest,
                token=self._token,
                endpoint=self._api.endpoint,
                allow_patterns=None if allow_patterns is None else list(allow_patterns),
            ),
            transfer=True,
        )
        root = dest.resolve()
        if Path(returned).resolve() != root:
            raise UnsafePathError(f"{repo_id}@{commit}: download landed in {returned}, not {root}")
        check_contained(root)  # links leading outside dest
        for entry in root.rglob("*"):
            if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
                raise UnsafePathError(f"{repo_id}@{commit}: {entry} is not a plain file or folder")
        shutil.rmtree(root / ".cache" / "huggingface", ignore_errors=True)
        if (root / ".cache").is_dir() and not any((root / ".cache").iterdir()):
            (root / ".cache").rmdir()
        return dest

    def make_private(self, repo_id: str) -> None:
        """Hide ``repo_id`` from everyone but its owner."""
        _check_repo_id(repo_id)
        self._call(
            "make_private", repo_id, None, lambda: self._api.update_repo_settings(repo_id, private=True)
        )

    def make_public(self, repo_id: str) -> None:
        """Make ``repo_id`` visible to everyone."""
        _check_repo_id(repo_id)
        self._call(
            "make_public", repo_id, None, lambda: self._api.update_repo_settings(repo_id, private=False)
        )
