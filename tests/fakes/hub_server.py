"""A loopback Hugging Face Hub for tests: a stdlib HTTP server on 127.0.0.1 that speaks the part of the
Hub's API that ``huggingface_hub`` 2.4 uses for ``create_repo``, ``update_repo_settings``,
``model_info(files_metadata=True)``, ``list_repo_tree``, ``snapshot_download`` (regular files, no
LFS/xet), ``upload_folder`` (small regular files: preupload + NDJSON commit) and ``whoami``.

So the real library runs end to end through :class:`~model.storage.hub.hugging_face.HuggingFaceHub`.
Private repositories answer 401 ``RepoNotFound`` to anyone but the owner's token and gated ones 403
``GatedRepo`` on file downloads, as the Hub does. :attr:`HubServer.faults` injects failures: a list of
``(kind, action)`` consumed in order, ``kind`` one of ``"info"``, ``"tree"``, ``"file"``, ``"preupload"``,
``"commit"``, ``"settings"`` and ``action`` an HTTP status or ``"drop"`` (a file response cut off after
half of its bytes).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from huggingface_hub import constants

OWNER_TOKEN = "hf_owner_write_token"
READ_TOKEN = "hf_owner_read_token"


@dataclass
class Repo:
    owner: str
    private: bool = True
    gated: bool = False
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)

    def files(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if not self.commits:
            return None
        if revision == "main":
            return self.commits[-1]
        for sha, files in self.commits:
            if sha == revision:
                return sha, files
        return None


def _private(payload: dict[str, Any]) -> bool | None:
    """The visibility a create/settings request asks for (2.4 sends ``visibility``, older ``private``)."""
    if "visibility" in payload:
        return payload["visibility"] == "private"
    return None if payload.get("private") is None else bool(payload["private"])


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """The server's state (repositories, the users its tokens belong to, faults to inject)."""

    def __init__(self, *, user: str = "miner", orgs: tuple[str, ...] = ()) -> None:
        self.user = user
        self.orgs = orgs
        self.repos: dict[str, Repo] = {}
        self.faults: list[tuple[str, int | str]] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fault(self, kind: str) -> int | str | None:
        with self.lock:
            for index, (fault_kind, action) in enumerate(self.faults):
                if fault_kind == kind:
                    del self.faults[index]
                    return action
        return None

    def add_commit(self, repo_id: str, files: dict[str, bytes]) -> str:
        repo = self.repos[repo_id]
        parent = repo.commits[-1][1] if repo.commits else {}
        sha = hashlib.sha1(repr((repo_id, len(repo.commits), sorted(files.items()))).encode()).hexdigest()
        repo.commits.append((sha, {**parent, **files}))
        return sha


