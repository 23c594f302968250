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
  ``history_steps`` rows. ``scan_history(keys=...)`` is not used: it only returns rows holding *all* the
  keys, and no step holds all 256 uids.

A run whose history fails is skipped with a warning; when no run can be read, or nothing usable is left
after filtering, :class:`DataSourceError` is raised so the validator skips the step.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from constants import CORTEX_MAX_UIDS, CORTEX_WANDB_PROJECT, CORTEX_WANDB_RUN_TYPE
from finetune.data.filters import clean_sample
from finetune.data.protocol import Sample
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


class CortexSource:
    """The latest Cortex.t validator runs' samples, deduplicated, filtered, subsampled by seed."""

    def __init__(
        self,
        *,
        api_factory: ApiFactory | None = None,
        project: str = CORTEX_WANDB_PROJECT,
        run_type: str = CORTEX_WANDB_RUN_TYPE,
        latest_runs: int = 8,
        history_steps: int = 1,
        running_only: bool = True,
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
        if timeout_s <= 0 or deadline_s <= 0 or attempts < 1:
            raise ValueError("timeout_s and deadline_s must be > 0 and attempts >= 1")
        self.project = project
        self.run_type = run_type
        self.latest_runs = latest_runs
        self.history_steps = history_steps
        self.running_only = running_only
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
        """The wandb run filter (MongoDB syntax) selecting the validator runs."""
        conditions: list[dict[str, Any]] = [{"config.type": self.run_type}]
        if self.running_only:
            conditions.append({"state": "running"})
        return conditions[0] if len(conditions) == 1 else {"$and": conditions}

    def sample(self, n: int, *, seed: int) -> list[Sample]:
        """Up to ``n`` samples of the pool read from the latest runs, chosen by ``seed``, newest first."""
        if n <= 0:
            return []
        pool = self.read_pool()
        if len(pool) <= n:
            return pool
        chosen = sorted(random.Random(seed).sample(range(len(pool)), n))
        return [pool[i] for i in chosen]

    def read_pool(self) -> list[Sample]:
        """Every usable sample of the latest runs (newest run, newest step, lowest uid first)."""
        deadline = time.monotonic() + self.deadline_s
        api = self._call(self._shared_api, what="wandb.Api()", deadline=deadline)
        runs = self._call(
            lambda: self._list_runs(api), what=f"wandb runs of {self.project}", deadline=deadline
        )
        if not runs:
            raise DataSourceError(f"no {self.run_type} runs in wandb project {self.project}")

        pool: list[Sample] = []
        seen: set[str] = set()
        read = 0
        for run in runs:
            name = str(getattr(run, "id", run))
            if time.monotonic() >= deadline:
                logger.warning("cortex: deadline of %g s reached; %d runs read", self.deadline_s, read)
                break
            try:
                rows = self._call(
                    functools.partial(self._read_history, run),
                    what=f"history of run {name}",
                    deadline=deadline,
                )
            except DataSourceError as exc:
                logger.warning("cortex: skipping run %s: %s", name, exc)
                continue
            read += 1
            for row in sorted(rows, key=_step, reverse=True):
                for uid in range(self.max_uids):
                    cleaned = clean_sample(_field(row, "prompts", uid), _field(row, "responses", uid))
                    if cleaned is not None and cleaned[1] not in seen:
                        seen.add(cleaned[1])
                        pool.append(cleaned)
        if read == 0:
            raise DataSourceError(f"no run history of {self.project} could be read ({len(runs)} runs tried)")
        if not pool:
            raise DataSourceError(f"{read} runs of {self.project} hold no usable sample")
        logger.info("cortex: %d samples from %d runs", len(pool), read)
        return pool

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

    def _list_runs(self, api: Any) -> list[Any]:
        runs = api.runs(self.project, filters=self.filters, order="-created_at", per_page=self.latest_runs)
        return list(itertools.islice(runs, self.latest_runs))

    def _read_history(self, run: Any) -> list[Mapping[str, Any]]:
        last_step = int(run.lastHistoryStep)
        if last_step < 0:
            return []
        min_step = max(0, last_step + 1 - self.history_steps)
        scan = run.scan_history(
            min_step=min_step, max_step=last_step + 1, page_size=self.history_steps, use_cache=False
        )
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
