"""The embedded local network's model hub: a folder of repositories with immutable commits.

Layout: ``<root>/<namespace>/<name>/repo.json`` (visibility and commit list),
``<root>/<namespace>/<name>/<commit>/`` (the files of one commit, never changed once written) and
``<root>/.namespaces/<namespace>.json`` (the wallet that owns the namespace).

A hub opened with ``user=`` may write to (and read the private repositories of) that namespace only;
a hub opened without a user (a validator) reads public repositories only, as on Hugging Face. With
``owner=`` (the neurons pass their wallet's coldkey address) the first write claims the namespace for
that owner, and a hub with another owner may never write there again: a miner cannot publish into (or
hide) another miner's repositories by naming them. A hub without ``owner`` is trusted code (tests, the
demo's own scripts) and is not checked against claims.

Commits hold regular files only: an upload refuses symbolic links and special files (a FIFO, a device
such as ``/dev/zero``), and serving never follows a link, so nothing outside a commit folder is ever
listed or copied.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from model.storage.hub.protocol import RepoFile, RepoInfo, split_repo_id
from utilities.errors import HubError, RepoNotFoundError, UnsafePathError
from utilities.files import atomic_write_json, check_contained, safe_join

_SKIPPED_DIRS = {".git", ".cache"}
_NAMESPACES = ".namespaces"
_CHUNK = 1 << 20


class LocalHub:
    """A :class:`~model.storage.hub.protocol.Hub` on a local folder."""

    def __init__(self, root: str | Path, *, user: str | None = None, owner: str | None = None) -> None:
        self.root = Path(root)
        self.user = user
        self.owner = owner
        self.root.mkdir(parents=True, exist_ok=True)

    def _repo_dir(self, repo_id: str) -> Path:
        namespace, name = split_repo_id(repo_id)
        return safe_join(self.root, f"{namespace}/{name}")

    def _read_meta(self, repo_id: str) -> dict[str, object]:
        meta_path = self._repo_dir(repo_id) / "repo.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise RepoNotFoundError(f"repository {repo_id} does not exist on the local hub") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise HubError(f"repository {repo_id} has unreadable metadata: {exc}") from exc
        if meta.get("private") and not self._owns_namespace(split_repo_id(repo_id)[0]):
            # as on Hugging Face, a private repository looks absent to everyone but its owner
            raise RepoNotFoundError(f"repository {repo_id} does not exist on the local hub")
        return dict(meta)

    def _owns_namespace(self, namespace: str) -> bool:
        """Whether this hub is ``namespace``'s user and no other wallet has claimed it."""
        if self.user != namespace:
            return False
        if self.owner is None:
            return True
        holder = _read_claim(safe_join(self.root, f"{_NAMESPACES}/{namespace}.json"))
        return holder is None or holder == self.owner

    def _check_owner(self, repo_id: str, *, claim: bool = True) -> None:
        """Raise :class:`HubError` unless this hub may write ``repo_id``; with ``claim``, an unclaimed
        namespace becomes this owner's."""
        namespace, _ = split_repo_id(repo_id)
        if self.user != namespace:
            raise HubError(f"user {self.user!r} may not write to {repo_id}")
        if self.owner is None:
            return
        claim_path = safe_join(self.root, f"{_NAMESPACES}/{namespace}.json")
        holder = _read_claim(claim_path)
        if holder is None and claim:
            claim_path.parent.mkdir(parents=True, exist_ok=True)
            holder = _claim(claim_path, self.owner)
        if holder is not None and holder != self.owner:
            raise HubError(
                f"namespace {namespace!r} belongs to another wallet ({holder}); {repo_id} cannot be "
                f"written by {self.owner}"
            )

    def check_write_access(self, repo_id: str) -> str:
        """The user name, if this hub may write ``repo_id`` (its namespace, not claimed by another
        wallet); :class:`HubError` otherwise. Claims nothing."""
        self._check_owner(repo_id, claim=False)
        return str(self.user)

    def is_private(self, repo_id: str) -> bool | None:
        """Whether ``repo_id`` is private; ``None`` if it does not exist or is another user's private one."""
        try:
            return bool(self._read_meta(repo_id)["private"])
        except RepoNotFoundError:
            return None

    def create_repo(self, repo_id: str, *, private: bool = True) -> None:
        self._check_owner(repo_id)
        meta_path = self._repo_dir(repo_id) / "repo.json"
        if not meta_path.exists():
            atomic_write_json(meta_path, {"private": private, "commits": []})

    def upload_folder(self, repo_id: str, folder: Path, *, message: str = "Upload model") -> str:
        self._check_owner(repo_id)
        meta = self._read_meta(repo_id)
        source = Path(folder)
        if not source.is_dir():
            raise HubError(f"cannot upload {source} to {repo_id}: not a folder")
        repo_dir = self._repo_dir(repo_id)
        staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=repo_dir))
        try:
            digest = hashlib.sha1(f"{repo_id}\n{time.time_ns()}\n{message}".encode())
            for relative in _files_under(source):
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_regular(source / relative, target)  # a link or a device is refused, not followed
                digest.update(relative.encode())
            commit = digest.hexdigest()
            os.rename(staging, repo_dir / commit)  # atomic: a commit appears whole or not at all
        except UnsafePathError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise HubError(f"upload of {source} to {repo_id} failed: {exc}") from exc
        commits = [*list(meta["commits"]), commit]  # type: ignore[call-overload]
        atomic_write_json(repo_dir / "repo.json", {**meta, "commits": commits})
        return commit

    def _commit_dir(self, repo_id: str, commit: str) -> tuple[Path, dict[str, object]]:
        meta = self._read_meta(repo_id)
        if commit not in meta["commits"]:  # type: ignore[operator]
            raise RepoNotFoundError(f"commit {commit} does not exist in {repo_id}")
        return safe_join(self._repo_dir(repo_id), commit), meta

    def repo_info(self, repo_id: str, *, commit: str) -> RepoInfo:
        commit_dir, meta = self._commit_dir(repo_id, commit)
        files = tuple(
            RepoFile(path=relative, size=os.lstat(commit_dir / relative).st_size)
            for relative in _files_under(commit_dir)
        )
        return RepoInfo(repo_id=repo_id, commit=commit, files=files, private=bool(meta["private"]))

    def download(
        self, repo_id: str, *, commit: str, dest: Path, allow_patterns: Sequence[str] | None = None
    ) -> Path:
        commit_dir, _ = self._commit_dir(repo_id, commit)
        target_root = Path(dest)
        if target_root.exists() and any(target_root.iterdir()):
            # same rule as HuggingFaceHub: a stale folder must never pass for this commit
            raise HubError(f"cannot download {repo_id}@{commit} into {target_root}: folder is not empty")
        try:
            target_root.mkdir(parents=True, exist_ok=True)
            for relative in _files_under(commit_dir):
                if allow_patterns is not None and not _matches(relative, allow_patterns):
                    continue
                target = safe_join(target_root, relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_regular(commit_dir / relative, target)
        except OSError as exc:
            raise HubError(f"download of {repo_id}@{commit} failed: {exc}") from exc
        check_contained(target_root)
        return target_root

    def make_private(self, repo_id: str) -> None:
        self._set_private(repo_id, True)

    def make_public(self, repo_id: str) -> None:
        self._set_private(repo_id, False)

    def _set_private(self, repo_id: str, private: bool) -> None:
        self._check_owner(repo_id)
        meta = self._read_meta(repo_id)
        atomic_write_json(self._repo_dir(repo_id) / "repo.json", {**meta, "private": private})


def _files_under(folder: Path) -> list[str]:
    """Relative ``/``-separated paths of the files under ``folder``, sorted, skipping .git/.cache.

    Raises :class:`UnsafePathError` on a symbolic link (to a file or a folder) or a special file."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for name in [*dirnames, *filenames]:
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
                raise UnsafePathError(f"{Path(dirpath, name)} is {kind}: commits hold regular files only")
        for filename in sorted(filenames):
            found.append(Path(dirpath, filename).relative_to(folder).as_posix())
    return found


def _copy_regular(source: Path, target: Path) -> None:
    """Copy the regular file ``source`` to ``target`` without following a link at ``source`` (a link or
    special file swapped in after the listing is refused too)."""
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if os.path.islink(source):
            raise UnsafePathError(f"{source} is a symbolic link: commits hold regular files only") from exc
        raise
    with os.fdopen(fd, "rb") as reader:
        if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
            raise UnsafePathError(f"{source} is a special file: commits hold regular files only")
        with open(target, "wb") as writer:
            shutil.copyfileobj(reader, writer, _CHUNK)


def _claim(path: Path, owner: str) -> str:
    """Claim the namespace of ``path`` for ``owner`` unless someone already has; returns the holder.
    The claim appears whole (a hard link of a finished file), and of two racing owners one wins."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"owner": owner}, handle)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_claim(path) or owner
        return owner
    finally:
        os.unlink(tmp)


def _read_claim(path: Path) -> str | None:
    """The owner recorded in a namespace claim file, or ``None`` when the namespace is unclaimed."""
    try:
        holder = json.loads(path.read_text()).get("owner")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as exc:
        raise HubError(f"unreadable namespace claim {path}: {exc}") from exc
    if not isinstance(holder, str):
        raise HubError(f"namespace claim {path} names no owner")
    return holder


def _matches(relative: str | Path, patterns: Sequence[str]) -> bool:
    """Whether the top-level file ``relative`` matches one of ``patterns`` (as ``snapshot_download``'s
    ``allow_patterns`` would, for the flat model file set)."""
    name = Path(relative).as_posix()
    return "/" not in name and any(fnmatch.fnmatchcase(name, p) for p in patterns)
