"""What the in-process job-queue tests record: events, the thread each job ran on, and the replies in order."""

from __future__ import annotations

import threading
from typing import Any

import msgspec

from rpcworker.job import Deferred, Job, JobContext
from rpcworker.jobs import JobQueue
from rpcworker.wire.errors import RpcError
from rpcworker.wire.messages import PingResult

WAIT_S = 10.0


class Log:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.threads: dict[Any, str] = {}
        self.done: list[tuple[Any, str]] = []
        self._lock = threading.Lock()

    def add(self, event: str) -> None:
        with self._lock:
            self.events.append(event)

    def on_done(self, job: Job, result: msgspec.Struct | None, error: RpcError | None) -> None:
        assert not isinstance(result, Deferred)
        self.done.append((job.id, "ok" if error is None else error.name))

    def job(self, job_id: Any, method: str, body: Any = None, **kw: Any) -> Job:
        """A job that records its thread, then runs ``body`` (if any) and logs its start and end."""

        def run(params: Any, ctx: JobContext) -> msgspec.Struct | Deferred:
            self.threads[job_id] = threading.current_thread().name
            self.add(f"{job_id} start")
            result = body() if body is not None else None
            self.add(f"{job_id} end")
            return result if result is not None else PingResult()

        return Job(job_id, method, None, run, **kw)


def drain(queue: JobQueue) -> None:
    """Waits for every job to end, then for the queue's threads to stop."""
    assert queue.wait_idle(WAIT_S)
    queue.stop(WAIT_S)
    assert not queue.running
