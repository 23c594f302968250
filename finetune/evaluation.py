"""Crash-isolated evaluation: models are scored in worker processes, one per device.

A miner's model can crash the process that runs it (a CUDA device-side assert, an abort in a kernel,
an out-of-memory kill) or hang. So the validator never runs one in its own process: each device has a
worker (``multiprocessing`` spawn) that loads a model from disk, computes its per-sample losses with
:func:`finetune.losses.compute_losses` and answers. A worker that dies or passes its time limit is
killed and restarted; the model scores ``inf`` on every sample and the step goes on.

While a model is evaluated the worker reads the next one from disk into host memory on a thread
(prefetch), so at most one model is on the device and one more is in host memory.

Messages between the validator and its own workers use ``multiprocessing`` pipes. Only data the
validator made crosses them (sample token ids, paths, floats); miners' files are only ever read by
the worker through :func:`finetune.checks.load_model` (safetensors only).
"""

from __future__ import annotations

import gc
import importlib
import logging
import math
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_LOADER = "finetune.checks:load_model"

TokenSamples = Sequence[tuple[Sequence[int], int]]
"""Samples as plain data: (token ids, prompt length)."""


@dataclass(frozen=True)
class EvalJob:
    """One model to evaluate: a key (the hotkey) and its folder on disk."""

    key: str
    path: Path


@dataclass(frozen=True)
class EvalResult:
    key: str
    losses: list[float]
    error: str | None
    seconds: float


