"""The Hugging Face implementation of the hub port (``huggingface_hub`` 2.x, whose HTTP layer is ``httpx2``).

Metadata calls run under :func:`utilities.retry.retry_call`: a timeout per attempt, a bounded number of
attempts, and retries only for transient failures (network, timeouts, 408/429/5xx).

Transfers (upload, download) are retried on the same transient failures, but never because a wall
clock ran out: an abandoned attempt keeps writing in the background and holds the library's file locks,
so a second one could only be slower. Each request has the library's own timeouts; one backstop for
the whole transfer, scaled to its size (``transfer_base_s + bytes / min_bytes_per_s``), ends a transfer
that makes no progress at all.

Everything the hub library raises is converted to :class:`~utilities.errors.HubError` or
:class:`~utilities.errors.RepoNotFoundError`; programming errors (``TypeError`` ...) are left alone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import httpx2
import tenacity
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
from huggingface_hub.utils import filter_repo_objects

from model.storage.hub.protocol import RepoFile, RepoInfo, TransferTimeoutError, split_repo_id
from utilities.errors import HubError, RepoNotFoundError, UnsafePathError
from utilities.files import check_contained
from utilities.retry import CallTimeoutError, call_with_timeout, retry_call

T = TypeVar("T")

logger = logging.getLogger(__name__)

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
    """:class:`~model.storage.hub.protocol.PublishingHub` on huggingface.co (model repositories only).

    ``token=None`` lets ``huggingface_hub`` find one itself (``HF_TOKEN``, then the ``hf auth login``
    cache). ``endpoint`` is the hub's base URL (huggingface.co by default). ``timeout_s`` bounds each
    attempt of a metadata call; a transfer of ``n`` bytes gets ``transfer_base_s + n / min_bytes_per_s``
    seconds in all (every retry included) before it is given up.
    """

    def __init__(
        self,
        *,
        api: HfApi | None = None,
        token: str | None = None,
        endpoint: str | None = None,
        timeout_s: float = 60.0,
        transfer_base_s: float = 600.0,
        min_bytes_per_s: float = 1_000_000.0,
        attempts: int = 3,
        retry_wait_s: float = 1.0,
    ) -> None:
        if attempts < 1 or timeout_s <= 0 or transfer_base_s <= 0 or min_bytes_per_s <= 0:
            raise ValueError("attempts must be >= 1, timeouts and the transfer rate > 0")
        self._api = api if api is not None else HfApi(endpoint=endpoint, token=token)
        self._token = token if token is not None else self._api.token
        self._timeout_s = timeout_s
        self._transfer_base_s = transfer_base_s
        self._min_bytes_per_s = min_bytes_per_s
        self._attempts = attempts
        self._retry_wait_s = retry_wait_s

    def transfer_backstop_s(self, size: int) -> float:
        """Seconds a transfer of ``size`` bytes may take in all before it is given up."""
        return self._transfer_base_s + max(0, size) / self._min_bytes_per_s

    def _attempt(self, what: str, where: str, fn: Callable[[], T]) -> T:
        """One try of ``fn``, the library's errors converted to ours (transient ones marked)."""
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

    def _call(
        self,
        what: str,
        repo_id: str,
        commit: str | None,
        fn: Callable[[], T],
        *,
        backstop_s: float | None = None,
    ) -> T:
        """Run ``fn`` with retries, converting the library's errors to ours. A metadata call
        (``backstop_s=None``) has a timeout per attempt; a transfer one backstop for all of them."""
        where = repo_id if commit is None else f"{repo_id}@{commit}"
        try:
            if backstop_s is None:
                return retry_call(
                    lambda: self._attempt(what, where, fn),
                    what=f"{what} {where}",
                    timeout_s=self._timeout_s,
                    attempts=self._attempts,
                    retry_on=(_TransientError, CallTimeoutError),
                    wait_s=self._retry_wait_s,
                )
            retrying = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(self._attempts),
                wait=tenacity.wait_exponential(multiplier=self._retry_wait_s, max=30.0),
                retry=tenacity.retry_if_exception_type(_TransientError),
                reraise=True,
                before_sleep=lambda state: logger.warning(
                    "%s %s failed (attempt %d/%d): %s",
                    what,
                    where,
                    state.attempt_number,
                    self._attempts,
                    state.outcome.exception() if state.outcome else "?",
                ),
            )
            return call_with_timeout(
                lambda: retrying(self._attempt, what, where, fn), timeout_s=backstop_s, what=f"{what} {where}"
            )
        except _TransientError as exc:
            raise HubError(
                f"{what} {where} failed after {self._attempts} attempt(s): {exc}"
            ) from exc.__cause__
        except CallTimeoutError as exc:
            if backstop_s is not None:  # not retried: the abandoned attempt may still be writing
                raise TransferTimeoutError(f"{what} {where} gave up: {exc} (not retried)") from exc
            raise HubError(f"{what} {where} failed after {self._attempts} attempt(s): {exc}") from exc

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
            backstop_s=self.transfer_backstop_s(_folder_size(Path(folder))),
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
        # the backstop is scaled to what the hub announces for the files that will be fetched
        info = self.repo_info(repo_id, commit=commit)
        paths = [f.path for f in info.files]
        wanted = set(
            paths
            if allow_patterns is None
            else filter_repo_objects(paths, allow_patterns=list(allow_patterns))
        )
        size = sum(f.size for f in info.files if f.path in wanted)
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
            backstop_s=self.transfer_backstop_s(size),
        )
        root = dest.resolve()
        if Path(returned).resolve() != root:
            raise UnsafePathError(f"{repo_id}@{commit}: download landed in {returned}, not {root}")
        check_contained(root)  # links leading outside dest
        for entry in root.rglob("*"):
            if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
                raise UnsafePathError(f"{repo_id}@{commit}: {entry} is not a plain file or folder")
        metadata = root / ".cache" / "huggingface"
        shutil.rmtree(metadata, ignore_errors=True)
        if (root / ".cache").is_dir() and not any((root / ".cache").iterdir()):
            (root / ".cache").rmdir()
        if os.path.lexists(metadata):  # its time stamps would change the directory hash
            raise HubError(f"{repo_id}@{commit}: could not remove the download metadata {metadata}")
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

    def is_private(self, repo_id: str) -> bool | None:
        """Whether ``repo_id`` is private; ``None`` when the hub says it does not exist (or is not ours)."""
        _check_repo_id(repo_id)
        try:
            info = self._call(
                "repo visibility",
                repo_id,
                None,
                lambda: self._api.model_info(repo_id, timeout=self._timeout_s),
            )
        except RepoNotFoundError:
            return None
        return bool(info.private)

    def check_write_access(self, repo_id: str) -> str:
        """The token's user name, if the token may create and write ``repo_id`` (``whoami``); otherwise
        :class:`HubError` saying what is wrong (no token, a read-only token, someone else's namespace)."""
        namespace, _ = split_repo_id(repo_id)
        if not self._token:
            raise HubError(
                f"no Hugging Face token to publish {repo_id}: run `hf auth login` (a token with write "
                "access) or set HF_TOKEN"
            )
        me = self._call("whoami", repo_id, None, lambda: self._api.whoami(token=self._token))
        return _check_whoami(me, repo_id, namespace)


