"""Samples from the prompts and responses that Cortex.t (SN18) validators log to Weights & Biases.

Cortex validators log one history row per step to runs of the project ``cortex-t/multi-modality`` whose
config has ``type == "validator"``; a row holds ``prompts.<uid>`` and ``responses.<uid>`` for the miners
(uids ``0..255``) they queried, besides ``_step``, ``_runtime``, ``_timestamp``.

wandb 0.31 has no anonymous reads: ``wandb.Api()`` without a key raises ``UsageError``, and on a
terminal it *prompts* for one (end-of-input then raises ``KeyboardInterrupt``, which would kill the
neuron). So the key is found when the source is built (``api_key=``, else ``WANDB_API_KEY``, else the
netrc entry that ``wandb login`` writes for the base URL), a missing one is a
:class:`~utilities.errors.ConfigError` at start, and the key is always passed as ``api_key=`` so wandb
never prompts. Authentication failures are not retried; one ``Api`` is built and reused.

The wandb 0.31 public API calls used (all of them under :func:`utilities.retry.retry_call`):

* ``wandb.Api(api_key=..., overrides={"base_url": ...}, timeout=<int seconds>)``: the timeout is always
  given, ``request_timeout_s`` (three quarters of ``timeout_s`` by default, so that wandb's own error
  arrives before our bound on the call; the library's default is 19 s per request, and constructing an
  ``Api`` with a bad key waits about that long);
* ``api.runs(project, filters={"$and": [{"config.type": "validator"}, {"state": "running"}]},
  order="-created_at", per_page=k)``: as the seed reads Cortex.t, only validator runs that are running
  now; a lazy paginator, newest runs first; only the first ``latest_runs`` are taken;
* ``run.lastHistoryStep`` (a GraphQL query) and
  ``run.scan_history(min_step=..., max_step=..., page_size=..., use_cache=False)``: the last
  ``history_steps`` rows, or, given a cut-off, pages read backwards from the last step until the
  ``history_steps`` newest rows at or before it are found. ``scan_history(keys=...)`` is not used: it only
  returns rows holding *all* the keys, and no step holds all 256 uids.

Validators stepping at different moments of one sync window must draw the same samples, although
Cortex.t keeps logging. So ``sample(n, seed=..., cutoff=...)`` takes the Unix time of the sync block: a
run counts when it was created by then and its last heartbeat is within ``lookback_s`` of it or later
(whatever its state now: a run that stops after the cut-off stays in, one that stopped long before or
started since takes no slot of ``latest_runs``); only rows whose ``_timestamp`` lies in
``(cutoff - lookback_s, cutoff]`` are kept; candidates are keyed by (run id, step, uid) and ranked by a
hash of (seed, key), and the ``n`` lowest ranks are drawn. A row that appears late adds only its own
candidates, so no other pick changes. Without a cut-off the last rows of each run are read, as the seed.

A run whose history fails is skipped with a warning; when no run can be read, or nothing usable is left
after filtering, :class:`DataSourceError` is raised so the validator skips the step.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from constants import CORTEX_MAX_UIDS, CORTEX_WANDB_PROJECT, CORTEX_WANDB_RUN_TYPE
from finetune.data.filters import clean_sample
from finetune.data.protocol import Sample
from finetune.data.seeding import derive_seed
from utilities.errors import ConfigError, DataSourceError
from utilities.retry import CallTimeoutError, retry_call

logger = logging.getLogger(__name__)

ApiFactory = Callable[..., Any]
"""Called as ``factory(overrides={...}, timeout=<int>)`` (plus ``api_key=`` when one is configured);
returns an object with the ``wandb.Api`` methods used here. ``wandb.Api`` itself by default."""

BASE_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (CallTimeoutError, ConnectionError, OSError)
DEFAULT_WANDB_BASE_URL = "https://api.wandb.ai"
_AUTH_STATUS = frozenset({401, 403})


class _NotRetried(Exception):
    """An authentication failure: another attempt with the same key cannot succeed."""


def find_wandb_key(base_url: str | None = None) -> str | None:
    """The wandb API key: ``WANDB_API_KEY``, else the netrc entry for ``base_url`` (``wandb login``
    writes it; ``NETRC`` names another file); ``None`` when there is none."""
    key = os.environ.get("WANDB_API_KEY", "").strip()
    if key:
        return key
    from wandb.errors import AuthenticationError
    from wandb.sdk.lib.wbauth import read_netrc_auth

    try:
        return read_netrc_auth(host=base_url or DEFAULT_WANDB_BASE_URL) or None
    except AuthenticationError as exc:
        raise ConfigError(f"the wandb key in the netrc file is malformed: {exc}") from exc


def _is_auth_error(exc: BaseException) -> bool:
    """wandb's own authentication errors, and a request the server refused with 401/403."""
    from wandb.errors import AuthenticationError, UsageError

    if isinstance(exc, AuthenticationError | UsageError):
        return True
    for inner in (exc, getattr(exc, "exc", None)):
        status = getattr(getattr(inner, "response", None), "status_code", None)
        if status in _AUTH_STATUS:
            return True
    return False


