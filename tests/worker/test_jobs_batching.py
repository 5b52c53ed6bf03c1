"""The job queue's dynamic batching, in-process: who joins a batch, in what order replies go, what errors do.

A blocker job holds the executor on an event while the others are queued, so every batch is formed
from jobs already waiting (no timing involved)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from rpcworker.job import Job, JobContext
from rpcworker.jobs import JobQueue
from rpcworker.wire.errors import InternalError, RpcError
from rpcworker.wire.messages import PingResult

WAIT_S = 10.0


class Recorder:
    """Runs jobs and batches, recording which params ran together; param "boom" fails that job alone."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.done: list[tuple[Any, str]] = []
        self.release = threading.Event()

    def run(self, params: Any, ctx: JobContext) -> msgspec.Struct:
        if params == "blocker":
            assert self.release.wait(WAIT_S)
        self.batches.append([params])
        return PingResult()

    def run_batch(self, batch: Sequence[Any], ctxs: Sequence[JobContext]) -> list[msgspec.Struct | BaseException]:
        self.batches.append(list(batch))
        return [InternalError("boom", {}) if p == "boom" else PingResult() for p in batch]

    def on_done(self, job: Job, result: msgspec.Struct | None, error: RpcError | None) -> None:
        self.done.append((job.params, "ok" if error is None else error.name))


def _job(rec: Recorder, name: Any, key: Any = "k") -> Job:
    return Job(name, "generate_views", name, rec.run, batch_key=key, run_batch=rec.run_batch)


def _run(jobs: list[Job], rec: Recorder, max_batch: int) -> None:
    queue = JobQueue(lambda msg: None, rec.on_done, max_batch=max_batch)
    queue.submit(Job("blocker", "load", "blocker", rec.run))
    for job in jobs:
        queue.submit(job)
    rec.release.set()
    assert queue.wait_idle(WAIT_S)
    queue.stop(WAIT_S)


def test_consecutive_compatible_jobs_join_up_to_the_limit_and_replies_keep_arrival_order() -> None:
    rec = Recorder()
    jobs = [_job(rec, "a"), _job(rec, "b"), _job(rec, "c"), _job(rec, "d"), _job(rec, "x", key="other"), _job(rec, "e")]
    _run(jobs, rec, max_batch=3)
    assert rec.batches == [["blocker"], ["a", "b", "c"], ["d"], ["x"], ["e"]]
    assert [params for params, _ in rec.done] == ["blocker", "a", "b", "c", "d", "x", "e"]


def test_jobs_without_a_key_and_a_limit_of_one_never_batch() -> None:
    rec = Recorder()
    _run([_job(rec, "a", key=None), _job(rec, "b", key=None)], rec, max_batch=4)
    other = Recorder()
    _run([_job(other, "a"), _job(other, "b")], other, max_batch=1)
    assert rec.batches == other.batches == [["blocker"], ["a"], ["b"]]


def test_one_failing_job_fails_alone_and_a_broken_batch_fails_every_job_in_it() -> None:
    rec = Recorder()
    _run([_job(rec, "a"), _job(rec, "boom"), _job(rec, "c")], rec, max_batch=3)
    assert rec.done[1:] == [("a", "ok"), ("boom", "internal_error"), ("c", "ok")]

    broken = Recorder()
    broken.run_batch = lambda batch, ctxs: [PingResult()]  # type: ignore[method-assign]  # one outcome for two jobs
    _run([_job(broken, "a"), _job(broken, "b"), _job(broken, "after", key=None)], broken, max_batch=2)
    assert broken.done[1:] == [("a", "internal_error"), ("b", "internal_error"), ("after", "ok")]


@pytest.mark.parametrize(("max_batch", "wait_s"), [(0, 0.0), (65, 0.0), (2, -1.0), (2, 5.0)])
def test_bad_limits_are_refused(max_batch: int, wait_s: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        JobQueue(lambda msg: None, lambda *a: None, max_batch=max_batch, batch_wait_s=wait_s)
