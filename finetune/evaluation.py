"""Crash-isolated evaluation: models are scored in worker processes, one per device.

A miner's model can crash the process that runs it (a CUDA device-side assert, an abort in a kernel,
an out-of-memory kill) or hang. So the validator never runs one in its own process: each device has a
worker (``multiprocessing`` spawn) that loads a model from disk, scores it on the task's samples with
the task's method (:mod:`finetune.tasks.dispatch`: response loss by default, text loss, multiple
choice, greedy generation) and answers. A worker that dies or passes its time limit is killed and
restarted; the model gets the method's failure value on every sample of that task (``inf`` for a
loss, ``nan`` for a score: it wins nothing there) and the step goes on, its other tasks included.
A generation stops by itself before the time limit (``time_limit_s``, by default 80% of it), so a slow
model keeps what it generated; one that hangs inside a forward is killed.

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

from constants.tasks import Method

logger = logging.getLogger(__name__)

DEFAULT_LOADER = "finetune.checks:load_model"

TokenSamples = Sequence[Any]
"""A task's samples as plain data, in the shape its method takes (:mod:`finetune.tasks.dispatch`):
``(token ids, prompt length)`` pairs for response loss."""

GENERATION_TIME_SHARE = 0.8
"""Share of the worker's time limit a generation may use before it stops by itself."""


@dataclass(frozen=True)
class EvalJob:
    """One model to evaluate: a key (the hotkey) and its folder on disk."""

    key: str
    path: Path


@dataclass(frozen=True)
class EvalResult:
    """One model's per-sample values on a task: ``losses`` are losses, or scores for the score methods
    (``nan`` for generation until its ``outputs``, the generated ids, are checked against the rules)."""

    key: str
    losses: list[float]
    error: str | None
    seconds: float
    outputs: list[list[int] | None] | None = None


def _resolve(dotted: str) -> Callable[..., Any]:
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker loads and scores models (the method and its samples come with each task)."""

    device: str
    dtype: str = "float32"
    loader: str = DEFAULT_LOADER
    token_budget: int | None = None
    loader_kwargs: tuple[tuple[str, Any], ...] = ()


def _worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """The worker process: ("samples", method, samples, options) sets the task, answered ("ready",);
    ("eval", key, path, next_path, expected) is answered ("result", key, values, outputs, error)."""
    import torch
    import transformers

    from finetune.tasks import dispatch

    transformers.utils.logging.disable_progress_bar()  # one bar per model load is noise in the logs
    loader = _resolve(spec.loader)
    loader_kwargs = dict(spec.loader_kwargs)
    device, token_budget = spec.device, spec.token_budget
    torch_dtype = getattr(torch, spec.dtype)
    method, options = Method.RESPONSE_LOSS, {}
    samples: list[Any] = []
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
            method, options = Method(message[1]), dict(message[3])
            try:
                samples = dispatch.prepare(method, message[2])
            except ValueError:  # the validator's own data: a bug, but it must cost only this task
                logger.exception("evaluation worker got malformed %s samples", method)
                samples = []
            conn.send(("ready",))
            continue
        _, key, path, next_path, expected = message
        if len(samples) != expected:  # never score against samples other than the step's
            failed = dispatch.failed_values(method, expected)
            conn.send(("result", key, failed, None, f"worker holds {len(samples)} samples"))
            continue
        try:
            future = prefetched.pop(path, None)
            model = future.result() if future is not None else load(path)
            prefetched.clear()
            if next_path is not None:
                prefetched[next_path] = pool.submit(load, next_path)
            model = model.to(device)
            values, outputs = dispatch.run(
                method, model, samples, device, token_budget=token_budget, options=options
            )
            conn.send(("result", key, values, outputs, None))
        except Exception as exc:  # noqa: BLE001 -- any failure of one model is reported, not fatal
            failed = dispatch.failed_values(method, len(samples))
            conn.send(("result", key, failed, None, f"{type(exc).__name__}: {exc}"))
        finally:
            model = None
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()


def _plain(method: Method, samples: TokenSamples) -> list[Any]:
    """A task's samples as plain python data (ints and lists) for the pipe, whatever they came as
    (tensors, ``finetune.tasks.choice.ChoiceQuestion``, ``finetune.tasks.generation.RulePrompt``)."""

    def ints(ids: Any) -> list[int]:
        flat = ids.reshape(-1).tolist() if hasattr(ids, "reshape") else ids
        return [int(x) for x in flat]

    if method is Method.RESPONSE_LOSS:
        return [(ints(ids), int(p)) for ids, p in samples]
    if method is Method.TEXT_LOSS:
        return [ints(ids) for ids in samples]
    if method is Method.MULTIPLE_CHOICE:
        questions = [(q.prompt, q.choices, q.answer) if hasattr(q, "choices") else q for q in samples]
        return [(ints(p), [ints(c) for c in cs], int(a)) for p, cs, a in questions]
    return [ints(getattr(s, "prompt", s)) for s in samples]


@dataclass(frozen=True)
class _Task:
    """One ``evaluate`` call's task as the workers get it: method, plain samples, options, limit."""

    method: Method
    samples: list[Any]
    options: tuple[tuple[str, Any], ...]
    timeout_s: float


