"""The job queue: model work runs on an executor thread, in arrival order, one job or one batch at a time,
with an optional second executor (the side lane) for jobs that may overlap it.

It knows nothing of envelopes or replies: the session submits jobs and is told when each ends, with its
result or the RpcError it became (whatever a backend raised, the worker keeps serving).

Dynamic batching: a job with a ``batch_key`` may take the jobs queued behind it on its lane with the same key
(up to ``max_batch`` in all, waiting at most ``batch_wait_s`` for them to arrive) and run with them as one batch.

The side lane (the session's mesh lane): a ``side`` job may run on a second executor thread beside the main
lane's work, overtaking main-lane jobs queued before it, while ``side_open()`` says so; otherwise it runs on the
main lane like any job. A ``barrier`` job runs alone: after every job before it has ended, and before any job
behind it starts.

Pipelining: a job may end its model work with a `Deferred` (the rest needs no model: writing its files);
that part runs on a third thread, the finisher, while the executors go on; the finisher runs deferred parts
in the order their model work ended, as soon as it ended. Every job ends through the finisher, in arrival
order, so replies keep their order and a reply still means "written".
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

from .job import Deferred, Job, JobContext
from .options import MAX_BATCH_WAIT_S
from .queued_inputs import DEFAULT_MAX_QUEUED_INLINE_MIB, MIB, QueuedInlineBytes
from .wire.envelopes import RequestId
from .wire.errors import InternalError, OutOfMemory, RpcError
from .wire.messages import MAX_BATCH_LIMIT

log = logging.getLogger("rpcworker")

TRACEBACK_FRAMES = 8
TRACEBACK_CHARS = 4000
"""How much of an unexpected exception's traceback an internal_error carries."""

Lane = Literal["main", "side"]


JobDone = Callable[[Job, "msgspec.Struct | None", "RpcError | None"], None]
MIN_UNFINISHED = 2
"""Jobs whose deferred part may wait for the finisher before their lane waits too (bounds the meshes held):
this many, or two batches' worth, so a batch's reconstructs never wait on each other's exports."""


@dataclass
class _Slot:
    """One submitted job, in arrival order, until its reply is handed over."""

    job: Job
    lane: Lane | None = None
    """The lane it runs on, once taken."""
    result: msgspec.Struct | Deferred | None = None
    error: RpcError | None = None
    produced: bool = False
    """Model work done: ``result`` or ``error`` is set (a `Deferred` until the finisher has written it)."""

    @property
    def ended(self) -> bool:
        return self.produced and not isinstance(self.result, Deferred)


