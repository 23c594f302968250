"""Samples from a Hugging Face dataset or a local JSON/JSONL file, loaded with ``datasets``.

Two row layouts are read:

* prompt/response columns (names configurable, ``prompt`` and ``response`` by default);
* a chat column (``messages`` by default): a list of ``{"role", "content"}`` turns (ShareGPT's
  ``{"from": "human"|"gpt", "value"}`` too); the first user turn is the prompt and the assistant turn
  right after it the response.

Rows are visited in an order drawn from ``random.Random(seed)``; blank and unwanted samples are skipped
(:mod:`finetune.data.filters`) until ``n`` are found. The dataset is loaded once, on first use.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from finetune.data.filters import clean_sample
from finetune.data.protocol import Sample
from utilities.errors import DataSourceError
from utilities.retry import retry_call

logger = logging.getLogger(__name__)

JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
USER_ROLES = frozenset({"user", "human"})
ASSISTANT_ROLES = frozenset({"assistant", "gpt", "model"})


def _turn(message: object) -> tuple[str, object] | None:
    if not isinstance(message, Mapping):
        return None
    role = message.get("role", message.get("from"))
    content = message.get("content", message.get("value"))
    return (role.lower(), content) if isinstance(role, str) else None


def chat_to_sample(messages: object) -> tuple[object, object] | None:
    """(first user turn, the assistant turn right after it), or ``None`` when there is no such pair."""
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        return None
    turns = [turn for turn in (_turn(m) for m in messages) if turn is not None]
    for index, (role, content) in enumerate(turns[:-1]):
        if role in USER_ROLES:
            next_role, next_content = turns[index + 1]
            return (content, next_content) if next_role in ASSISTANT_ROLES else None
    return None


def _visit_order(size: int, rng: random.Random) -> Iterator[int]:
    """Every index of ``range(size)`` once, in random order, drawn in growing batches (a huge dataset
    never needs a full permutation in memory when the first rows suffice)."""
    seen: set[int] = set()
    batch = 256
    while len(seen) < size:
        count = size if batch >= size else batch
        for index in rng.sample(range(size), count):
            if index not in seen:
                seen.add(index)
                yield index
        batch *= 4


class DatasetSource:
    """Samples of a Hugging Face dataset (repository id or local folder) or a local JSON/JSONL file."""

    def __init__(
        self,
        path_or_name: str | Path,
        split: str = "train",
        *,
        prompt_column: str = "prompt",
        response_column: str = "response",
        messages_column: str = "messages",
        config_name: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        timeout_s: float = 900.0,
        attempts: int = 2,
    ) -> None:
        self.path_or_name = str(path_or_name)
        self.split = split
        self.prompt_column = prompt_column
        self.response_column = response_column
        self.messages_column = messages_column
        self.config_name = config_name
        self.revision = revision
        self.cache_dir = str(cache_dir) if cache_dir is not None else None
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._rows: Any = None

    def __repr__(self) -> str:
        return f"DatasetSource({self.path_or_name!r}, split={self.split!r})"

    def _load(self) -> Any:
        from datasets import load_dataset

        path = Path(self.path_or_name)
        if path.is_file():
            if not path.name.lower().endswith(JSON_SUFFIXES):
                raise DataSourceError(f"{path}: only JSON and JSONL files are read (got {path.suffix})")
            return load_dataset("json", data_files=str(path), split=self.split, cache_dir=self.cache_dir)
        return load_dataset(
            self.path_or_name,
            self.config_name,
            split=self.split,
            revision=self.revision,
            cache_dir=self.cache_dir,
        )

    def rows(self) -> Any:
        """The loaded ``datasets.Dataset`` (loaded on first call)."""
        if self._rows is None:
            try:
                rows = retry_call(
                    self._load,
                    what=f"loading dataset {self.path_or_name}",
                    timeout_s=self.timeout_s,
                    attempts=self.attempts,
                )
            except DataSourceError:
                raise
            except Exception as exc:  # datasets raises many types; all end the same way
                raise DataSourceError(f"cannot load dataset {self.path_or_name}: {exc}") from exc
            self._check_columns(rows.column_names)
            self._rows = rows
        return self._rows

    def _check_columns(self, columns: Sequence[str]) -> None:
        if {self.prompt_column, self.response_column} <= set(columns) or self.messages_column in columns:
            return
        raise DataSourceError(
            f"dataset {self.path_or_name} has neither {self.prompt_column!r}/{self.response_column!r} "
            f"nor {self.messages_column!r} columns (it has {list(columns)})"
        )

    def _row_sample(self, row: Mapping[str, Any]) -> Sample | None:
        if self.prompt_column in row and self.response_column in row:
            return clean_sample(row[self.prompt_column], row[self.response_column])
        pair = chat_to_sample(row.get(self.messages_column))
        return clean_sample(*pair) if pair is not None else None

    def sample(self, n: int, *, seed: int) -> list[Sample]:
        """``n`` usable rows (fewer if the dataset has fewer), in an order drawn from ``seed``."""
        if n <= 0:
            return []
        rows = self.rows()
        samples: list[Sample] = []
        for index in _visit_order(len(rows), random.Random(seed)):
            sample = self._row_sample(rows[index])
            if sample is not None:
                samples.append(sample)
                if len(samples) == n:
                    break
        if not samples:
            raise DataSourceError(f"dataset {self.path_or_name} holds no usable sample")
        if len(samples) < n:
            logger.warning("dataset %s: only %d usable samples of %d", self.path_or_name, len(samples), n)
        return samples
