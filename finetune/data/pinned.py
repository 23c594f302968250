"""Text passages and multiple-choice questions from a Hugging Face dataset or a local JSON/JSONL file,
pinned so every validator reads the same rows.

A hub dataset must name a ``revision`` (a commit of the dataset repository): without one, validators
that load it on different days may read different data and disagree. A local file may name the
``sha256`` of its bytes, checked before it is read. Rows are visited in an order drawn from
``random.Random(seed)``; malformed rows are skipped.

Multiple-choice rows hold a question, a list of choices and the answer: its index, a letter (``"B"``)
or the text of the right choice.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from finetune.data.dataset import JSON_SUFFIXES, _visit_order
from finetune.data.task_samples import ChoiceSample
from utilities.errors import ConfigError, DataSourceError
from utilities.retry import retry_call

logger = logging.getLogger(__name__)

__all__ = ["DatasetChoiceSource", "DatasetTextSource", "file_sha256"]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 4 MiB chunks)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(4 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _PinnedRows:
    """Loads the rows of a pinned dataset once, with a timeout and bounded retries."""

    def __init__(
        self,
        path_or_name: str | Path,
        split: str,
        *,
        revision: str | None,
        sha256: str | None,
        config_name: str | None,
        cache_dir: str | Path | None,
        timeout_s: float,
        attempts: int,
    ) -> None:
        self.path_or_name = str(path_or_name)
        self.split = split
        self.revision = revision
        self.sha256 = sha256.lower() if sha256 else None
        self.config_name = config_name
        self.cache_dir = str(cache_dir) if cache_dir is not None else None
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._rows: Any = None
        path = Path(self.path_or_name)
        if not path.exists() and not revision:
            raise ConfigError(f"dataset {self.path_or_name}: a hub dataset needs a pinned revision")

    def _load(self) -> Any:
        from datasets import load_dataset

        path = Path(self.path_or_name)
        if path.is_file():
            if not path.name.lower().endswith(JSON_SUFFIXES):
                raise DataSourceError(f"{path}: only JSON and JSONL files are read (got {path.suffix})")
            if self.sha256 is not None and file_sha256(path) != self.sha256:
                raise DataSourceError(f"{path}: SHA-256 differs from the pinned {self.sha256}")
            return load_dataset("json", data_files=str(path), split=self.split, cache_dir=self.cache_dir)
        return load_dataset(
            self.path_or_name,
            self.config_name,
            split=self.split,
            revision=self.revision,
            cache_dir=self.cache_dir,
        )

    def rows(self) -> Any:
        if self._rows is None:
            try:
                self._rows = retry_call(
                    self._load, what=f"loading dataset {self.path_or_name}", timeout_s=self.timeout_s,
                    attempts=self.attempts,
                )  # fmt: skip
            except DataSourceError:
                raise
            except Exception as exc:  # datasets raises many types; all end the same way
                raise DataSourceError(f"cannot load dataset {self.path_or_name}: {exc}") from exc
        return self._rows

    def visit(self, seed: int) -> Iterator[Any]:
        """The rows, one by one, in the order drawn from ``seed``."""
        rows = self.rows()
        for index in _visit_order(len(rows), random.Random(seed)):
            yield rows[index]


class DatasetTextSource:
    """Passages of a text column (``text`` by default), stripped, at least ``min_chars`` long."""

    def __init__(
        self,
        path_or_name: str | Path,
        split: str = "train",
        *,
        text_column: str = "text",
        min_chars: int = 1,
        revision: str | None = None,
        sha256: str | None = None,
        config_name: str | None = None,
        cache_dir: str | Path | None = None,
        timeout_s: float = 900.0,
        attempts: int = 2,
    ) -> None:
        self._rows = _PinnedRows(
            path_or_name, split, revision=revision, sha256=sha256, config_name=config_name,
            cache_dir=cache_dir, timeout_s=timeout_s, attempts=attempts,
        )  # fmt: skip
        self.text_column = text_column
        self.min_chars = max(1, min_chars)

    def __repr__(self) -> str:
        return f"DatasetTextSource({self._rows.path_or_name!r}, revision={self._rows.revision!r})"

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[str]:
        if n <= 0:
            return []
        texts: list[str] = []
        for row in self._rows.visit(seed):
            text = row.get(self.text_column) if isinstance(row, Mapping) else None
            if isinstance(text, str) and len(text.strip()) >= self.min_chars:
                texts.append(text.strip())
                if len(texts) == n:
                    break
        if not texts:
            raise DataSourceError(f"dataset {self._rows.path_or_name} holds no {self.text_column!r} text")
        return texts


def _answer_index(answer: object, choices: Sequence[str]) -> int | None:
    """The answer as an index into ``choices``: an int, a letter, a digit string, or the choice's text."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return answer if 0 <= answer < len(choices) else None
    if not isinstance(answer, str):
        return None
    text = answer.strip()
    if text in choices:
        return list(choices).index(text)
    if len(text) == 1 and text.isalpha() and ord(text.upper()) - ord("A") < len(choices):
        return ord(text.upper()) - ord("A")
    if text.isdigit() and int(text) < len(choices):
        return int(text)
    return None


class DatasetChoiceSource:
    """Multiple-choice rows: ``question``, ``choices`` (a list of strings) and ``answer`` columns."""

    def __init__(
        self,
        path_or_name: str | Path,
        split: str = "test",
        *,
        question_column: str = "question",
        choices_column: str = "choices",
        answer_column: str = "answer",
        revision: str | None = None,
        sha256: str | None = None,
        config_name: str | None = None,
        cache_dir: str | Path | None = None,
        timeout_s: float = 900.0,
        attempts: int = 2,
    ) -> None:
        self._rows = _PinnedRows(
            path_or_name, split, revision=revision, sha256=sha256, config_name=config_name,
            cache_dir=cache_dir, timeout_s=timeout_s, attempts=attempts,
        )  # fmt: skip
        self.columns = (question_column, choices_column, answer_column)

    def __repr__(self) -> str:
        return f"DatasetChoiceSource({self._rows.path_or_name!r}, revision={self._rows.revision!r})"

    def _sample(self, row: object) -> ChoiceSample | None:
        if not isinstance(row, Mapping):
            return None
        question, choices, answer = (row.get(column) for column in self.columns)
        if not isinstance(question, str) or not question.strip() or not isinstance(choices, Sequence):
            return None
        if isinstance(choices, str) or not all(isinstance(c, str) and c.strip() for c in choices):
            return None
        options = tuple(c.strip() for c in choices)
        index = _answer_index(answer, options)
        if index is None or len(options) < 2 or len(set(options)) != len(options):
            return None
        return ChoiceSample(question.strip(), options, index)

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[ChoiceSample]:
        if n <= 0:
            return []
        samples: list[ChoiceSample] = []
        for row in self._rows.visit(seed):
            sample = self._sample(row)
            if sample is not None:
                samples.append(sample)
                if len(samples) == n:
                    break
        if not samples:
            raise DataSourceError(f"dataset {self._rows.path_or_name} holds no usable question")
        if len(samples) < n:
            logger.warning(
                "dataset %s: only %d usable questions of %d", self._rows.path_or_name, len(samples), n
            )
        return samples
