"""The job queue's pipelining, in-process: a job's deferred part (writing files) overlaps the next job's
model work, yet every reply leaves in arrival order and still means "done". Events, not sleeps."""

from __future__ import annotations

import threading
from typing import Any

import msgspec
import pytest

from rpcworker.job import Deferred, Job, JobContext
from rpcworker.jobs import MIN_UNFINISHED, JobQueue
from rpcworker.wire.messages import PingResult
from tests.worker.job_log import WAIT_S, Log, drain


def _queue(log: Log) -> JobQueue:
    return JobQueue(lambda msg: None, log.on_done)


def test_a_deferred_write_overlaps_the_next_jobs_model_work_and_replies_keep_their_order() -> None:
    log = Log()
    second_started = threading.Event()

    def first(params: Any, ctx: JobContext) -> Deferred:
        def write() -> msgspec.Struct:
            assert second_started.wait(WAIT_S), "the next job did not start while this one was writing"
            log.add("first written")
            return PingResult()

        log.add("first model work")
        return Deferred(write)

    def second(params: Any, ctx: JobContext) -> msgspec.Struct:
        log.add("second model work")
        second_started.set()
        return PingResult()

    queue = _queue(log)
    queue.submit(Job(1, "reconstruct", None, first))
    queue.submit(Job(2, "generate_views", None, second))
    drain(queue)
    assert log.events == ["first model work", "second model work", "first written"]
    assert log.done == [(1, "ok"), (2, "ok")]  # the second finished first, and still replied second


def test_a_failed_write_fails_its_job_alone() -> None:
    log = Log()

    def broken(params: Any, ctx: JobContext) -> Deferred:
        def write() -> msgspec.Struct:
            raise OSError("disk full")

        return Deferred(write)

    queue = _queue(log)
    queue.submit(Job(1, "reconstruct", None, broken))
    queue.submit(Job(2, "reconstruct", None, lambda p, ctx: Deferred(PingResult)))
    drain(queue)
    assert log.done == [(1, "internal_error"), (2, "ok")]


def test_a_job_cancelled_before_its_write_writes_nothing() -> None:
    log = Log()
    wrote = []
    release = threading.Event()
    holder: list[Job] = []

    def hold(params: Any, ctx: JobContext) -> Deferred:
        def write() -> msgspec.Struct:
            assert release.wait(WAIT_S)
            return PingResult()

        return Deferred(write)

    def cancel_me(params: Any, ctx: JobContext) -> Deferred:
        holder[0].cancelled.set()  # cancelled after its model work, while the write waits its turn
        release.set()
        return Deferred(lambda: wrote.append(1) or PingResult())

    queue = _queue(log)
    job = Job(2, "reconstruct", None, cancel_me)
    holder.append(job)
    queue.submit(Job(1, "reconstruct", None, hold))
    queue.submit(job)
    drain(queue)
    assert log.done == [(1, "ok"), (2, "cancelled")] and wrote == []


@pytest.mark.parametrize("max_batch", [1, 3])
def test_the_executor_waits_when_too_many_writes_are_unfinished(max_batch: int) -> None:
    log = Log()
    release = threading.Event()
    queue = JobQueue(lambda msg: None, log.on_done, max_batch=max_batch)
    assert queue.max_unfinished == max(MIN_UNFINISHED, 2 * max_batch)
    ahead = queue.max_unfinished + 1  # jobs whose model work may run while the first write is held

    def job(params: int, ctx: JobContext) -> Deferred:
        if params == ahead:
            assert "written 0" in log.events, "the executor ran ahead of the finisher"
        if params == ahead - 1:
            release.set()

        def write() -> msgspec.Struct:
            assert release.wait(WAIT_S)
            log.add(f"written {params}")
            return PingResult()

        return Deferred(write)

    for i in range(ahead + 2):
        queue.submit(Job(i, "reconstruct", i, job))
    drain(queue)
    assert log.done == [(i, "ok") for i in range(ahead + 2)]