def _wandb_api(**kwargs: Any) -> Any:
    import wandb

    return wandb.Api(**kwargs)


def _wandb_transient_errors() -> tuple[type[BaseException], ...]:
    """Transport failures of wandb 0.31: ``CommError`` (normalized) and the raw ``WandbApiFailedError``."""
    from wandb.errors import CommError

    errors: tuple[type[BaseException], ...] = (*BASE_TRANSIENT_ERRORS, CommError)
    try:
        from wandb.sdk.lib.service.service_connection import WandbApiFailedError
    except ImportError:
        return errors
    return (*errors, WandbApiFailedError)


def _field(row: Mapping[str, Any], name: str, uid: int) -> object:
    """``row["prompts.12"]``, or ``row["prompts"]["12"]`` for a row whose dicts were not flattened."""
    key = f"{name}.{uid}"
    if key in row:
        return row[key]
    nested = row.get(name)
    if isinstance(nested, Mapping):
        return nested.get(str(uid))
    return None


def _step(row: Mapping[str, Any]) -> int:
    step = row.get("_step")
    return step if isinstance(step, int) else -1


def _timestamp(row: Mapping[str, Any]) -> float | None:
    """The row's ``_timestamp`` (Unix seconds, as wandb logs it), ``None`` when absent or not a number."""
    value = row.get("_timestamp")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _created_at(run: Any) -> float | None:
    """When the run was created (its ISO ``created_at``), ``None`` if unknown."""
    return _iso_time(getattr(run, "created_at", None))