def _check_whoami(me: Mapping[str, Any], repo_id: str, namespace: str) -> str:
    """The user name of a ``whoami-v2`` answer that may write ``repo_id``; :class:`HubError` otherwise."""
    name = me.get("name")
    if not isinstance(name, str):
        raise HubError(f"whoami: the hub gave no user name ({me!r})")
    token = me.get("auth", {}).get("accessToken", {}) if isinstance(me.get("auth"), Mapping) else {}
    role = token.get("role") if isinstance(token, Mapping) else None
    if role == "read":
        raise HubError(
            f"the Hugging Face token of {name} is read-only: {repo_id} needs a token with write access"
        )
    orgs = {o.get("name"): o.get("roleInOrg") for o in me.get("orgs") or () if isinstance(o, Mapping)}
    if namespace != name and namespace not in orgs:
        raise HubError(
            f"{name} may not write to {repo_id}: the namespace {namespace!r} is neither the user nor one of "
            f"its organizations ({sorted(str(o) for o in orgs) or 'none'})"
        )
    if namespace in orgs and orgs[namespace] == "read":
        raise HubError(f"{name} has only read access to the organization {namespace!r}")
    if role == "fineGrained":
        scoped = token.get("fineGrained", {}).get("scoped", ()) if isinstance(token, Mapping) else ()
        allowed = any(
            isinstance(entry, Mapping)
            and entry.get("entity", {}).get("name") in (namespace, repo_id)
            and "repo.write" in (entry.get("permissions") or ())
            for entry in scoped or ()
        )
        if not allowed:
            raise HubError(f"the fine-grained token of {name} has no repo.write permission on {namespace!r}")
    return name


def _folder_size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (what an upload sends)."""
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for filename in filenames:
            try:
                total += os.stat(os.path.join(dirpath, filename)).st_size
            except OSError:
                continue
    return total
