"""The model updater: turns each hotkey's chain commitment into a verified model folder on disk.

One hotkey (:meth:`ModelUpdater.sync`): parse the commitment; skip it if the tracker holds a final
verdict for exactly this model and block; check fields and competition; let the checker refuse the
repository from its metadata *before* any download; download only the model file set
(:data:`model.model_files.MODEL_FILE_PATTERNS`, the files ``from_pretrained`` and the tokenizer read) into
a fresh temporary folder inside the store root; verify the directory hash (plain or hotkey-salted) of that
set and the files; only then move the folder into place, so a partial or unverified download is never
seen at a model's path. A README, ``.gitattributes`` or a stray ``training_args.bin`` in the repository
is neither sized, downloaded nor hashed. A model is downloaded as soon as it is committed: when it may be
evaluated (the per-competition evaluation delay) is the validator's choice, not the updater's. Every
outcome goes to the :class:`~model.tracker.ModelTracker` and the log. Safety checks live above this package
(``finetune.checks``) and arrive through the :class:`Checker` protocol.

The hub adapters bound their own transfers (``HuggingFaceHub``: ``transfer_timeout_s`` per attempt, a
few attempts); ``download_timeout_s`` is a last-resort backstop above that (4 h), never retried: the
abandoned transfer stays "in flight" and deletes its temporary folder itself when it ends. Each
``sync_all`` pass deletes temporary folders not in flight and older than ``temp_grace_s``. With
``max_store_bytes``, a download that would take the store's models over it is deferred (reason
``"disk"``), its size left in ``store.wanted_bytes`` for the cleaner. An unexpected error (a bug, a
``RecursionError`` in a check) is a failure like a hub error: recorded, retried after the backoff.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from constants.competitions import MAINNET_SCHEDULE, Competition, ScheduleEntry, competition_at
from model.data import ModelId, ModelMetadata
from model.hashing import digest_folder, hash_with_hotkey
from model.model_files import MODEL_FILE_PATTERNS, model_file_info, prune_to_model_files
from model.storage.chain.protocol import Chain, Commitment
from model.storage.disk.model_store import TEMP_PREFIX, DiskModelStore, manifest
from model.storage.hub.protocol import Hub, RepoInfo
from model.sync import Checker, SyncResult, Verdict, as_verdict, disk_full
from model.tracker import FINAL_STATUSES, ModelRecord, ModelTracker
from utilities.errors import (
    FinetuneError,
    HubError,
    RepoNotFoundError,
)
from utilities.files import check_contained
from utilities.retry import CallTimeoutError, call_with_timeout, retry

logger = logging.getLogger(__name__)

T = TypeVar("T")
__all__ = ["TEMP_PREFIX", "Checker", "ModelUpdater", "SyncResult", "model_file_info"]
_COMMIT = re.compile(r"[0-9a-f]{40}")
"""A pinned commit: a branch or tag name could change under the committed hash."""


class ModelUpdater:
    """Downloads, verifies and checks miners' models into a :class:`DiskModelStore`."""

    def __init__(
        self,
        chain: Chain,
        hub: Hub,
        store: DiskModelStore,
        tracker: ModelTracker,
        checker: Checker,
        *,
        schedule: Sequence[ScheduleEntry] = MAINNET_SCHEDULE,
        attempts: int = 2,
        download_timeout_s: float = 4 * 3600.0,
        info_timeout_s: float = 600.0,
        retry_wait_s: float = 5.0,
        backoff_s: float = 60.0,
        max_backoff_s: float = 3600.0,
        max_downloads: int = 8,
        max_store_bytes: int | None = None,
        temp_grace_s: float = 600.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1 or max_downloads < 1:
            raise ValueError("need attempts >= 1 and max_downloads >= 1")
        if download_timeout_s <= 0 or info_timeout_s <= 0 or retry_wait_s < 0 or backoff_s < 0:
            raise ValueError("timeouts must be > 0 and waits >= 0")
        if (max_store_bytes is not None and max_store_bytes < 0) or temp_grace_s < 0:
            raise ValueError("need max_store_bytes >= 0 and temp_grace_s >= 0")
        self._chain, self._hub, self._store = chain, hub, store
        self._tracker, self._checker, self._schedule = tracker, checker, tuple(schedule)
        # no age gate: a model is fetched as soon as it is committed; the validator applies each
        # competition's evaluation delay when it chooses the models of a step
        self._attempts, self._max_downloads = attempts, max_downloads
        self._download_timeout_s, self._info_timeout_s = download_timeout_s, info_timeout_s
        self._retry_wait_s, self._backoff_s = retry_wait_s, backoff_s
        self._max_backoff_s = max(backoff_s, max_backoff_s)
        self._max_store_bytes, self._temp_grace_s = max_store_bytes, temp_grace_s
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._in_flight: set[Path] = set()  # temporary folders being downloaded (maybe abandoned) or verified
        for stale in self._store.delete_temp_dirs():  # left by a crash: never complete
            logger.info("removed stale partial download %s", stale)

    def sync_all(self, current_block: int) -> list[SyncResult]:
        """Sync every registered hotkey (earliest commitments first, models the cleaner evicted last, at
        most ``max_downloads`` hub fetches) and forget hotkeys no longer registered. A chain failure
        raises ``ChainError``."""
        metagraph = self._chain.metagraph()
        commitments = self._chain.commitments()
        with self._lock:
            in_flight = set(self._in_flight)
        for stale in self._store.delete_temp_dirs(keep=in_flight, grace_s=self._temp_grace_s):
            logger.warning("removed orphaned partial download %s", stale)
        self._store.wanted_bytes = 0
        registered = set(metagraph.hotkeys)
        for hotkey in self._tracker.hotkeys():
            if hotkey not in registered and self._tracker.forget(hotkey):
                logger.info("hotkey %s is no longer registered: forgetting its model", hotkey)
        records = self._tracker.records()

        def order_key(hk: str) -> tuple[bool, float, str]:
            # evicted models come back last, into room nobody else in this pass needed
            evicted = hk in records and records[hk].reason == "evicted"
            return evicted, commitments[hk].block if hk in commitments else math.inf, hk

        order = sorted(registered, key=order_key)
        results, fetches = [], 0
        for hotkey in order:
            try:
                result = self._sync(
                    hotkey, commitments.get(hotkey), current_block, fetches < self._max_downloads
                )
            except Exception as exc:  # one hotkey's failure must never stop the others
                logger.exception("hotkey %s: sync failed unexpectedly: %s", hotkey, exc)
                result = SyncResult(hotkey, "failed", "internal", f"{type(exc).__name__}: {exc}")
            fetches += result.fetched
            results.append(result)
        return results

    def sync(self, hotkey: str, commitment: Commitment | None, current_block: int) -> SyncResult:
        """Bring the tracker and the store up to date with ``hotkey``'s ``commitment``; never raises
        for anything a miner can cause."""
        return self._sync(hotkey, commitment, current_block, True)

    def _sync(
        self, hotkey: str, commitment: Commitment | None, current_block: int, may_fetch: bool
    ) -> SyncResult:
        if commitment is None:
            logger.debug("hotkey %s has no commitment", hotkey)
            return SyncResult(hotkey, "no_commitment")
        raw = (commitment.data, commitment.block)
        previous = self._tracker.get(hotkey)
        problem = ""
        try:
            metadata: ModelMetadata | None = ModelMetadata(
                ModelId.from_compressed_str(commitment.data), commitment.block
            )
        except ValueError as exc:
            metadata, problem = None, str(exc)
        model_id = None if metadata is None else metadata.id
        same = previous is not None and (
            previous.metadata == metadata if metadata is not None else previous.commitment == raw
        )
        if previous is not None and same:
            # an inactive competition is re-checked (no hub call): a schedule may start it later
            intact = previous.status != "ok" or self._intact(previous)
            if previous.status in FINAL_STATUSES and previous.reason != "competition" and intact:
                logger.debug("hotkey %s: %s unchanged (%s)", hotkey, _describe(previous), previous.status)
                if previous.status == "ok" and previous.weights_hash is None:
                    self._rehash(previous)
                return SyncResult(hotkey, "unchanged", previous.reason, previous.message, model_id)
            if not intact:
                self._damaged(previous)
            if previous.status == "failed" and self._clock() < previous.retry_at:
                wait = previous.retry_at - self._clock()
                logger.info("hotkey %s: %s failed before; retry in %.0f s", hotkey, _describe(previous), wait)
                return SyncResult(hotkey, "backoff", previous.reason, previous.message, model_id)
        if metadata is None:
            return self._finish(hotkey, raw, None, Verdict("misconfigured", "parse", problem), previous)
        try:
            competition = self._precheck(metadata, current_block)
        except Verdict as verdict:
            return self._finish(hotkey, raw, metadata, verdict, previous)
        if (held := self._held(previous, metadata, competition, current_block)) is not None:
            return held
        evicted = previous is not None and previous.metadata == metadata and previous.reason == "evicted"
        if evicted and previous is not None and (full := self._no_room_for(previous)) is not None:
            logger.debug("hotkey %s: evicted %s waits for room: %s", hotkey, _model(metadata), full)
            return SyncResult(hotkey, "deferred", "disk", full, model_id)
        if not may_fetch:
            logger.info("hotkey %s: %s deferred to a later sync (download budget)", hotkey, _model(metadata))
            return SyncResult(hotkey, "deferred", "download_budget", "", model_id)
        try:
            info = self._repo_info(metadata.id, competition)
            if (full := self._no_room(info, ask=not evicted)) is not None:
                logger.info("hotkey %s: %s deferred: %s", hotkey, _model(metadata), full)
                return SyncResult(hotkey, "deferred", "disk", full, model_id, fetched=True)
            model_hash, weights, params = self._fetch(hotkey, metadata.id, competition)
        except (Verdict, FinetuneError, OSError) as exc:  # CallTimeoutError is an OSError
            return self._finish(hotkey, raw, metadata, as_verdict(exc), previous, fetched=True)
        except Exception as exc:  # a bug or a check's crash: fail with backoff, never refetch at once
            logger.exception("hotkey %s: unexpected error on %s", hotkey, _model(metadata))
            internal = Verdict("failed", "internal", f"{type(exc).__name__}: {exc}")
            return self._finish(hotkey, raw, metadata, internal, previous, fetched=True)
        ok = ModelRecord(hotkey, "ok", raw, metadata, "", "verified", model_hash, params)
        ok = dataclasses.replace(ok, weights_hash=weights, stored=self._manifest(hotkey, metadata.id))
        self._tracker.put(ok)
        logger.info("hotkey %s: %s downloaded and verified (%d parameters)", hotkey, _model(metadata), params)
        return SyncResult(hotkey, "ok", "", "verified", metadata.id, fetched=True)

    def _manifest(self, hotkey: str, mid: ModelId) -> tuple[tuple[str, int, int], ...]:
        try:
            return manifest(self._store.model_dir(hotkey, mid))
        except OSError as exc:  # deleted at once: the next pass finds it missing and downloads it again
            logger.warning("hotkey %s: cannot list the stored model: %s", hotkey, exc)
            return ()

    def _held(
        self, previous: ModelRecord | None, metadata: ModelMetadata, competition: Competition, block: int
    ) -> SyncResult | None:
        """Keep a hotkey's verified model while its new commitment is younger than the competition's
        evaluation delay (as taoverse's MetadataUpdater does): the new model cannot be judged yet, and
        switching at once would leave the hotkey with no model in the match, its score decaying until
        the new one is judged. ``None`` when the new commitment is to be synced now."""
        if previous is None or previous.status != "ok" or previous.metadata in (None, metadata):
            return None
        age = block - metadata.block
        if age >= competition.eval_delay_blocks:
            return None
        wait = f"{_model(metadata)} is {age} blocks old, needs {competition.eval_delay_blocks}"
        logger.info("hotkey %s: keeps %s until its new %s", previous.hotkey, _describe(previous), wait)
        return SyncResult(previous.hotkey, "deferred", "eval_delay", f"new commitment {wait}", metadata.id)

    def verify_stored(self, hotkey: str) -> bool:
        """Whether ``hotkey``'s model is in the store as it was verified, judged from its files' names,
        sizes and modification times (nothing is read: cheap enough before every evaluation). A deleted
        or damaged folder is removed and the model set to ``waiting`` (reason ``"damaged"``), so the
        next sync downloads it again; returns ``False`` then, and for a hotkey without a model."""
        record = self._tracker.get(hotkey)
        if record is None or record.status != "ok" or record.metadata is None:
            return False
        if self._intact(record):
            return True
        self._damaged(record)
        return False

    def _intact(self, record: ModelRecord) -> bool:
        if record.metadata is None:
            return False
        try:
            folder = self._store.model_dir(record.hotkey, record.metadata.id)
            if not folder.is_dir():
                return False
            return not record.stored or manifest(folder) == record.stored
        except (FinetuneError, OSError):
            return False

    def _damaged(self, record: ModelRecord) -> None:
        """Remove a stored folder that no longer matches what was verified and queue a download."""
        if record.metadata is None:
            return
        message = "the stored model folder was deleted or changed after it was verified"
        if self._tracker.set_status(
            record.hotkey, expected=record.metadata, status="waiting", reason="damaged", message=message
        ):
            what = _describe(record)
            logger.warning("hotkey %s: %s: %s; downloading it again", record.hotkey, what, message)
            try:
                shutil.rmtree(self._store.model_dir(record.hotkey, record.metadata.id), ignore_errors=True)
            except FinetuneError:
                pass

    def _rehash(self, record: ModelRecord) -> None:
        """Compute the tensor-content hash of a model stored before the tracker held one."""
        if record.metadata is None:
            return
        try:
            weights = digest_folder(self._store.model_dir(record.hotkey, record.metadata.id)).weights_hash
        except (FinetuneError, OSError, ValueError) as exc:
            logger.warning("hotkey %s: cannot hash the stored weights: %s", record.hotkey, exc)
            return
        current = self._tracker.get(record.hotkey)
        if current is not None and current.metadata == record.metadata and current.status == "ok":
            self._tracker.put(dataclasses.replace(current, weights_hash=weights))

    def _precheck(self, metadata: ModelMetadata, current_block: int) -> Competition:
        """The checks that need no hub: fields present, a pinned commit, competition active."""
        mid = metadata.id
        if mid.commit is None:
            raise Verdict("misconfigured", "no_commit", f"{mid.repo_id} names no commit")
        if mid.hash is None:
            raise Verdict("misconfigured", "no_hash", f"{mid.repo_id}@{mid.commit} names no hash")
        if not _COMMIT.fullmatch(mid.commit):
            problem = f"{mid.repo_id}@{mid.commit}: the commit must be a full 40-hex-digit commit id"
            raise Verdict("misconfigured", "commit", problem)
        competition = None
        if mid.competition_id is not None:
            competition = competition_at(mid.competition_id, current_block, schedule=self._schedule)
        if competition is None:
            problem = f"competition {mid.competition_id!r} is not active at block {current_block}"
            raise Verdict("rejected", "competition", problem)
        return competition

    def _repo_info(self, mid: ModelId, competition: Competition) -> RepoInfo:
        """The model file set's metadata, after the checker's look at the whole repository's (before any
        download: the checker judges the model file set, and names pickle weights left outside it)."""
        what = f"{mid.repo_id}@{mid.commit}"
        read_info = functools.partial(self._hub.repo_info, mid.repo_id, commit=mid.commit or "")
        timed = functools.partial(call_with_timeout, read_info, timeout_s=self._info_timeout_s, what=what)
        info = self._retrying(f"repo_info {what}", timed)
        self._checker.check_repo(info, competition)
        return model_file_info(info)

    def _no_room_for(self, evicted: ModelRecord) -> str | None:
        """Why an evicted model cannot come back yet, judged from the size it had (no hub call)."""
        if self._max_store_bytes is None:
            return None
        used, size = self._store.size(), sum(entry[1] for entry in evicted.stored)
        if used + size <= self._max_store_bytes:
            return None
        return f"{size} bytes when it was evicted, the store holds {used} of at most {self._max_store_bytes}"

    def _no_room(self, info: RepoInfo, *, ask: bool = True) -> str | None:
        """Why ``info``'s download must wait for the cleaner (``None``: it fits ``max_store_bytes``). With
        ``ask``, the cleaner is asked to make room for it; a model the cleaner evicted does not ask (it
        would evict another to come back, and so on), it comes back when room is free."""
        if self._max_store_bytes is None:
            return None
        used, size, limit = self._store.size(), info.total_size, self._max_store_bytes
        if used + size <= limit:
            return None
        if ask and size <= limit:  # the cleaner makes room for the largest deferred download
            self._store.wanted_bytes = max(self._store.wanted_bytes, size)
        return f"{size} bytes to download, the store holds {used} of at most {limit}"

    def _fetch(self, hotkey: str, mid: ModelId, competition: Competition) -> tuple[str, str, int]:
        """Download, verify and install; returns (plain hash, weights hash, parameters)."""
        final = self._store.model_dir(hotkey, mid)
        what = f"{mid.repo_id}@{mid.commit}"
        temp = self._retrying(f"download {what}", functools.partial(self._download_once, mid), timeouts=False)
        try:
            check_contained(temp)
            for extra in prune_to_model_files(temp):
                logger.warning("%s: the hub served %s, outside the model file set: deleted", what, extra)
            scan = self._checker.stream_scan()
            try:
                digest = digest_folder(temp, visitor=scan)  # one read of each file: both hashes, the scan
            except ValueError as exc:
                raise Verdict("rejected", "invalid_weights", f"{what}: {exc}") from exc
            plain, weights = digest.directory_hash, digest.weights_hash
            if mid.hash not in (plain, hash_with_hotkey(plain, hotkey)):
                problem = f"committed hash {mid.hash} is neither {plain} (what the hub serves) nor its salt"
                raise Verdict("rejected", "hash_mismatch", f"{problem} with hotkey {hotkey}")
            params = self._checker.check_folder(temp, competition, scan=scan)
            if final.exists():  # a leftover from before a restart: replace it with what was verified
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(temp, final)  # same filesystem: the folder appears whole or not at all
            os.utime(final)  # fresh mtime: the cleaner's grace period starts now
        except OSError as exc:
            raise Verdict("failed", "disk", f"cannot verify or store {what}: {exc}") from exc
        finally:
            self._release(temp)
        return plain, weights, params

    def _download_once(self, mid: ModelId) -> Path:
        """One download into a fresh temporary folder, in flight until :meth:`_fetch` releases it; a
        transfer the backstop gave up on stays in flight and releases its folder itself when it ends."""
        temp = self._store.new_temp_dir()
        state = {"done": False, "abandoned": False}
        with self._lock:
            self._in_flight.add(temp)

        def transfer() -> Path:
            try:
                return self._hub.download(
                    mid.repo_id, commit=mid.commit or "", dest=temp, allow_patterns=MODEL_FILE_PATTERNS
                )
            finally:
                with self._lock:
                    state["done"] = True
                    abandoned = state["abandoned"]
                if abandoned:
                    self._release(temp)

        try:
            what = f"download {mid.repo_id}@{mid.commit}"
            call_with_timeout(transfer, timeout_s=self._download_timeout_s, what=what)
        except BaseException:
            with self._lock:
                state["abandoned"] = not state["done"]
            if not state["abandoned"]:
                self._release(temp)
            raise
        return temp

    def _release(self, temp: Path) -> None:
        shutil.rmtree(temp, ignore_errors=True)
        with self._lock:
            self._in_flight.discard(temp)

    def _retrying(self, what: str, fn: Callable[[], T], *, timeouts: bool = True) -> T:
        """``fn()`` with up to ``attempts`` tries on transient hub errors (timeouts only if ``timeouts``);
        a missing repository and a full local disk are not retried now (the back-off retries them)."""
        retry_on: tuple[type[Exception], ...] = (HubError, CallTimeoutError) if timeouts else (HubError,)
        return retry(
            fn, what=what, attempts=self._attempts, retry_on=retry_on, wait_s=self._retry_wait_s,
            max_wait_s=math.inf, sleep=self._sleep,
            give_up=lambda exc: isinstance(exc, RepoNotFoundError) or disk_full(exc),
        )  # fmt: skip

    def _finish(
        self,
        hotkey: str,
        raw: tuple[str, int],
        metadata: ModelMetadata | None,
        verdict: Verdict,
        previous: ModelRecord | None,
        *,
        fetched: bool = False,
    ) -> SyncResult:
        """Record a non-ok verdict (with backoff for a failure) and log it."""
        failures, retry_at = 0, 0.0
        if verdict.status == "failed":
            repeated = previous is not None and previous.metadata == metadata and previous.status == "failed"
            failures = previous.failures + 1 if repeated and previous is not None else 1
            retry_at = self._clock() + min(self._backoff_s * 2 ** (failures - 1), self._max_backoff_s)
        status, reason, message = verdict.status, verdict.reason, verdict.message
        record = ModelRecord(
            hotkey, status, raw, metadata, reason, message, failures=failures, retry_at=retry_at
        )
        self._tracker.put(record)
        level = logging.INFO if status == "waiting" else logging.WARNING
        same = previous is not None and previous.metadata == metadata and previous.reason == reason
        if same and previous is not None and previous.status == status != "failed":
            level = logging.DEBUG  # the same verdict again (still waiting, still inactive): no log spam
        logger.log(level, "hotkey %s: %s %s (%s): %s", hotkey, _describe(record), status, reason, message)
        model_id = None if metadata is None else metadata.id
        return SyncResult(hotkey, status, reason, message, model_id, fetched)


def _model(metadata: ModelMetadata) -> str:
    return f"model {metadata.id.repo_id}@{metadata.id.commit} (block {metadata.block})"


def _describe(record: ModelRecord) -> str:
    if record.metadata is not None:
        return _model(record.metadata)
    data = "?" if record.commitment is None else record.commitment[0]
    return f"commitment {data[:140]!r}"