@contextmanager
def running_hub(**kwargs: Any) -> Iterator[HubServer]:
    server = HubServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def loopback_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    """A running loopback hub of the user ``miner`` (member of ``lab``), with huggingface_hub online for
    this test only (the test environment sets ``HF_HUB_OFFLINE=1``; the library reads it at import)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with running_hub(user="miner", orgs=("lab",)) as server:
        yield server


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/api/whoami-v2"), "whoami"),
    ("POST", re.compile(r"/api/repos/create"), "create"),
    ("POST", re.compile(r"/api/validate-yaml"), "validate"),
    ("PUT", re.compile(rf"/api/models/{_REPO}/settings"), "settings"),
    ("GET", re.compile(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), "tree"),
    ("POST", re.compile(rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)"), "preupload"),
    ("POST", re.compile(rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)"), "commit"),
    ("GET", re.compile(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), "info"),
    ("HEAD", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "file"),
    ("GET", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "file"),
]


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: Any = None, *, headers: dict[str, str] | None = None) -> None:
            data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if not isinstance(body, bytes):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, code: str | None = None, message: str = "error") -> None:
            self._send(status, {"error": message}, headers={"X-Error-Code": code} if code else {})

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            with hub.lock:
                hub.requests.append((self.command, path))
            for method, pattern, kind in _ROUTES:
                match = pattern.fullmatch(path)
                if method == self.command and match:
                    action = hub.fault(kind)
                    if isinstance(action, int):
                        self._error(action, message=f"injected {action}")
                        return
                    getattr(self, f"_do_{kind}")(match.groupdict(), parse_qs(url.query), action == "drop")
                    return
            self._error(404, message=f"no route {self.command} {path}")

        do_GET = do_POST = do_PUT = do_HEAD = _dispatch

        def _visible(self, repo_id: str, *, write: bool = False) -> Repo | None:
            """The repository if this request's token may see (or write) it; otherwise answers."""
            repo = hub.repos.get(repo_id)
            token = self._token()
            owner = token in (OWNER_TOKEN, READ_TOKEN) and repo is not None and repo.owner == hub.user
            if repo is None or (repo.private and not owner):
                self._error(401, "RepoNotFound", f"Repository Not Found for url: {self.path}")
                return None
            if write and token != OWNER_TOKEN:
                self._error(403, None, "You don't have the rights to write to this repository")
                return None
            return repo

        def _do_whoami(self, _: dict[str, str], __: dict[str, list[str]], ___: bool) -> None:
            token = self._token()
            if token not in (OWNER_TOKEN, READ_TOKEN):
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            role = "write" if token == OWNER_TOKEN else "read"
            orgs = [{"name": o, "roleInOrg": "write"} for o in hub.orgs]
            auth = {"type": "access_token", "accessToken": {"displayName": "t", "role": role}}
            self._send(200, {"type": "user", "name": hub.user, "orgs": orgs, "auth": auth})

        def _do_validate(self, _: dict[str, str], __: dict[str, list[str]], ___: bool) -> None:
            self._body()
            self._send(200, {"errors": [], "warnings": []})  # a README's metadata is fine

        def _do_create(self, _: dict[str, str], __: dict[str, list[str]], ___: bool) -> None:
            payload = json.loads(self._body() or b"{}")
            namespace = payload.get("organization") or hub.user
            repo_id = f"{namespace}/{payload['name']}"
            if self._token() != OWNER_TOKEN or namespace not in (hub.user, *hub.orgs):
                self._error(403, None, "You don't have the rights to create a model under this namespace")
                return
            if repo_id in hub.repos:
                self._error(409, None, "You already created this model repo")
                return
            hub.repos[repo_id] = Repo(owner=hub.user, private=_private(payload) is True)
            hub.add_commit(
                repo_id, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
            )
            self._send(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})

        def _do_settings(self, groups: dict[str, str], _: dict[str, list[str]], __: bool) -> None:
            repo = self._visible(groups["repo"], write=True)
            if repo is None:
                return
            payload = json.loads(self._body() or b"{}")
            if _private(payload) is not None:
                repo.private = bool(_private(payload))
            self._send(200, {})

        def _do_info(self, groups: dict[str, str], query: dict[str, list[str]], _: bool) -> None:
            repo_id = groups["repo"]
            repo = self._visible(repo_id)
            if repo is None:
                return
            found = repo.files(groups.get("rev") or "main")
            if found is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {groups.get('rev')}")
                return
            sha, files = found
            blobs = query.get("blobs") == ["true"]
            siblings = [
                {"rfilename": p, **({"size": len(d), "blobId": _blob_id(d)} if blobs else {})}
                for p, d in sorted(files.items())
            ]
            self._send(200, {"_id": "0" * 24, "id": repo_id, "modelId": repo_id, "private": repo.private,
                             "gated": "auto" if repo.gated else False, "disabled": False, "sha": sha,
                             "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})  # fmt: skip

        def _do_tree(self, groups: dict[str, str], _: dict[str, list[str]], __: bool) -> None:
            repo = self._visible(groups["repo"])
            if repo is None:
                return
            found = repo.files(groups["rev"])
            if found is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {groups['rev']}")
                return
            entries = [
                {"type": "file", "oid": _blob_id(d), "size": len(d), "path": p}
                for p, d in sorted(found[1].items())
            ]
            self._send(200, entries)

        def _do_preupload(self, groups: dict[str, str], _: dict[str, list[str]], __: bool) -> None:
            if self._visible(groups["repo"], write=True) is None:
                return
            files = json.loads(self._body())["files"]
            self._send(
                200,
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                },
            )

        def _do_commit(self, groups: dict[str, str], _: dict[str, list[str]], __: bool) -> None:
            repo_id = groups["repo"]
            repo = self._visible(repo_id, write=True)
            if repo is None:
                return
            current = dict(repo.commits[-1][1]) if repo.commits else {}
            for line in self._body().splitlines():
                if not line.strip():
                    continue
                entry = json.loads(line)
                value = entry.get("value", {})
                if entry["key"] == "file":
                    if value.get("encoding") != "base64":
                        self._error(400, None, "only base64 file contents are accepted")
                        return
                    current[value["path"]] = base64.b64decode(value["content"])
                elif entry["key"] in ("deletedFile", "deletedFolder"):
                    current.pop(value["path"], None)
                elif entry["key"] == "lfsFile":
                    self._error(400, None, "LFS is not served by the loopback hub")
                    return
            repo.commits.append(("", current))
            sha = hashlib.sha1(
                repr((repo_id, len(repo.commits), sorted(current.items()))).encode()
            ).hexdigest()
            repo.commits[-1] = (sha, current)
            self._send(
                200,
                {"success": True, "commitOid": sha, "commitUrl": f"{hub.endpoint}/{repo_id}/commit/{sha}"},
            )

        def _do_file(self, groups: dict[str, str], _: dict[str, list[str]], drop: bool) -> None:
            repo = self._visible(groups["repo"])
            if repo is None:
                return
            if repo.gated:
                self._error(403, "GatedRepo", "Access to this model is restricted: you must be authenticated")
                return
            found = repo.files(groups["rev"])
            if found is None or groups["path"] not in found[1]:
                code = "RevisionNotFound" if found is None else "EntryNotFound"
                self._error(404, code, "not found")
                return
            sha, files = found
            data = files[groups["path"]]
            headers = {"X-Repo-Commit": sha, "ETag": f'"{_blob_id(data)}"', "Accept-Ranges": "bytes"}
            status, body = 200, data
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if ranged and self.command == "GET":
                start = int(ranged.group(1))
                status, body = 206, data[start:]
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            if drop and self.command == "GET" and len(body) > 1:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self._send(status, body, headers=headers)

    return Handler
