"""Publishing a miner's model: hub first, then chain, then public (design.md §6).

1. Check the commitment will fit on chain (before a byte is uploaded).
2. Upload the folder to a **private** repository (an existing one is made private again first): nobody
   can copy it before the commitment exists. Validators that already hold the previous model keep it.
3. Download what the hub serves for that commit and hash it (optionally salted with the hotkey): the
   hash must be of the files validators will get, not of the local folder.
4. Commit ``namespace:name:commit:hash:competition`` on chain, with bounded retries.
5. Make the repository public, so validators can download it.

A failure at any stage raises (hub down, chain down, rate limited) and leaves the local model as it
was: the caller keeps it and publishes again later.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import tenacity

from model.data import ModelId
from model.hashing import hash_directory, hash_with_hotkey
from model.model_files import MODEL_FILE_PATTERNS
from model.storage.chain.protocol import Chain
from model.storage.hub.protocol import Hub, split_repo_id
from utilities.errors import ChainError, CommitmentError, ConfigError, HubError

T = TypeVar("T")

logger = logging.getLogger(__name__)

_PLACEHOLDER_COMMIT = "0" * 40
_PLACEHOLDER_HASH = "A" * 43 + "="


@dataclass(frozen=True)
class Publisher:
    """Publishes model folders to ``hub`` and commits them on ``chain`` as ``hotkey``."""

    chain: Chain
    hub: Hub
    hotkey: str
    attempts: int = 3
    wait_s: float = 5.0

    def check_fits(self, repo_id: str, competition_id: str) -> None:
        """Raise :class:`ConfigError` if a commitment for ``repo_id`` could not fit on chain."""
        try:
            namespace, name = split_repo_id(repo_id)
            ModelId(
                namespace=namespace,
                name=name,
                commit=_PLACEHOLDER_COMMIT,
                hash=_PLACEHOLDER_HASH,
                competition_id=competition_id,
            ).to_compressed_str()
        except (ValueError, HubError) as exc:
            raise ConfigError(f"cannot publish as {repo_id!r}: {exc}") from exc

    def publish(
        self, folder: Path, *, repo_id: str, competition_id: str, use_hotkey_in_hash: bool = False
    ) -> ModelId:
        """Upload, hash what the hub serves, commit on chain, make public; returns the committed id."""
        self.check_fits(repo_id, competition_id)
        namespace, name = split_repo_id(repo_id)
        self._retry(lambda: self.hub.create_repo(repo_id, private=True), what=f"create {repo_id}")
        # an existing repository was made public by the last publication: hide it again until this
        # commit is on chain, or a copier could commit the new files first and take the credit
        self._retry(lambda: self.hub.make_private(repo_id), what=f"make {repo_id} private")
        commit = self._retry(lambda: self.hub.upload_folder(repo_id, folder), what=f"upload to {repo_id}")
        with tempfile.TemporaryDirectory(prefix="served-") as served:
            self._retry(
                lambda: self.hub.download(
                    repo_id, commit=commit, dest=Path(served) / "m", allow_patterns=MODEL_FILE_PATTERNS
                ),
                what=f"download {repo_id}@{commit}",
            )
            model_hash = hash_directory(Path(served) / "m")
        if use_hotkey_in_hash:
            model_hash = hash_with_hotkey(model_hash, self.hotkey)
        model_id = ModelId(
            namespace=namespace, name=name, commit=commit, hash=model_hash, competition_id=competition_id
        )
        self._retry(lambda: self.chain.commit(model_id.to_compressed_str()), what="commit on chain")
        logger.info("committed %s on chain as %s", model_id.to_compressed_str(), self.hotkey)
        self._retry(lambda: self.hub.make_public(repo_id), what=f"make {repo_id} public")
        return model_id

    def _retry(self, fn: Callable[[], T], *, what: str) -> T:
        # A commitment refused by the chain's rules (size, rate limit) will not pass by retrying now.
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.wait_s, max=60),
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, (HubError, ChainError)) and not isinstance(e, CommitmentError)
            ),
            reraise=True,
            before_sleep=lambda state: logger.warning(
                "%s failed (attempt %d/%d): %s",
                what,
                state.attempt_number,
                self.attempts,
                state.outcome.exception() if state.outcome else "?",
            ),
        )
        return retrying(fn)
