"""DatasetSource on local JSONL files: both row layouts, seeded sampling, failures as DataSourceError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetune.data.dataset import DatasetSource, chat_to_sample
from utilities.errors import DataSourceError


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


def test_missing_columns_bad_file_and_missing_dataset_fail_cleanly(tmp_path: Path) -> None:
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataSourceError, match="neither"):
        make(wrong, tmp_path).sample(1, seed=0)
    text = tmp_path / "d.txt"
    text.write_text("hello", encoding="utf-8")
    with pytest.raises(DataSourceError, match="JSON"):
        make(text, tmp_path).sample(1, seed=0)
    with pytest.raises(DataSourceError, match="cannot load"):
        make(tmp_path / "missing-folder", tmp_path, attempts=1).sample(1, seed=0)


def test_no_usable_row_is_a_data_source_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "response": "I cannot do that."}])
    with pytest.raises(DataSourceError, match="no usable sample"):
        make(path, tmp_path).sample(1, seed=0)
