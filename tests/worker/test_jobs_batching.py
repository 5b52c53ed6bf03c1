"""The job queue's dynamic batching, in-process: who joins a batch, in what order replies go, what errors do.

A blocker job holds the executor on an event while the others are queued, so every batch is formed
from jobs already waiting (no timing involved)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pytest
from PIL import Image

from rpcworker.backends.base import SilentContext
from rpcworker.backends.mock import MockBackend, MockOptions
from rpcworker.jobs import Job, JobContext, JobQueue
from rpcworker.wire.errors import Cancelled, InternalError, RpcError
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


class Cancellable(SilentContext):
    """Counts its diffusion steps; cancels itself after step ``cancel_after`` (0: never)."""

    def __init__(self, cancel_after: int = 0) -> None:
        self.cancelled = threading.Event()
        self.cancel_after = cancel_after
        self.steps = 0

    def progress(self, stage: str, step: int, total: int, message: str = "") -> None:
        self.steps = step
        if step == self.cancel_after:
            self.cancelled.set()

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("cancelled", {})


def test_the_mock_gives_each_object_the_views_it_gets_alone_and_drops_a_cancelled_one() -> None:
    mock = MockBackend(MockOptions(view_size=24))
    images = [Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(3)]
    alone = [mock.generate_views(img, seed, 5, 3.0, SilentContext()).views for img, seed in zip(images, [1, 2, 3], strict=True)]
    ctxs = [Cancellable(), Cancellable(cancel_after=2), Cancellable()]
    batched = mock.generate_views_batch(images, [1, 2, 3], 5, 3.0, list(ctxs))
    assert isinstance(batched[1], Cancelled) and ctxs[1].steps == 2
    for i in (0, 2):
        result = batched[i]
        assert not isinstance(result, BaseException) and np.array_equal(result.views, alone[i]) and ctxs[i].steps == 5
    assert not np.array_equal(alone[0], alone[2])
