"""The model file set: the files of a repository that make up a model, as the seed defines it.

These are the files ``from_pretrained`` and ``AutoTokenizer.from_pretrained`` fetch: the config, the
generation config, the safetensors weights and their index, and the tokenizer files. Validators
download only these and hash only these; miners hash the same set, so a repository's README,
``.gitattributes`` or a stray ``training_args.bin`` neither changes the hash nor reaches a validator's
disk. Patterns are ``fnmatch`` patterns over the path inside the repository (top level only).
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Iterable
from pathlib import Path

from model.storage.hub.protocol import RepoInfo

MODEL_FILE_PATTERNS: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
"""The top-level files of a model (contract: the updater downloads and hashes exactly these)."""


def is_model_file(path: str) -> bool:
    """Whether the repository path ``path`` (``/``-separated) belongs to the model file set."""
    return "/" not in path and any(fnmatch.fnmatchcase(path, p) for p in MODEL_FILE_PATTERNS)


def model_files(paths: Iterable[str]) -> list[str]:
    """The paths of ``paths`` that belong to the model file set, in their order."""
    return [p for p in paths if is_model_file(p)]


def model_file_info(info: RepoInfo) -> RepoInfo:
    """``info`` restricted to the model file set (what a validator downloads, sizes and hashes)."""
    files = tuple(f for f in info.files if is_model_file(f.path))
    return RepoInfo(repo_id=info.repo_id, commit=info.commit, files=files, private=info.private)


def prune_to_model_files(folder: Path) -> list[str]:
    """Delete whatever in ``folder`` is not a regular top-level file of the model file set (what a hub that
    ignored the allow patterns served), so a hash of the folder covers exactly the set; returns the names
    deleted."""
    deleted = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and not entry.is_symlink() and is_model_file(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        deleted.append(entry.name)
    return deleted
