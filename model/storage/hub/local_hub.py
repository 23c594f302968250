"""The embedded local network's model hub: a folder of repositories with immutable commits.

Layout: ``<root>/<namespace>/<name>/repo.json`` (visibility and commit list) and
``<root>/<namespace>/<name>/<commit>/`` (the files of one commit, never changed once written).
A hub opened with ``user=`` may write to (and read the private repositories of) that namespace only;
a hub opened without a user (a validator) reads public repositories only, as on Hugging Face.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from model.storage.hub.protocol import RepoFile, RepoInfo, split_repo_id
from utilities.errors import HubError, RepoNotFoundError
from utilities.files import atomic_write_json, check_contained, safe_join

_SKIPPED_DIRS = {".git", ".cache"}


class LocalHub:
    """A :class:`~model.storage.hub.protocol.Hub` on a local folder."""

    def __init__(self, root: str | Path, *, user: str | None = None) -> None:
        self.root = Path(root)
        self.user = user
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
        if meta.get("private") and split_repo_id(repo_id)[0] != self.user:
            # as on Hugging Face, a private repository looks absent to everyone but its owner
            raise RepoNotFoundError(f"repository {repo_id} does not exist on the local hub")
        return dict(meta)

    def _check_owner(self, repo_id: str) -> None:
        namespace, _ = split_repo_id(repo_id)
        if self.user != namespace:
            raise HubError(f"user {self.user!r} may not write to {repo_id}")

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
                shutil.copyfile(source / relative, target)  # follows links: commits hold real files
                digest.update(relative.encode())
            commit = digest.hexdigest()
            os.rename(staging, repo_dir / commit)  # atomic: a commit appears whole or not at all
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
            RepoFile(path=relative, size=(commit_dir / relative).stat().st_size)
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
                shutil.copyfile(commit_dir / relative, target)
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
    """Relative ``/``-separated paths of the files under ``folder``, sorted, skipping .git/.cache."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for filename in sorted(filenames):
            found.append(Path(dirpath, filename).relative_to(folder).as_posix())
    return found


def _matches(relative: str | Path, patterns: Sequence[str]) -> bool:
    """Whether the top-level file ``relative`` matches one of ``patterns`` (as ``snapshot_download``'s
    ``allow_patterns`` would, for the flat model file set)."""
    name = Path(relative).as_posix()
    return "/" not in name and any(fnmatch.fnmatchcase(name, p) for p in patterns)