def _failed(method: Method, count: int) -> list[float]:
    """What a model that could not be scored gets: ``inf`` losses, ``nan`` scores."""
    return [math.nan if method.higher_is_better else math.inf] * count


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
        method: Method | str = Method.RESPONSE_LOSS,
        options: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        on_result: Callable[[EvalResult], None] | None = None,
    ) -> dict[str, EvalResult]:
        """Every job's model scored on one task's ``samples`` with ``method`` (``options`` are the
        method's, ``timeout_s`` overrides the evaluator's limit per model for this call); a model that
        fails gets the method's failure value everywhere. ``on_result`` is called as each model
        finishes (progress display)."""
        method = Method(method)
        limit = self.timeout_s if timeout_s is None else timeout_s
        settings = dict(options or {})
        if method is Method.GENERATION_RULES:
            settings.setdefault("time_limit_s", GENERATION_TIME_SHARE * limit)
        task = _Task(method, _plain(method, samples), tuple(sorted(settings.items())), limit)
        shares = [list(jobs[i :: len(self._workers)]) for i in range(len(self._workers))]
        done = on_result or (lambda _: None)
        with self._lock, ThreadPoolExecutor(max_workers=len(self._workers)) as pool:
            parts = pool.map(
                self._run_on, self._workers, shares, [task] * len(self._workers), [done] * len(shares)
            )
            return {result.key: result for part in parts for result in part}

    def _send_samples(self, worker: _Worker, task: _Task) -> bool:
        message = ("samples", task.method.value, task.samples, task.options)
        answer = worker.request(message, timeout_s=self.startup_timeout_s)
        if isinstance(answer, str):
            logger.error("evaluation worker on %s did not start; restarting it", worker.device)
            worker.restart()
            return False
        return True

    def _run_on(
        self,
        worker: _Worker,
        jobs: list[EvalJob],
        task: _Task,
        done: Callable[[EvalResult], None],
    ) -> list[EvalResult]:
        count = len(task.samples)
        results: list[EvalResult] = []
        ready = False
        for index, job in enumerate(jobs):
            following = str(jobs[index + 1].path) if index + 1 < len(jobs) else None
            started = time.monotonic()
            answer: tuple[Any, ...] | str = "crashed"
            for prefetch in (following, None):
                if not ready:
                    ready = self._send_samples(worker, task)
                if not ready:
                    answer = "did not take the samples"  # nothing to evaluate against: inf, no eval
                    break
                message = ("eval", job.key, str(job.path), prefetch, count)
                answer = worker.request(message, timeout_s=task.timeout_s)
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
                    f" (limit {task.timeout_s:g} s)" if answer == "timeout" else ""
                )
                results.append(EvalResult(job.key, _failed(task.method, count), error, seconds))
            else:
                _, key, values, outputs, error = answer
                if len(values) != count or (outputs is not None and len(outputs) != count):
                    values, outputs = _failed(task.method, count), None
                    error = f"worker returned {len(values)} values"
                if error is not None:
                    logger.warning("model of %s scored nothing on %s: %s", key, task.method, error)
                results.append(EvalResult(key, [float(x) for x in values], error, seconds, outputs))
            done(results[-1])
        return results