def _iso_time(text: object) -> float | None:
    """Unix seconds of an ISO time as wandb gives it (UTC when no zone is given); ``None`` if not one."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class Candidate(NamedTuple):
    """One usable sample and where it was logged: ``(run, step, uid)`` is its stable key."""

    run: str
    step: int
    uid: int
    sample: Sample


class CortexSource:
    """The latest Cortex.t validator runs' samples, deduplicated, filtered, drawn by a hash of the seed.

    With ``cutoff=`` (the sync block's Unix time) a draw depends only on the seed and on what was logged
    at or before the cut-off within ``lookback_s``: later rows and later runs change nothing.
    """

    def __init__(
        self,
        *,
        api_factory: ApiFactory | None = None,
        project: str = CORTEX_WANDB_PROJECT,
        run_type: str = CORTEX_WANDB_RUN_TYPE,
        latest_runs: int = 8,
        history_steps: int = 1,
        running_only: bool = True,
        lookback_s: float = 3600.0,
        scan_page_steps: int = 32,
        max_scan_steps: int = 2048,
        max_skipped_runs: int = 32,
        max_uids: int = CORTEX_MAX_UIDS,
        timeout_s: float = 30.0,
        request_timeout_s: float | None = None,
        attempts: int = 3,
        retry_wait_s: float = 1.0,
        deadline_s: float = 300.0,
        base_url: str | None = None,
        api_key: str | None = None,
        transient_errors: tuple[type[BaseException], ...] | None = None,
    ) -> None:
        if latest_runs < 1 or history_steps < 1 or max_uids < 1:
            raise ValueError("latest_runs, history_steps and max_uids must be >= 1")
        if not lookback_s > 0 or scan_page_steps < 1 or max_scan_steps < 1 or max_skipped_runs < 0:
            raise ValueError(
                "lookback_s must be > 0, scan_page_steps and max_scan_steps >= 1, max_skipped_runs >= 0"
            )
        if timeout_s <= 0 or deadline_s <= 0 or attempts < 1:
            raise ValueError("timeout_s and deadline_s must be > 0 and attempts >= 1")
        self.project = project
        self.run_type = run_type
        self.latest_runs = latest_runs
        self.history_steps = history_steps
        self.running_only = running_only
        self.lookback_s = lookback_s
        self.scan_page_steps = scan_page_steps
        self.max_scan_steps = max_scan_steps
        self.max_skipped_runs = max_skipped_runs
        self.max_uids = max_uids
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s if request_timeout_s is not None else 0.75 * timeout_s
        self.attempts = attempts
        self.retry_wait_s = retry_wait_s
        self.deadline_s = deadline_s
        self.base_url = base_url
        self._api_key = api_key or find_wandb_key(base_url)
        if api_factory is None and not self._api_key:
            raise ConfigError(
                f"--data cortex reads Cortex.t ({project}) from wandb, which has no anonymous reads: set "
                "WANDB_API_KEY or run `wandb login` (any free account's key works)"
            )
        self._api_factory = api_factory if api_factory is not None else _wandb_api
        self._api: Any = None
        self._api_lock = threading.Lock()
        self._transient_errors = transient_errors
        if transient_errors is None and api_factory is not None:
            self._transient_errors = BASE_TRANSIENT_ERRORS

    def __repr__(self) -> str:
        return f"CortexSource(project={self.project!r}, run_type={self.run_type!r}, runs={self.latest_runs})"

    @property
    def filters(self) -> dict[str, Any]:
        """The wandb run filter (MongoDB syntax) selecting the validator runs (without a cut-off)."""
        return self.filters_for(None)

    def filters_for(self, cutoff: float | None) -> dict[str, Any]:
        """The run filter of a read; with a cut-off the run's state is not asked for (a run that stops
        after the cut-off must stay in), :meth:`_was_running` decides instead."""
        conditions: list[dict[str, Any]] = [{"config.type": self.run_type}]
        if self.running_only and cutoff is None:
            conditions.append({"state": "running"})
        return conditions[0] if len(conditions) == 1 else {"$and": conditions}

    def _was_running(self, run: Any, cutoff: float) -> bool:
        """Whether the run had started by ``cutoff`` and, with ``running_only``, was still alive within
        ``lookback_s`` of it (its last heartbeat is no older); a run without a heartbeat time counts by
        its state now."""
        created = _created_at(run)
        if created is not None and created > cutoff:
            return False
        if not self.running_only:
            return True
        heartbeat = _iso_time(getattr(run, "heartbeat_at", None))
        if heartbeat is None:
            return getattr(run, "state", None) == "running"
        return heartbeat > cutoff - self.lookback_s

    def sample(self, n: int, *, seed: int, cutoff: float | None = None) -> list[Sample]:
        """Up to ``n`` samples ranked by a hash of (``seed``, run, step, uid), in (run, step, uid) order.

        ``cutoff`` (Unix seconds; the sync block's time) keeps only what was logged at or before it and
        within ``lookback_s`` of it, so that reads at different moments give the same samples.
        """
        if n <= 0:
            return []
        pool = self.read_candidates(cutoff=cutoff)
        chosen = sorted(pool, key=lambda c: derive_seed(seed, "cortex", c.run, str(c.step), str(c.uid)))
        return [c.sample for c in sorted(chosen[:n], key=lambda c: (c.run, c.step, c.uid))]

    def read_pool(self, *, cutoff: float | None = None) -> list[Sample]:
        """Every usable sample (run id, step, uid order), deduplicated by response."""
        return [c.sample for c in self.read_candidates(cutoff=cutoff)]

    def read_candidates(self, *, cutoff: float | None = None) -> list[Candidate]:
        """Every usable sample of the latest runs with its key, in (run id, step, uid) order; of samples
        with the same response only the first in that order is kept."""
        if cutoff is not None and not math.isfinite(cutoff):
            raise ValueError(f"cutoff must be a finite Unix time, got {cutoff}")
        deadline = time.monotonic() + self.deadline_s
        api = self._call(self._shared_api, what="wandb.Api()", deadline=deadline)
        runs = self._call(
            lambda: self._list_runs(api, cutoff=cutoff),
            what=f"wandb runs of {self.project}",
            deadline=deadline,
        )
        if not runs:
            raise DataSourceError(f"no {self.run_type} runs in wandb project {self.project}")

        rows_of: dict[str, list[Mapping[str, Any]]] = {}
        for run in runs:
            name = str(getattr(run, "id", run))
            if time.monotonic() >= deadline:
                logger.warning(
                    "cortex: deadline of %g s reached; %d runs read", self.deadline_s, len(rows_of)
                )
                break
            try:
                rows_of[name] = self._call(
                    functools.partial(self._read_history, run, cutoff=cutoff),
                    what=f"history of run {name}",
                    deadline=deadline,
                )
            except DataSourceError as exc:
                logger.warning("cortex: skipping run %s: %s", name, exc)
        if not rows_of:
            raise DataSourceError(f"no run history of {self.project} could be read ({len(runs)} runs tried)")
        pool = list(self._candidates(rows_of))
        if not pool:
            raise DataSourceError(f"{len(rows_of)} runs of {self.project} hold no usable sample")
        logger.info("cortex: %d samples from %d runs (cut-off %s)", len(pool), len(rows_of), cutoff)
        return pool

    def _candidates(self, rows_of: Mapping[str, list[Mapping[str, Any]]]) -> Iterator[Candidate]:
        seen: set[str] = set()
        for name in sorted(rows_of):
            for row in sorted(rows_of[name], key=_step):
                for uid in range(self.max_uids):
                    cleaned = clean_sample(_field(row, "prompts", uid), _field(row, "responses", uid))
                    if cleaned is not None and cleaned[1] not in seen:
                        seen.add(cleaned[1])
                        yield Candidate(name, _step(row), uid, cleaned)

    def _shared_api(self) -> Any:
        """The one ``wandb.Api`` of this source, built on first use (each build verifies the key)."""
        with self._api_lock:
            if self._api is None:
                self._api = self._make_api()
            return self._api

    def _make_api(self) -> Any:
        # wandb's own per-request timeout stays under our bound on the whole call, so that its own
        # error (an authentication failure, say) arrives before our backstop gives up on it
        kwargs: dict[str, Any] = {"timeout": max(1, math.floor(self.request_timeout_s))}
        kwargs["overrides"] = {"base_url": self.base_url} if self.base_url else {}
        if self._api_key:
            kwargs["api_key"] = self._api_key
        return self._api_factory(**kwargs)

    def _list_runs(self, api: Any, *, cutoff: float | None = None) -> list[Any]:
        """The newest ``latest_runs`` runs; with a cut-off, those running at it (:meth:`_was_running`),
        passing over at most ``max_skipped_runs`` others, so that runs started since take no slot."""
        runs = api.runs(
            self.project, filters=self.filters_for(cutoff), order="-created_at", per_page=self.latest_runs
        )
        if cutoff is None:
            return list(itertools.islice(runs, self.latest_runs))
        kept: list[Any] = []
        for run in itertools.islice(runs, self.latest_runs + self.max_skipped_runs):
            if self._was_running(run, cutoff):
                kept.append(run)
                if len(kept) == self.latest_runs:
                    break
        return kept

    def _read_history(self, run: Any, *, cutoff: float | None = None) -> list[Mapping[str, Any]]:
        """The last ``history_steps`` rows; given ``cutoff``, the last ``history_steps`` rows logged at or
        before it and after ``cutoff - lookback_s``, read backwards a page at a time from the last step
        (at most ``max_scan_steps`` steps)."""
        last_step = int(run.lastHistoryStep)
        if last_step < 0:
            return []
        if cutoff is None:
            return self._scan(run, max(0, last_step + 1 - self.history_steps), last_step + 1)
        oldest = cutoff - self.lookback_s
        kept: list[Mapping[str, Any]] = []
        stop = last_step + 1
        floor = max(0, stop - self.max_scan_steps)
        while stop > floor and len(kept) < self.history_steps:
            start = max(floor, stop - self.scan_page_steps)
            page = sorted(self._scan(run, start, stop), key=_step, reverse=True)
            for row in page:
                when = _timestamp(row)
                if when is None or when > cutoff:
                    continue
                if when <= oldest:
                    return kept
                kept.append(row)
                if len(kept) == self.history_steps:
                    return kept
            stop = start
        return kept

    def _scan(self, run: Any, start: int, stop: int) -> list[Mapping[str, Any]]:
        scan = run.scan_history(min_step=start, max_step=stop, page_size=stop - start, use_cache=False)
        return [row for row in scan if isinstance(row, Mapping)]

    def _call(self, fn: Callable[[], Any], *, what: str, deadline: float) -> Any:
        """``fn()`` under a timeout (never past ``deadline``) with bounded retries; any failure is a
        :class:`DataSourceError`."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DataSourceError(f"{what}: no time left of the {self.deadline_s:g} s deadline")
        if self._transient_errors is None:
            self._transient_errors = _wandb_transient_errors()

        def guarded() -> Any:
            try:
                return fn()
            except Exception as exc:  # classified here: wandb's error types vary by version
                if _is_auth_error(exc):
                    raise _NotRetried(f"wandb refused the key: {type(exc).__name__}: {exc}") from exc
                raise

        try:
            return retry_call(
                guarded,
                what=what,
                timeout_s=min(self.timeout_s, remaining),
                attempts=self.attempts,
                retry_on=self._transient_errors,
                wait_s=self.retry_wait_s,
                max_wait_s=max(self.retry_wait_s, 10.0),
            )
        except _NotRetried as exc:
            raise DataSourceError(f"{what} failed: {exc}") from exc.__cause__
        except Exception as exc:  # any wandb failure (its error types vary by version) ends the same way
            raise DataSourceError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
