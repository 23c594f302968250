"""``make_source``: the neurons' ``--data`` flag to a source."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.data import (
    CortexSource,
    DatasetSource,
    SampleSource,
    SyntheticSource,
    make_source,
)
from utilities.errors import ConfigError


def test_each_kind_builds_its_source_with_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    synthetic = make_source("synthetic", split="heldout")
    assert isinstance(synthetic, SyntheticSource) and synthetic.split == "heldout"
    (tmp_path / "d.jsonl").write_text('{"q": "a question", "response": "an answer"}\n')
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    dataset = make_source("Dataset", path_or_name=tmp_path / "d.jsonl", prompt_column="q", cache_dir=tmp_path)
    assert isinstance(dataset, DatasetSource) and dataset.prompt_column == "q"
    cortex = make_source("cortex", latest_runs=3, base_url="http://wandb.local")
    assert (
        isinstance(cortex, CortexSource)
        and cortex.latest_runs == 3
        and cortex.base_url == "http://wandb.local"
    )
    assert all(isinstance(s, SampleSource) for s in (synthetic, dataset, cortex))


def test_cortex_without_a_wandb_key_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="no anonymous reads"):
        make_source("cortex")


def test_unknown_kind_or_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown data source"):
        make_source("pile")
    with pytest.raises(ConfigError, match="invalid options"):
        make_source("synthetic", colour="blue")
    with pytest.raises(ConfigError, match="invalid options"):
        make_source("synthetic", split="test")
