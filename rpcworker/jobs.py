"""The job queue: model work runs on one executor thread, one job at a time, in arrival order.

It knows nothing of envelopes or replies: the session submits jobs and is told when each ends, with its
result or the RpcError it became (whatever a backend raised, the worker keeps serving).
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .wire.errors import Cancelled, InternalError, OutOfMemory, RpcError
from .wire.messages import Notification, ProgressParams, RequestId

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
    run: Callable[[Any, JobContext], msgspec.Struct]
    cancelled: threading.Event = field(default_factory=threading.Event)


JobDone = Callable[[Job, "msgspec.Struct | None", "RpcError | None"], None]


class JobQueue:
    """One executor thread. ``on_done`` runs on it after each job, before the next one starts."""

    def __init__(self, send: Callable[[msgspec.Struct], None], on_done: JobDone) -> None:
        self._send = send
        self._on_done = on_done
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._current: Job | None = None
        self._idle = threading.Condition()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name="model-executor", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> str | None:
        """The method running now, or None."""
        current = self._current
        return current.method if current is not None else None

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        """True while the executor thread has not ended."""
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(job)

    def wait_idle(self, timeout: float) -> bool:
        """Waits until every submitted job has ended; False if some are still there after ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, grace: float = 0.0) -> None:
        """Lets the executor end after the jobs before it; waits up to ``grace`` seconds for that."""
        self._queue.put(None)
        if grace > 0:
            self._thread.join(grace)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            self._current = job
            result, error = self._execute(job)
            self._current = None
            try:
                self._on_done(job, result, error)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _execute(self, job: Job) -> tuple[msgspec.Struct | None, RpcError | None]:
        ctx = JobContext(job, self._send)
        try:
            ctx.check_cancelled()
            return job.run(job.params, ctx), None
        except RpcError as err:
            return None, err
        except MemoryError as exc:
            return None, OutOfMemory(f"out of host memory in {job.method}", {"device": "cpu", "detail": str(exc)})
        except Exception as exc:  # the worker must keep serving whatever a backend raises
            log.error("%s failed:\n%s", job.method, traceback.format_exc())
            return None, InternalError(
                f"{job.method} failed: {type(exc).__name__}: {exc}",
                {"type": type(exc).__name__, "traceback": traceback.format_exc(limit=TRACEBACK_FRAMES)[-TRACEBACK_CHARS:]},
            )
