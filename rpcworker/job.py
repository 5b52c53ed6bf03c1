"""What one job is: a request's model work as the job queue runs it (rpcworker.jobs), the context a backend sees
while it runs, and the deferred rest that needs no model (writing its files)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .wire.envelopes import Notification, RequestId
from .wire.errors import Cancelled
from .wire.messages import ProgressParams


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
    side: bool = False
    """May run on the side lane, beside the main lane's work."""
    barrier: bool = False
    """Runs with no other job beside it (loading and unloading models)."""
    inline_bytes: int = 0
    """The bytes of its inline image, held while it waits in the queue."""
    internal: bool = False
    """The worker's own work, not a request (the switch to compiled views): not shown in ``busy`` or ``batch``."""


@dataclass
class Deferred:
    """What is left of a job once its model work is done; runs on the finisher thread and gives the result."""

    finish: Callable[[], msgspec.Struct]


BatchRunner = Callable[[Sequence[Any], Sequence[JobContext]], "list[msgspec.Struct | Deferred | BaseException]"]
"""Runs a batch's params, each with its own context; returns each job's result (or Deferred) or the exception it became."""
