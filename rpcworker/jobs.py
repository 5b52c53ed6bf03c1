"""The job queue: model work runs on one executor thread, in arrival order, one job or one batch at a time.

It knows nothing of envelopes or replies: the session submits jobs and is told when each ends, with its
result or the RpcError it became (whatever a backend raised, the worker keeps serving).

Dynamic batching: a job with a ``batch_key`` may take the jobs queued right behind it with the same key
(up to ``max_batch`` in all, waiting at most ``batch_wait_s`` for them to arrive) and run with them as
one batch. Only consecutive jobs join, so replies still leave in arrival order.

Pipelining: a job may end its model work with a `Deferred` (the rest needs no model: writing its files);
that part runs on a second thread, the finisher, while the executor starts the next job. Every job ends
through the finisher, in arrival order, so replies keep their order and a reply still means "written".
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .wire.errors import Cancelled, InternalError, OutOfMemory, RpcError
from .wire.messages import MAX_BATCH_LIMIT, Notification, ProgressParams, RequestId

log = logging.getLogger("rpcworker")

TRACEBACK_FRAMES = 8
TRACEBACK_CHARS = 4000
"""How much of an unexpected exception's traceback an internal_error carries."""


class JobContext:
    """The WorkContext a backend sees: progress goes out as notifications, cancel is checked on demand."""

    def __init__(self, job: Job, send: Callable[[msgspec.Struct], None]) -> None:
        self._job = job
        self._send = send

    def progress(self, stage: str, step: int, total: int, message: str = "") -> None:
        self._send(Notification("progress", ProgressParams(self._job.id, stage, step, total, message)))

    def check_cancelled(self) -> None:
        if self._job.cancelled.is_set():
            raise Cancelled(f"request {self._job.id} ({self._job.method}) was cancelled", {"id": self._job.id})


@dataclass
class Job:
    id: RequestId
    method: str
    params: Any
    run: Callable[[Any, JobContext], msgspec.Struct | Deferred]
    cancelled: threading.Event = field(default_factory=threading.Event)
    batch_key: Hashable | None = None
    """Jobs with equal keys may run together through ``run_batch``; None: always alone."""
    run_batch: BatchRunner | None = None


@dataclass
class Deferred:
    """What is left of a job once its model work is done; runs on the finisher thread and gives the result."""

    finish: Callable[[], msgspec.Struct]


BatchRunner = Callable[[Sequence[Any], Sequence[JobContext]], "list[msgspec.Struct | Deferred | BaseException]"]
"""Runs a batch's params, each with its own context; returns each job's result (or Deferred) or the exception it became."""
JobDone = Callable[[Job, "msgspec.Struct | None", "RpcError | None"], None]
MAX_BATCH_WAIT_S = 1.0
"""The longest ``--batch-wait-ms`` may make a job wait for company."""
MIN_UNFINISHED = 2
"""Jobs whose deferred part may wait for the finisher before the executor waits too (bounds the meshes held):
this many, or two batches' worth, so a batch's reconstructs never wait on each other's exports."""
Outcome = tuple["Job", "msgspec.Struct | Deferred | None", "RpcError | None"]


