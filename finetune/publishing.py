"""Publishing a miner's model: hub first, then chain, then public (design.md §6).

1. Check the commitment will fit on chain and the chain's commitment quota allows one now (before a
   byte is uploaded or the repository is hidden).
2. Upload the folder to a **private** repository (an existing one is made private again first): nobody
   can copy it before the commitment exists. Validators that already hold the previous model keep it.
3. Download what the hub serves for that commit (the model file set only, as validators do) and hash
   it (optionally salted with the hotkey): the hash must be of the files validators will get, not of
   the local folder. Every attempt downloads into a fresh folder.
4. Commit ``namespace:name:commit:hash:competition`` on chain, with bounded retries.
5. Make the repository public, so validators can download it.

A failure never hides a model that is on chain: when the upload, the download or the commit fails, a
repository that was public before (or that the hotkey's current commitment names) is made public again.
A commit that landed although the call failed (a timeout after inclusion) counts as landed. When only
the last step fails, the model *is* published: :meth:`Publisher.publish` returns its id, and only
``make_public`` is retried (:meth:`Publisher.retry_pending`, at the next publication, and
:meth:`Publisher.check_access` at the miner's next start).
"""

from __future__ import annotations

import functools
import inspect
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, cast

from model.data import ModelId
from model.hashing import hash_directory, hash_with_hotkey
from model.model_files import MODEL_FILE_PATTERNS
from model.storage.chain.protocol import Chain, Commitment
from model.storage.hub.protocol import PublishingHub, TransferTimeoutError, split_repo_id
from utilities.errors import ChainError, CommitmentError, ConfigError, FinetuneError, HubError
from utilities.retry import retry

T = TypeVar("T")

logger = logging.getLogger(__name__)

_PLACEHOLDER_COMMIT = "0" * 40
_PLACEHOLDER_HASH = "A" * 43 + "="


class RateLimitedChain(Protocol):
    """A chain that says how many blocks must pass between two commitments of one hotkey."""

    commit_interval_blocks: int


def _names_repo(commitment: Commitment | None, repo_id: str) -> bool:
    """Whether ``commitment`` is a model id in ``repo_id``."""
    if commitment is None:
        return False
    try:
        return ModelId.from_compressed_str(commitment.data).repo_id == repo_id
    except ValueError:
        return False


