"""HuggingFaceHub at its boundary: a fake HfApi answering with real huggingface_hub objects built from
JSON shaped like the hub's API responses, and real hub errors raised by ``hf_raise_for_status``."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub._local_folder import _validate_relative_filename
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.hf_api import CommitInfo, ModelInfo
from huggingface_hub.utils import hf_raise_for_status

from model.storage.hub import hugging_face
from model.storage.hub.hugging_face import HuggingFaceHub
from model.storage.hub.protocol import RepoFile, TransferTimeoutError
from utilities.errors import HubError, RepoNotFoundError, UnsafePathError

REPO = "miner/sn-model"
SHA = "3f7a9c2e8b1d4f6a0c5e9b2d7f1a3c8e6b4d0f2a"
ENDPOINT = "https://huggingface.co"

# GET /api/models/{repo}/revision/{sha}?blobs=true (trimmed to the fields we read).
MODEL_INFO_JSON: dict[str, Any] = {
    "_id": "66f1c0ffee",
    "id": REPO,
    "private": True,
    "sha": SHA,
    "siblings": [
        {"rfilename": ".gitattributes", "size": 1519, "blobId": "a6344aac8c09253b3b630fb776ae94478aa0275b"},
        {"rfilename": "config.json", "size": 711, "blobId": "0d3b8b4e5a6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e"},
        {
            "rfilename": "model.safetensors",
            "size": 4965799096,
            "blobId": "c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0",
            "lfs": {
                "sha256": "5b1f0e2c3d4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c",
                "size": 4965799096,
                "pointerSize": 135,
            },
        },
    ],
}

# POST /api/models/{repo}/commit/main
COMMIT_JSON = {"success": True, "commitOid": SHA, "commitUrl": f"{ENDPOINT}/{REPO}/commit/{SHA}"}


def hub_error(status: int, path: str, error_code: str | None = None) -> HfHubHTTPError:
    """The exception huggingface_hub itself raises for this HTTP answer."""
    headers = {"X-Error-Code": error_code} if error_code else {}
    request = httpx2.Request("GET", f"{ENDPOINT}{path}")
    response = httpx2.Response(status, headers=headers, json={"error": "nope"}, request=request)
    try:
        hf_raise_for_status(response)
    except HfHubHTTPError as exc:
        return exc
    raise AssertionError("no error raised")


class FakeHfApi:
    """Records calls; each method pops its next scripted outcome (an exception is raised)."""

    endpoint = ENDPOINT
    token = None

    def __init__(self, **script: list[Any]) -> None:
        self.script = script
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def _answer(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.calls.append((name, args, kwargs))
        outcome = self.script[name].pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome() if callable(outcome) else outcome

    def create_repo(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("create_repo", args, kwargs)

    def upload_folder(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("upload_folder", args, kwargs)

    def model_info(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("model_info", args, kwargs)

    def update_repo_settings(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("update_repo_settings", args, kwargs)


def make_hub(api: FakeHfApi, **kwargs: Any) -> HuggingFaceHub:
    return HuggingFaceHub(api=api, retry_wait_s=0.001, **kwargs)  # type: ignore[arg-type]


def listing_api() -> FakeHfApi:
    """A fake API that answers the file listing a download starts with."""
    return FakeHfApi(model_info=[lambda: ModelInfo(**MODEL_INFO_JSON)])


def test_create_repo_is_private_and_idempotent() -> None:
    api = FakeHfApi(create_repo=[f"{ENDPOINT}/{REPO}"])
    make_hub(api).create_repo(REPO)
    assert api.calls == [("create_repo", (REPO,), {"private": True, "exist_ok": True, "repo_type": "model"})]


def test_upload_returns_the_commit_sha(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    commit = CommitInfo(
        commit_url=COMMIT_JSON["commitUrl"],
        commit_message="Upload model",
        commit_description="",
        oid=COMMIT_JSON["commitOid"],
        _endpoint=ENDPOINT,
    )
    api = FakeHfApi(upload_folder=[commit])
    assert make_hub(api).upload_folder(REPO, tmp_path, message="v1") == SHA
    _, _, kwargs = api.calls[0]
    assert kwargs["folder_path"] == tmp_path and kwargs["commit_message"] == "v1"
    assert kwargs["delete_patterns"] == "*"  # the commit holds exactly the folder: no stale shards


def test_repo_info_lists_sizes_including_lfs_files_without_downloading() -> None:
    api = FakeHfApi(model_info=[ModelInfo(**MODEL_INFO_JSON)])
    info = make_hub(api).repo_info(REPO, commit=SHA)
    assert info.files == (
        RepoFile(".gitattributes", 1519),
        RepoFile("config.json", 711),
        RepoFile("model.safetensors", 4965799096),
    )
    assert info.private and info.commit == SHA and info.total_size == 1519 + 711 + 4965799096
    _, args, kwargs = api.calls[0]
    assert args == (REPO,) and kwargs["revision"] == SHA and kwargs["files_metadata"] is True


def test_repo_info_refuses_a_file_name_that_escapes() -> None:
    evil = {**MODEL_INFO_JSON, "siblings": [{"rfilename": "../../.bashrc", "size": 1, "blobId": "0" * 40}]}
    with pytest.raises(UnsafePathError):
        make_hub(FakeHfApi(model_info=[ModelInfo(**evil)])).repo_info(REPO, commit=SHA)


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, "RepoNotFound"), (401, None), (404, "RevisionNotFound"), (403, "GatedRepo"), (404, None)],
)
def test_missing_repo_or_commit_is_repo_not_found(status: int, code: str | None) -> None:
    error = hub_error(status, f"/api/models/{REPO}/revision/{SHA}", code)
    api = FakeHfApi(model_info=[error])
    with pytest.raises(RepoNotFoundError, match=f"{REPO}@{SHA}"):
        make_hub(api).repo_info(REPO, commit=SHA)
    assert len(api.calls) == 1  # not retried


def test_other_client_errors_are_hub_errors_and_not_retried() -> None:
    api = FakeHfApi(update_repo_settings=[hub_error(403, f"/api/models/{REPO}/settings")])
    with pytest.raises(HubError, match=REPO) as info:
        make_hub(api).make_public(REPO)
    assert not isinstance(info.value, RepoNotFoundError) and len(api.calls) == 1


def test_transient_errors_are_retried_until_success() -> None:
    api = FakeHfApi(
        model_info=[
            hub_error(503, f"/api/models/{REPO}/revision/{SHA}"),
            httpx2.ConnectError("connection refused"),
            ModelInfo(**MODEL_INFO_JSON),
        ]
    )
    assert make_hub(api, attempts=3).repo_info(REPO, commit=SHA).commit == SHA
    assert len(api.calls) == 3


def test_transient_errors_give_up_after_the_attempts() -> None:
    api = FakeHfApi(create_repo=[httpx2.ReadTimeout("slow")] * 2)
    with pytest.raises(HubError, match="2 attempt"):
        make_hub(api, attempts=2).create_repo(REPO)
    assert len(api.calls) == 2


def test_a_hung_call_fails_within_the_timeout() -> None:
    release = threading.Event()
    api = FakeHfApi(model_info=[lambda: release.wait(30)])
    started = time.monotonic()
    with pytest.raises(HubError, match=r"within 0\.2"):
        make_hub(api, timeout_s=0.2, attempts=1).repo_info(REPO, commit=SHA)
    assert time.monotonic() - started < 2
    release.set()


def test_make_private_sets_private_true() -> None:
    api = FakeHfApi(update_repo_settings=[None])
    make_hub(api).make_private(REPO)
    assert api.calls == [("update_repo_settings", (REPO,), {"private": True})]


def test_make_public_sets_private_false() -> None:
    api = FakeHfApi(update_repo_settings=[None])
    make_hub(api).make_public(REPO)
    assert api.calls == [("update_repo_settings", (REPO,), {"private": False})]


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "/name", "ns/", "ns/../x", "ns/na me", ""])
def test_invalid_repo_ids_are_refused_before_any_call(repo_id: str) -> None:
    api = FakeHfApi()
    with pytest.raises(HubError, match="invalid repository id"):
        make_hub(api).make_public(repo_id)
    assert api.calls == []


def test_repo_info_needs_a_commit_id() -> None:
    with pytest.raises(HubError, match="not a commit id"):
        make_hub(FakeHfApi()).repo_info(REPO, commit="main")


class FakeSnapshot:
    """Stands in for huggingface_hub.snapshot_download: ``write(dest)`` fills the folder."""

    def __init__(self, write: Any, outcomes: list[BaseException] | None = None) -> None:
        self.write = write
        self.outcomes = outcomes or []
        self.calls: list[dict[str, Any]] = []

    def __call__(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append({"repo_id": repo_id, **kwargs})
        if self.outcomes:
            raise self.outcomes.pop(0)
        dest = Path(kwargs["local_dir"])
        (dest / ".cache" / "huggingface" / "download").mkdir(parents=True, exist_ok=True)
        return str(self.write(dest) or dest)


def write_model(dest: Path) -> None:
    (dest / "config.json").write_text("{}")
    (dest / "sub").mkdir()
    (dest / "sub" / "model.safetensors").write_bytes(b"\0" * 64)


def test_download_writes_plain_files_into_dest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSnapshot(write_model)
    monkeypatch.setattr(hugging_face, "snapshot_download", fake)
    dest = tmp_path / "models" / "m1"
    assert make_hub(listing_api()).download(REPO, commit=SHA, dest=dest) == dest
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "config.json",
        "sub",
        "sub/model.safetensors",
    ]
    assert fake.calls[0]["revision"] == SHA and fake.calls[0]["local_dir"] == dest


def test_download_retries_when_the_hub_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreachable = LocalEntryNotFoundError("cannot find the snapshot folder")
    unreachable.__cause__ = httpx2.ConnectTimeout("timed out")
    fake = FakeSnapshot(write_model, outcomes=[unreachable])
    monkeypatch.setattr(hugging_face, "snapshot_download", fake)
    make_hub(listing_api()).download(REPO, commit=SHA, dest=tmp_path / "m")
    assert len(fake.calls) == 2 and (tmp_path / "m" / "config.json").is_file()


def test_download_refuses_a_symlink_leading_outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("key")

    def write(dest: Path) -> None:
        write_model(dest)
        (dest / "tokenizer.json").symlink_to(secret)

    monkeypatch.setattr(hugging_face, "snapshot_download", FakeSnapshot(write))
    with pytest.raises(UnsafePathError, match="outside"):
        make_hub(listing_api()).download(REPO, commit=SHA, dest=tmp_path / "m")


def test_download_refuses_path_traversal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(dest: Path) -> None:
        _validate_relative_filename("../../.bashrc")  # what huggingface_hub does with such a file name

    monkeypatch.setattr(hugging_face, "snapshot_download", FakeSnapshot(write))
    with pytest.raises(UnsafePathError):
        make_hub(listing_api()).download(REPO, commit=SHA, dest=tmp_path / "m")


def test_download_refuses_files_landing_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(dest: Path) -> Path:
        elsewhere = dest / ".." / "elsewhere"
        elsewhere.mkdir()
        return elsewhere

    monkeypatch.setattr(hugging_face, "snapshot_download", FakeSnapshot(write))
    with pytest.raises(UnsafePathError, match="landed in"):
        make_hub(listing_api()).download(REPO, commit=SHA, dest=tmp_path / "m")


def test_download_refuses_a_non_empty_dest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "old.bin").write_bytes(b"x")
    monkeypatch.setattr(hugging_face, "snapshot_download", FakeSnapshot(write_model))
    with pytest.raises(HubError, match="not empty"):
        make_hub(listing_api()).download(REPO, commit=SHA, dest=tmp_path)


def test_offline_mode_fails_fast_with_a_real_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the library reads the variable at import
    hub = HuggingFaceHub(api=HfApi(token=False), attempts=3, retry_wait_s=1.0)
    started = time.monotonic()
    with pytest.raises(HubError, match=REPO) as info:
        hub.repo_info(REPO, commit=SHA)
    assert time.monotonic() - started < 2  # not retried: three attempts would wait 1 s + 2 s
    assert isinstance(info.value.__cause__, OfflineModeIsEnabled)


def test_unreachable_endpoint_is_retried_then_hub_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as probe:  # a local port nobody listens on: connection refused, no internet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = HfApi(endpoint=f"http://127.0.0.1:{port}", token=False)
    with pytest.raises(HubError, match="2 attempt") as info:
        HuggingFaceHub(api=api, attempts=2, retry_wait_s=0.001).repo_info(REPO, commit=SHA)
    assert isinstance(info.value.__cause__, httpx2.ConnectError)


def test_a_transfer_past_its_backstop_is_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    calls: list[float] = []

    def hanging(repo_id: str, **kwargs: Any) -> str:
        calls.append(time.monotonic())
        release.wait(30)  # a transfer that stops making progress
        return str(kwargs["local_dir"])

    monkeypatch.setattr(hugging_face, "snapshot_download", hanging)
    small = {
        **MODEL_INFO_JSON,
        "siblings": [{"rfilename": "config.json", "size": 100_000, "blobId": "0" * 40}],
    }
    api = FakeHfApi(model_info=[ModelInfo(**small)])
    hub = make_hub(api, attempts=3, transfer_base_s=0.2, min_bytes_per_s=1_000_000)
    assert hub.transfer_backstop_s(100_000) == pytest.approx(0.3)
    started = time.monotonic()
    with pytest.raises(TransferTimeoutError, match="not retried"):
        hub.download(REPO, commit=SHA, dest=tmp_path / "m")
    assert len(calls) == 1 and time.monotonic() - started < 2  # one attempt, ended by the scaled backstop
    release.set()


def test_the_backstop_scales_with_the_announced_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    real = hugging_face.call_with_timeout

    def spy(fn: Any, *, timeout_s: float, what: str) -> Any:
        seen.append(timeout_s)
        return real(fn, timeout_s=timeout_s, what=what)

    monkeypatch.setattr(hugging_face, "call_with_timeout", spy)
    monkeypatch.setattr(hugging_face, "snapshot_download", FakeSnapshot(write_model))
    hub = make_hub(listing_api(), transfer_base_s=100, min_bytes_per_s=1e6)
    hub.download(REPO, commit=SHA, dest=tmp_path / "all")
    hub2 = make_hub(listing_api(), transfer_base_s=100, min_bytes_per_s=1e6)
    hub2.download(REPO, commit=SHA, dest=tmp_path / "some", allow_patterns=["config.json"])
    assert seen[-2:] == [pytest.approx(100 + (1519 + 711 + 4965799096) / 1e6), pytest.approx(100 + 711 / 1e6)]


def test_download_fails_when_the_metadata_folder_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hugging_face, "snapshot_download", FakeSnapshot(write_model))
    monkeypatch.setattr(
        hugging_face.shutil, "rmtree", lambda path, ignore_errors=False: None
    )  # a failed removal
    with pytest.raises(HubError, match="could not remove the download metadata"):
        make_hub(listing_api()).download(REPO, commit=SHA, dest=tmp_path / "m")


WHOAMI = {
    "type": "user",
    "name": "miner",
    "orgs": [{"name": "lab", "roleInOrg": "write"}, {"name": "ro", "roleInOrg": "read"}],
}


@pytest.mark.parametrize(
    ("answer", "repo_id", "error"),
    [
        ({**WHOAMI, "auth": {"accessToken": {"role": "write"}}}, REPO, None),
        ({**WHOAMI, "auth": {"accessToken": {"role": "write"}}}, "lab/model", None),
        ({**WHOAMI, "auth": {"accessToken": {"role": "read"}}}, REPO, "read-only"),
        ({**WHOAMI, "auth": {"accessToken": {"role": "write"}}}, "someone/model", "neither the user"),
        ({**WHOAMI, "auth": {"accessToken": {"role": "write"}}}, "ro/model", "only read access"),
        (
            {**WHOAMI, "auth": {"accessToken": {"role": "fineGrained", "fineGrained": {"scoped": [
                {"entity": {"type": "user", "name": "miner"}, "permissions": ["repo.content.read"]}]}}}},
            REPO,
            "no repo.write",
        ),
        (
            {**WHOAMI, "auth": {"accessToken": {"role": "fineGrained", "fineGrained": {"scoped": [
                {"entity": {"type": "user", "name": "miner"}, "permissions": ["repo.write"]}]}}}},
            REPO,
            None,
        ),
    ],
)  # fmt: skip
def test_check_write_access(answer: dict[str, Any], repo_id: str, error: str | None) -> None:
    class WhoamiApi(FakeHfApi):
        token = "hf_token"

        def whoami(self, *args: Any, **kwargs: Any) -> Any:
            return self._answer("whoami", args, kwargs)

    hub = make_hub(WhoamiApi(whoami=[answer]))
    if error is None:
        assert hub.check_write_access(repo_id) == "miner"
    else:
        with pytest.raises(HubError, match=error):
            hub.check_write_access(repo_id)


def test_check_write_access_without_a_token() -> None:
    with pytest.raises(HubError, match="hf auth login"):
        make_hub(FakeHfApi()).check_write_access(REPO)