class JobQueue:
    """One executor thread for model work and one finisher thread, which runs ``on_done`` for each job in order."""

    def __init__(
        self, send: Callable[[msgspec.Struct], None], on_done: JobDone, *, max_batch: int = 1, batch_wait_s: float = 0.0
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH_LIMIT:
            raise ValueError(f"max_batch must be 1..{MAX_BATCH_LIMIT}, got {max_batch}")
        if not 0.0 <= batch_wait_s <= MAX_BATCH_WAIT_S:
            raise ValueError(f"batch wait must be 0..{MAX_BATCH_WAIT_S:g} s, got {batch_wait_s:g}")
        self._send = send
        self._on_done = on_done
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.max_unfinished = max(MIN_UNFINISHED, 2 * max_batch)
        self._jobs: deque[Job] = deque()
        self._closed = False
        self._current: list[Job] = []
        self._cond = threading.Condition()
        self._pending = 0
        self._finishing: deque[Outcome] = deque()
        self._executor_done = False
        self._thread = threading.Thread(target=self._run, name="model-executor", daemon=True)
        self._finisher = threading.Thread(target=self._finish_in_order, name="job-finisher", daemon=True)
        self._thread.start()
        self._finisher.start()

    @property
    def busy(self) -> str | None:
        """The method running now, or None."""
        current = self._current
        return current[0].method if current else None

    @property
    def batch(self) -> list[RequestId]:
        """The ids running now together (one id when a job runs alone; empty when idle)."""
        return [job.id for job in self._current]

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._jobs)

    @property
    def running(self) -> bool:
        """True while the executor or the finisher has not ended."""
        return self._thread.is_alive() or self._finisher.is_alive()

    def submit(self, job: Job) -> None:
        with self._cond:
            self._pending += 1
            self._jobs.append(job)
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Waits until every submitted job has ended; False if some are still there after ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, grace: float = 0.0) -> None:
        """Lets the executor end after the jobs before it; waits up to ``grace`` seconds for that."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if grace > 0:
            deadline = time.monotonic() + grace
            self._thread.join(grace)
            self._finisher.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> list[Job]:
        """The next job and the compatible ones queued right behind it; empty once stopped and drained."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._jobs) or self._closed)
            if not self._jobs:
                return []
            batch = [self._jobs.popleft()]
            key = batch[0].batch_key
            if key is not None and batch[0].run_batch is not None and self.max_batch > 1:
                deadline = time.monotonic() + self.batch_wait_s
                while len(batch) < self.max_batch:
                    if self._jobs:
                        if self._jobs[0].batch_key != key:
                            break  # only consecutive jobs join: replies keep arrival order
                        batch.append(self._jobs.popleft())
                        continue
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closed:
                        break
                    self._cond.wait(left)
            self._current = batch
            return batch

    def _run(self) -> None:
        try:
            while batch := self._take():
                outcomes = [self._execute(batch[0])] if len(batch) == 1 else self._execute_batch(batch)
                self._current = []
                with self._cond:
                    self._cond.wait_for(lambda: sum(isinstance(o[1], Deferred) for o in self._finishing) < self.max_unfinished)
                    self._finishing.extend((job, result, error) for job, (result, error) in zip(batch, outcomes, strict=True))
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._executor_done = True
                self._cond.notify_all()

    def _finish_in_order(self) -> None:
        """Runs deferred parts and hands every outcome to ``on_done``, one job at a time, in arrival order."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._finishing) or self._executor_done)
                if not self._finishing:
                    return
                job, result, error = self._finishing[0]
            if isinstance(result, Deferred):
                try:
                    JobContext(job, self._send).check_cancelled()
                    result = result.finish()
                except Exception as exc:  # a failed write fails its job only
                    result, error = None, _as_error(job, exc)
            try:
                self._on_done(job, result, error)
            finally:
                with self._cond:
                    self._finishing.popleft()
                    self._pending -= 1
                    self._cond.notify_all()

    def _execute_batch(self, batch: list[Job]) -> list[tuple[msgspec.Struct | Deferred | None, RpcError | None]]:
        runner = batch[0].run_batch
        assert runner is not None
        ctxs = [JobContext(job, self._send) for job in batch]
        try:
            outcomes = runner([job.params for job in batch], ctxs)
        except BaseException as exc:  # the whole batch failed: each job gets the error
            if not isinstance(exc, Exception):
                raise
            outcomes = [exc] * len(batch)
        if len(outcomes) != len(batch):
            outcomes = [RuntimeError(f"the batch runner gave {len(outcomes)} outcomes for {len(batch)} jobs")] * len(batch)
        return [
            (None, _as_error(job, outcome)) if isinstance(outcome, BaseException) else (outcome, None)
            for job, outcome in zip(batch, outcomes, strict=True)
        ]

    def _execute(self, job: Job) -> tuple[msgspec.Struct | Deferred | None, RpcError | None]:
        ctx = JobContext(job, self._send)
        try:
            ctx.check_cancelled()
            return job.run(job.params, ctx), None
        except Exception as exc:  # the worker must keep serving whatever a backend raises
            return None, _as_error(job, exc)


def _as_error(job: Job, exc: BaseException) -> RpcError:
    """The wire error an exception of ``job`` becomes."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, MemoryError):
        return OutOfMemory(f"out of host memory in {job.method}", {"device": "cpu", "detail": str(exc)})
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=TRACEBACK_FRAMES))
    log.error("%s failed:\n%s", job.method, text)
    return InternalError(
        f"{job.method} failed: {type(exc).__name__}: {exc}",
        {"type": type(exc).__name__, "traceback": text[-TRACEBACK_CHARS:]},
    )