@dataclass(frozen=True)
class Publisher:
    """Publishes model folders to ``hub`` and commits them on ``chain`` as ``hotkey``.

    ``commit_interval_blocks`` is the chain's commitment quota (blocks between two commitments of a
    hotkey); ``None`` takes the chain's own when it states one (:class:`RateLimitedChain`), else none.
    """

    chain: Chain
    hub: PublishingHub
    hotkey: str
    attempts: int = 3
    wait_s: float = 5.0
    commit_interval_blocks: int | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    """How retries wait (tests pass a recorder)."""
    _pending_public: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    @property
    def pending_public(self) -> frozenset[str]:
        """Repositories committed on chain whose ``make_public`` failed and is still to be retried."""
        return frozenset(self._pending_public)

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

    def check_access(self, repo_id: str, competition_id: str) -> None:
        """What the miner checks at start, before hours of training: the commitment fits, the hub's
        credentials may write ``repo_id`` (:class:`ConfigError` otherwise), and a model of this hotkey
        that is on chain but was left private (a crash between commit and ``make_public``) is made
        public again."""
        self.check_fits(repo_id, competition_id)
        try:
            user = self.hub.check_write_access(repo_id)
        except HubError as exc:
            raise ConfigError(f"cannot publish as {repo_id!r}: {exc}") from exc
        logger.info("hub credentials of %s may write %s", user, repo_id)
        try:
            if _names_repo(self.chain.commitment(self.hotkey), repo_id) and self.hub.is_private(repo_id):
                logger.warning("%s holds the model on chain but is private: making it public", repo_id)
                self._pending_public.add(repo_id)
                self.retry_pending()
        except (HubError, ChainError) as exc:
            logger.warning("could not check the visibility of %s: %s", repo_id, exc)

    def retry_pending(self) -> None:
        """Retry ``make_public`` of every repository whose model is on chain but still private."""
        for repo_id in sorted(self._pending_public):
            try:
                self._retry(functools.partial(self.hub.make_public, repo_id), what=f"make {repo_id} public")
            except FinetuneError as exc:
                logger.error("%s is still private although its model is on chain: %s", repo_id, exc)
                continue
            self._pending_public.discard(repo_id)
            logger.info("%s is public again", repo_id)

    def check_quota(self) -> Commitment | None:
        """Raise :class:`CommitmentError` if the chain would refuse a commitment now (nothing has been
        uploaded or hidden yet); returns the hotkey's current commitment."""
        current = self._retry(lambda: self.chain.commitment(self.hotkey), what="read the commitment")
        if current is None:
            return current
        interval = self.commit_interval_blocks
        if interval is None:  # the chain's own quota, if it states one (a property may read the chain)
            states = inspect.getattr_static(self.chain, "commit_interval_blocks", None) is not None
            chain = cast(RateLimitedChain, self.chain)
            interval = (
                self._retry(lambda: int(chain.commit_interval_blocks), what="read the quota") if states else 0
            )
        if interval <= 0:
            return current
        block = self._retry(self.chain.current_block, what="read the block")
        if block - current.block < interval:
            raise CommitmentError(
                f"{self.hotkey} committed at block {current.block}; the chain allows the next commitment "
                f"at block {current.block + interval} (now {block}): nothing was uploaded"
            )
        return current

    def publish(
        self, folder: Path, *, repo_id: str, competition_id: str, use_hotkey_in_hash: bool = False
    ) -> ModelId:
        """Upload, hash what the hub serves, commit on chain, make public; returns the committed id."""
        self.check_fits(repo_id, competition_id)
        namespace, name = split_repo_id(repo_id)
        self.retry_pending()
        on_chain_here = _names_repo(self.check_quota(), repo_id)
        was_private = self._retry(lambda: self.hub.is_private(repo_id), what=f"visibility of {repo_id}")
        if was_private is None:
            self._retry(lambda: self.hub.create_repo(repo_id, private=True), what=f"create {repo_id}")
        try:
            if was_private is False:
                # an existing repository was made public by the last publication: hide it again until
                # this commit is on chain, or a copier could commit the new files first and take the credit
                self._retry(lambda: self.hub.make_private(repo_id), what=f"make {repo_id} private")
            commit = self._retry(lambda: self.hub.upload_folder(repo_id, folder), what=f"upload to {repo_id}")
            model_hash = self._served_hash(repo_id, commit)
            if use_hotkey_in_hash:
                model_hash = hash_with_hotkey(model_hash, self.hotkey)
            model_id = ModelId(
                namespace=namespace, name=name, commit=commit, hash=model_hash, competition_id=competition_id
            )
            self._commit(model_id)
        except BaseException:
            if was_private is False or on_chain_here:  # the model on chain must stay downloadable
                self._pending_public.add(repo_id)
                self.retry_pending()
            raise
        logger.info("committed %s on chain as %s", model_id.to_compressed_str(), self.hotkey)
        self._pending_public.add(repo_id)
        self.retry_pending()  # a failure here is logged and retried later: the model is published
        return model_id

    def _commit(self, model_id: ModelId) -> None:
        """Commit ``model_id`` with retries; a failed call whose commitment landed anyway is a success."""
        data = model_id.to_compressed_str()
        try:
            self._retry(lambda: self.chain.commit(data), what="commit on chain")
        except ChainError as exc:
            try:
                landed = self.chain.commitment(self.hotkey)
            except ChainError:
                raise exc from None
            if landed is None or landed.data != data:
                raise
            logger.warning("the commit call failed (%s) but the commitment is on chain", exc)

    def _served_hash(self, repo_id: str, commit: str) -> str:
        """The hash of the model files the hub serves for ``commit``, each attempt in a fresh folder."""
        with tempfile.TemporaryDirectory(prefix="served-", ignore_cleanup_errors=True) as served:

            def fetch() -> str:
                attempt = Path(tempfile.mkdtemp(prefix="attempt-", dir=served))
                try:
                    dest = self.hub.download(
                        repo_id, commit=commit, dest=attempt / "m", allow_patterns=MODEL_FILE_PATTERNS
                    )
                    return hash_directory(dest)
                finally:
                    shutil.rmtree(attempt, ignore_errors=True)

            return self._retry(fetch, what=f"download {repo_id}@{commit}")

    def _retry(self, fn: Callable[[], T], *, what: str) -> T:
        # A commitment refused by the chain's rules (size, rate limit) will not pass by retrying now, and
        # a transfer past its backstop may still be running in the background.
        return retry(
            fn, what=what, attempts=self.attempts, retry_on=(HubError, ChainError), wait_s=self.wait_s,
            max_wait_s=60.0, sleep=self.sleep, give_up=_final,
        )  # fmt: skip


def _final(error: BaseException) -> bool:
    """Errors that retrying now cannot cure (see :meth:`Publisher._retry`)."""
    return isinstance(error, (CommitmentError, TransferTimeoutError))
