"""Samples from a Hugging Face dataset or a local JSON/JSONL file, loaded with ``datasets``.

Two row layouts are read:

* prompt/response columns (names configurable, ``prompt`` and ``response`` by default);
* a chat column (``messages`` by default): a list of ``{"role", "content"}`` turns (ShareGPT's
  ``{"from": "human"|"gpt", "value"}`` too); the first user turn is the prompt and the assistant turn
  right after it the response.

Rows are visited in an order drawn from ``random.Random(seed)``; blank and unwanted samples are skipped
(:mod:`finetune.data.filters`) until ``n`` are found.

Every validator must read the same rows, so a dataset on the Hugging Face Hub needs a pinned
``revision``: a commit id (40 hex digits), never a branch that moves. The dataset is loaded once, when
the source is built (at start): a missing dataset or a bad layout stops the neuron at once, with the
dataset's name. The load is not run under a timeout (an abandoned load would keep holding the
``datasets`` build lock, so a retry could only wait on it); only connection failures are retried.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import tenacity

from finetune.data.filters import clean_sample
from finetune.data.protocol import Sample
from utilities.errors import ConfigError, DataSourceError

logger = logging.getLogger(__name__)

JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_HUB_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")  # "name" or "namespace/name"; anything else is a path
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


def _is_connection_error(exc: BaseException) -> bool:
    """A failure to reach the hub that another attempt may get past (not offline mode, which is a
    ``ConnectionError`` too, and not a missing dataset)."""
    chain: list[BaseException] = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 8:
        chain.append(chain[-1].__cause__)
    if any("OfflineModeIsEnabled" in f"{type(e).__name__} {e}" for e in chain):
        return False
    if isinstance(exc, FileNotFoundError):
        return False
    try:
        import httpx2

        transport: tuple[type[BaseException], ...] = (httpx2.TransportError,)
    except ImportError:  # pragma: no cover - huggingface_hub 2.x always brings httpx2
        transport = ()
    return isinstance(exc, (ConnectionError, TimeoutError, *transport))


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
        attempts: int = 3,
        retry_wait_s: float = 5.0,
    ) -> None:
        self.path_or_name = str(path_or_name)
        self.split = split
        self.prompt_column = prompt_column
        self.response_column = response_column
        self.messages_column = messages_column
        self.config_name = config_name
        self.revision = revision
        self.cache_dir = str(cache_dir) if cache_dir is not None else None
        self.attempts = attempts
        self.retry_wait_s = retry_wait_s
        self.local = Path(self.path_or_name).expanduser().exists()
        looks_like_path = self.path_or_name.lower().endswith(JSON_SUFFIXES) or not _HUB_ID.fullmatch(
            self.path_or_name
        )
        if not self.local and looks_like_path:
            raise ConfigError(f"dataset {self.path_or_name!r} not found: no such file or folder")
        if not self.local and (revision is None or not _COMMIT.fullmatch(revision)):
            raise ConfigError(
                f"dataset {self.path_or_name!r} is read from the Hugging Face Hub and needs a pinned "
                f"revision, a 40-hex commit id (got {revision!r}): every validator must read the same rows"
            )
        self._rows: Any = self._load_once()

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
        """The loaded ``datasets.Dataset`` (loaded when the source was built)."""
        return self._rows

    def _load_once(self) -> Any:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.retry_wait_s, max=60),
            retry=tenacity.retry_if_exception(_is_connection_error),
            reraise=True,
            before_sleep=lambda state: logger.warning(
                "loading dataset %s failed (attempt %d/%d): %s",
                self.path_or_name,
                state.attempt_number,
                self.attempts,
                state.outcome.exception() if state.outcome else "?",
            ),
        )
        try:
            rows = retrying(self._load)
        except DataSourceError:
            raise
        except FileNotFoundError as exc:  # datasets' DatasetNotFoundError is one
            raise ConfigError(f"dataset {self.path_or_name!r} not found: {exc}") from exc
        except Exception as exc:  # datasets raises many types; all end the same way
            raise DataSourceError(f"cannot load dataset {self.path_or_name}: {exc}") from exc
        self._check_columns(rows.column_names)
        logger.info("dataset %s@%s: %d rows", self.path_or_name, self.revision or "local", len(rows))
        return rows

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

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[Sample]:
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