def _resolve(dotted: str) -> Callable[..., Any]:
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker loads and scores models."""

    device: str
    dtype: str = "float32"
    loader: str = DEFAULT_LOADER
    token_budget: int | None = None
    loader_kwargs: tuple[tuple[str, Any], ...] = ()


def _worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """The worker process: answer ("eval", key, path, next_path) with ("result", key, losses)."""
    import torch
    import transformers

    from finetune.losses import compute_losses

    transformers.utils.logging.disable_progress_bar()  # one bar per model load is noise in the logs
    loader = _resolve(spec.loader)
    loader_kwargs = dict(spec.loader_kwargs)
    device, token_budget = spec.device, spec.token_budget
    torch_dtype = getattr(torch, spec.dtype)
    samples: list[tuple[torch.Tensor, int]] = []
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
    prefetched: dict[str, Any] = {}

    def load(path: str) -> Any:
        return loader(Path(path), device="cpu", dtype=torch_dtype, **loader_kwargs)

    while True:
        message = conn.recv()
        kind = message[0]
        if kind == "stop":
            return
        if kind == "samples":
            samples = [(torch.tensor([list(ids)], dtype=torch.long), int(p)) for ids, p in message[1]]
            conn.send(("ready",))
            continue
        _, key, path, next_path, expected = message
        if len(samples) != expected:  # never score against samples other than the step's
            conn.send(("result", key, [math.inf] * expected, f"worker holds {len(samples)} samples"))
            continue
        try:
            future = prefetched.pop(path, None)
            model = future.result() if future is not None else load(path)
            prefetched.clear()
            if next_path is not None:
                prefetched[next_path] = pool.submit(load, next_path)
            model = model.to(device)
            losses = compute_losses(model, samples, device, token_budget=token_budget)
            conn.send(("result", key, losses, None))
        except Exception as exc:  # noqa: BLE001 -- any failure of one model is reported, not fatal
            conn.send(("result", key, [math.inf] * len(samples), f"{type(exc).__name__}: {exc}"))
        finally:
            model = None
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()


class _Worker:
    """The validator's handle on one worker process."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.device = spec.device
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self.restarts = 0

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(
            target=_worker_main, args=(child, self.spec), name=f"eval-{self.device}", daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent

    def stop(self) -> None:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            try:
                self._conn.send(("stop",))
                self._process.join(timeout=5)
            except (OSError, EOFError):
                pass
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._process = None
        self._conn = None

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    def request(self, message: tuple[Any, ...], *, timeout_s: float) -> tuple[Any, ...] | str:
        """Send ``message`` and wait for the answer; ``"crashed"`` if the worker died, ``"timeout"``
        if it did not answer within ``timeout_s``."""
        if self._process is None:
            self.start()
        elif not self._process.is_alive():
            self.restart()
        conn, process = self._conn, self._process
        if conn is None or process is None:
            return "crashed"
        try:
            conn.send(message)
            if conn.poll(timeout_s):
                answer: tuple[Any, ...] = conn.recv()
                return answer
        except (OSError, EOFError):
            return "crashed"
        process.join(timeout=0.1)
        return "timeout" if process.is_alive() else "crashed"


class Evaluator:
    """Scores models on the same samples, one worker process per device, crash-isolated.

    ``devices`` e.g. ``["cpu"]`` or ``["cuda:0", "cuda:1"]``: jobs are spread over the devices and the
    results do not depend on how. ``loader`` names the function loading a checked model folder
    (``module:function``, resolved in the worker; tests inject misbehaving ones); ``loader_kwargs``
    are passed to it (e.g. ``attn_implementation``).
    """

    def __init__(
        self,
        devices: Sequence[str],
        *,
        dtype: str = "float32",
        timeout_s: float = 600.0,
        startup_timeout_s: float = 120.0,
        token_budget: int | None = None,
        loader: str = DEFAULT_LOADER,
        loader_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not devices:
            raise ValueError("the evaluator needs at least one device")
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        extra = tuple(sorted((loader_kwargs or {}).items()))
        self._workers = [_Worker(WorkerSpec(d, dtype, loader, token_budget, extra)) for d in devices]
        self._lock = threading.Lock()

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self._workers)

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def evaluate(
        self,
        jobs: Sequence[EvalJob],
        samples: TokenSamples,
        *,
        on_result: Callable[[EvalResult], None] | None = None,
    ) -> dict[str, EvalResult]:
        """Losses of every job's model on ``samples``; a model that fails scores ``inf`` everywhere.
        ``on_result`` is called as each model finishes (progress display)."""
        plain = [(list(map(int, ids)), int(p)) for ids, p in samples]
        shares = [list(jobs[i :: len(self._workers)]) for i in range(len(self._workers))]
        done = on_result or (lambda _: None)
        with self._lock, ThreadPoolExecutor(max_workers=len(self._workers)) as pool:
            parts = pool.map(
                self._run_on, self._workers, shares, [plain] * len(self._workers), [done] * len(shares)
            )
            return {result.key: result for part in parts for result in part}

    def _send_samples(self, worker: _Worker, samples: list[tuple[list[int], int]]) -> bool:
        answer = worker.request(("samples", samples), timeout_s=self.startup_timeout_s)
        if isinstance(answer, str):
            logger.error("evaluation worker on %s did not start; restarting it", worker.device)
            worker.restart()
            return False
        return True

    def _run_on(
        self,
        worker: _Worker,
        jobs: list[EvalJob],
        samples: list[tuple[list[int], int]],
        done: Callable[[EvalResult], None],
    ) -> list[EvalResult]:
        results: list[EvalResult] = []
        ready = False
        for index, job in enumerate(jobs):
            following = str(jobs[index + 1].path) if index + 1 < len(jobs) else None
            started = time.monotonic()
            answer: tuple[Any, ...] | str = "crashed"
            for prefetch in (following, None):
                if not ready:
                    ready = self._send_samples(worker, samples)
                if not ready:
                    answer = "did not take the samples"  # nothing to evaluate against: inf, no eval
                    break
                message = ("eval", job.key, str(job.path), prefetch, len(samples))
                answer = worker.request(message, timeout_s=self.timeout_s)
                if not isinstance(answer, str):
                    break
                logger.warning(
                    "evaluation worker on %s %s on the model of %s; restarting it",
                    worker.device,
                    "passed its time limit" if answer == "timeout" else "crashed",
                    job.key,
                )
                worker.restart()
                ready = False
                # A crash while the next model was being read may be that model's fault: evaluate
                # this one once more without prefetching. A timeout is this model's own.
                if answer == "timeout" or prefetch is None:
                    break
            seconds = time.monotonic() - started
            if isinstance(answer, str):
                error = f"worker on {worker.device} {answer}" + (
                    f" (limit {self.timeout_s:g} s)" if answer == "timeout" else ""
                )
                results.append(EvalResult(job.key, [math.inf] * len(samples), error, seconds))
            else:
                _, key, losses, error = answer
                if len(losses) != len(samples):
                    losses, error = [math.inf] * len(samples), f"worker returned {len(losses)} losses"
                if error is not None:
                    logger.warning("model of %s scored inf: %s", key, error)
                results.append(EvalResult(key, [float(x) for x in losses], error, seconds))
            done(results[-1])
        return results
