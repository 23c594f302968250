"""DatasetSource on local JSONL files: both row layouts, seeded sampling, failures as DataSourceError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetune.data.dataset import DatasetSource, chat_to_sample
from utilities.errors import ConfigError, DataSourceError


@pytest.fixture(autouse=True)
def _hf_caches_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make(path: Path, tmp_path: Path, **options: Any) -> DatasetSource:
    return DatasetSource(path, cache_dir=tmp_path / "cache", **options)


def test_prompt_response_columns(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "response": f"a{i}", "extra": i} for i in range(50)]
    rows += [
        {"prompt": "blank", "response": "  ", "extra": -1},
        {"prompt": "x", "response": "As an AI, no.", "extra": -2},
    ]
    source = make(write_jsonl(tmp_path / "d.jsonl", rows), tmp_path)
    first, again, other = source.sample(10, seed=1), source.sample(10, seed=1), source.sample(10, seed=2)
    assert first == again and first != other and len(first) == 10
    assert all(s == (f"q{s[0][1:]}", f"a{s[0][1:]}") for s in first)
    everything = source.sample(100, seed=5)
    assert sorted(everything) == sorted((f"q{i}", f"a{i}") for i in range(50))


def test_messages_column_takes_first_user_turn_and_the_reply(tmp_path: Path) -> None:
    rows = [
        {"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi there"},
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": "second answer"},
        ]},
        {"messages": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
        {"messages": [{"role": "user", "content": "unanswered"}]},
        {"messages": [{"role": "assistant", "content": "no prompt"}, {"role": "user", "content": "late"}]},
    ]  # fmt: skip
    source = make(write_jsonl(tmp_path / "chat.jsonl", rows), tmp_path)
    assert sorted(source.sample(10, seed=0)) == [("2+2?", "4"), ("hello", "hi there")]


def test_configured_column_names_and_json_file(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"q": "question", "a": "answer"}]), encoding="utf-8")
    source = make(path, tmp_path, prompt_column="q", response_column="a")
    assert source.sample(3, seed=0) == [("question", "answer")]


def test_chat_to_sample_rejects_odd_shapes() -> None:
    assert chat_to_sample("not a list") is None
    assert chat_to_sample([{"role": "user", "content": "q"}, {"role": "system", "content": "x"}]) is None
    assert chat_to_sample([1, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == (
        "q",
        "a",
    )


def test_missing_columns_bad_file_and_missing_dataset_fail_at_start(tmp_path: Path) -> None:
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataSourceError, match="neither"):
        make(wrong, tmp_path)
    text = tmp_path / "d.txt"
    text.write_text("hello", encoding="utf-8")
    with pytest.raises(DataSourceError, match="JSON"):
        make(text, tmp_path)
    for missing in (tmp_path / "missing-folder", tmp_path / "missing.jsonl", Path("relative.jsonl")):
        with pytest.raises(ConfigError, match=f"dataset '{missing}' not found"):
            make(missing, tmp_path)


def test_the_dataset_is_loaded_once_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[str] = []
    real = datasets.load_dataset

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", counting)
    rows = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(20)]
    source = make(write_jsonl(tmp_path / "d.jsonl", rows), tmp_path)
    assert len(calls) == 1  # at construction, not at the first step
    source.sample(5, seed=0)
    source.sample(5, seed=1)
    assert len(calls) == 1


def test_a_hub_dataset_needs_a_pinned_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    for revision in (None, "main", "v1.0", "ABCDEF" * 7):
        with pytest.raises(ConfigError, match="pinned revision"):
            make(Path("org/chat-data"), tmp_path, revision=revision)
    seen: list[dict[str, Any]] = []
    table = datasets.Dataset.from_list([{"prompt": "q", "response": "a"}])

    def fake_hub(path: str, *args: Any, **kwargs: Any) -> Any:
        seen.append({"path": path, **kwargs})
        return table

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    source = DatasetSource("org/chat-data", revision="0123456789abcdef" * 2 + "01234567", cache_dir=tmp_path)
    assert seen[0]["path"] == "org/chat-data" and seen[0]["revision"] == "0123456789abcdef" * 2 + "01234567"
    assert source.sample(1, seed=0) == [("q", "a")]


@pytest.mark.parametrize(
    ("error", "calls", "expected"),
    [
        (ConnectionError("Connection reset by peer"), 2, None),  # retried, then loads
        (
            ConnectionError("Couldn't reach 'org/chat-data' on the Hub (OfflineModeIsEnabled)"),
            1,
            DataSourceError,
        ),
        (FileNotFoundError("Dataset 'org/chat-data' doesn't exist on the Hub"), 1, ConfigError),
        (ValueError("bad config name"), 1, DataSourceError),
    ],
)
def test_only_connection_errors_are_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, calls: int, expected: type | None
) -> None:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    if isinstance(error, FileNotFoundError):
        error = DatasetNotFoundError(str(error))  # what datasets raises for a missing dataset
    made: list[int] = []
    table = datasets.Dataset.from_list([{"prompt": "q", "response": "a"}])

    def flaky(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        if len(made) == 1:
            raise error
        return table

    monkeypatch.setattr(datasets, "load_dataset", flaky)
    pinned = "f" * 40
    if expected is None:
        DatasetSource("org/chat-data", revision=pinned, retry_wait_s=0.001)
    else:
        with pytest.raises(expected, match="org/chat-data"):
            DatasetSource("org/chat-data", revision=pinned, retry_wait_s=0.001)
    assert len(made) == calls


def test_no_usable_row_is_a_data_source_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "response": "I cannot do that."}])
    with pytest.raises(DataSourceError, match="no usable sample"):
        make(path, tmp_path).sample(1, seed=0)