class JobQueue:
    """Executors for model work (the main lane, and the side lane when ``side_open`` is given) and one finisher
    thread, which runs deferred parts and then ``on_done`` for each job in arrival order."""

    def __init__(
        self,
        send: Callable[[msgspec.Struct], None],
        on_done: JobDone,
        *,
        max_batch: int = 1,
        batch_wait_s: float = 0.0,
        side_open: Callable[[], bool] | None = None,
        max_queued_inline_bytes: int = DEFAULT_MAX_QUEUED_INLINE_MIB * MIB,
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
        """Deferred parts one lane may leave waiting for the finisher before it waits too."""
        self._side_open = side_open
        self.queued_inline = QueuedInlineBytes(max_queued_inline_bytes)
        """Back-pressure: the inline bytes of the jobs not started yet, against their bound."""
        self._queued: deque[_Slot] = deque()
        """Jobs not started yet, in arrival order."""
        self._slots: deque[_Slot] = deque()
        """Every job not yet handed to ``on_done``, in arrival order."""
        self._to_write: deque[_Slot] = deque()
        """Jobs whose deferred part waits for the finisher, in the order their model work ended."""
        self._unfinished: dict[Lane, int] = {"main": 0, "side": 0}
        """Per lane, the jobs whose deferred part has not been written yet."""
        self._closed = False
        self._running: dict[Lane, list[Job]] = {"main": [], "side": []}
        self._barrier_running = False
        self._cond = threading.Condition()
        self._pending = 0
        lanes: list[Lane] = ["main", "side"] if side_open is not None else ["main"]
        self._lanes_running = len(lanes)
        self._threads = [
            threading.Thread(target=self._run, args=(lane,), name=f"model-{lane}-lane", daemon=True) for lane in lanes
        ]
        self._finisher = threading.Thread(target=self._finish_in_order, name="job-finisher", daemon=True)
        for thread in self._threads:
            thread.start()
        self._finisher.start()

    @property
    def side_lane(self) -> bool:
        return self._side_open is not None

    @property
    def busy(self) -> str | None:
        """The method running now on the main lane, else on the side lane; None when both are idle."""
        current = [job for job in self._running["main"] or self._running["side"] if not job.internal]
        return current[0].method if current else None

    @property
    def batch(self) -> list[RequestId]:
        """The ids running now together on the main lane (one id when a job runs alone; empty when idle)."""
        return [job.id for job in self._running["main"] if not job.internal]

    @property
    def beside(self) -> list[RequestId]:
        """The ids running now on the side lane."""
        return [job.id for job in self._running["side"]]

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queued)

    @property
    def running(self) -> bool:
        """True while an executor or the finisher has not ended."""
        return any(t.is_alive() for t in self._threads) or self._finisher.is_alive()

    def submit(self, job: Job) -> None:
        """Queues ``job``; raises WorkerBusy, queuing nothing, when its inline bytes would pass the bound."""
        with self._cond:
            self.queued_inline.admit(job.method, job.inline_bytes)
            self._pending += 1
            slot = _Slot(job)
            self._queued.append(slot)
            self._slots.append(slot)
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Waits until every submitted job has ended; False if some are still there after ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, grace: float = 0.0) -> None:
        """Lets the executors end after the jobs before them; waits up to ``grace`` seconds for that."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if grace > 0:
            deadline = time.monotonic() + grace
            for thread in (*self._threads, self._finisher):
                thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ executors

    def _side_is_open(self) -> bool:
        """Side jobs run on the side lane while it is open; once the queue is stopping, the main lane drains all."""
        return self._side_open is not None and not self._closed and self._side_open()

    def _next(self, lane: Lane) -> int | None:
        """Where the next job ``lane`` may start now sits in the queue; None: nothing for it yet."""
        side_open = self._side_is_open()
        for i, job in enumerate(slot.job for slot in self._queued):
            if job.barrier:  # nothing behind a barrier starts before it ends; it starts once all else has
                idle = not self._running["side"] and not self._barrier_running
                return 0 if lane == "main" and i == 0 and idle else None
            if _lane_of(job, side_open) == lane:
                return None if self._barrier_running else i
        return None

    def _take(self, lane: Lane) -> list[_Slot]:
        """The lane's next job and the compatible ones queued behind it; empty once stopped and drained."""
        with self._cond:
            self._cond.wait_for(lambda: self._next(lane) is not None or (self._closed and not self._has_work(lane)))
            at = self._next(lane)
            if at is None:
                return []
            batch = [self._pop(at)]
            first = batch[0].job
            key = first.batch_key
            if key is not None and first.run_batch is not None and self.max_batch > 1:
                deadline = time.monotonic() + self.batch_wait_s
                while len(batch) < self.max_batch:
                    behind = self._next(lane)
                    if behind is None and any(slot.job.barrier for slot in self._queued):
                        break  # a barrier ends the batch
                    if behind is not None:
                        if self._queued[behind].job.batch_key != key:
                            break  # the lane's next job differs: it starts the next batch
                        batch.append(self._pop(behind))
                        continue
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closed:
                        break
                    self._cond.wait(left)
            self._running[lane] = [slot.job for slot in batch]
            self._barrier_running = first.barrier
            for slot in batch:
                slot.lane = lane
            return batch

    def _has_work(self, lane: Lane) -> bool:
        """Some queued job will still run on ``lane`` (barriers run on the main lane)."""
        side_open = self._side_is_open()
        return any(_lane_of(slot.job, side_open) == lane for slot in self._queued)

    def _pop(self, at: int) -> _Slot:
        slot = self._queued[at]
        del self._queued[at]
        self.queued_inline.release(slot.job.inline_bytes)
        return slot

    def _run(self, lane: Lane) -> None:
        try:
            while batch := self._take(lane):
                jobs = [slot.job for slot in batch]
                outcomes = [self._execute(jobs[0])] if len(jobs) == 1 else self._execute_batch(jobs)
                with self._cond:
                    self._cond.wait_for(lambda: self._unfinished[lane] < self.max_unfinished)
                    for slot, (result, error) in zip(batch, outcomes, strict=True):
                        slot.result, slot.error, slot.produced = result, error, True
                        if isinstance(result, Deferred):
                            self._to_write.append(slot)
                            self._unfinished[lane] += 1
                    self._running[lane] = []
                    self._barrier_running = False
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._lanes_running -= 1
                self._cond.notify_all()

    # ------------------------------------------------------------------ finisher

    def _finish_in_order(self) -> None:
        """Hands each ended job to ``on_done`` in arrival order; meanwhile runs deferred parts as their model work ends."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._finisher_has_work() or (self._lanes_running == 0 and not self._slots))
                if self._slots and self._slots[0].ended:
                    self._hand_over(self._slots[0])
                    continue
                if not self._to_write:  # no job left, and no executor to run one
                    return
                slot = self._to_write.popleft()
            self._write(slot)

    def _finisher_has_work(self) -> bool:
        return bool(self._to_write) or (bool(self._slots) and self._slots[0].ended)

    def _hand_over(self, slot: _Slot) -> None:
        """``on_done`` for the oldest job (called holding the lock: released around the call)."""
        self._cond.release()
        try:
            assert not isinstance(slot.result, Deferred)
            self._on_done(slot.job, slot.result, slot.error)
        finally:
            self._cond.acquire()
            self._slots.popleft()
            self._pending -= 1
            self._cond.notify_all()

    def _write(self, slot: _Slot) -> None:
        assert isinstance(slot.result, Deferred)
        result: msgspec.Struct | None
        error: RpcError | None = None
        try:
            JobContext(slot.job, self._send).check_cancelled()
            result = slot.result.finish()
        except Exception as exc:  # a failed write fails its job only
            result, error = None, _as_error(slot.job, exc)
        with self._cond:
            slot.result, slot.error = result, error
            assert slot.lane is not None
            self._unfinished[slot.lane] -= 1
            self._cond.notify_all()

    # ------------------------------------------------------------------ running

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
            outcomes = [RuntimeError(f"the batch runner gave {len(outcomes)} outcomes for {len(batch)} jobs")] * len(
                batch
            )
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


def _lane_of(job: Job, side_open: bool) -> Lane:
    return "side" if job.side and side_open else "main"


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
