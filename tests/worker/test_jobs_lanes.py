"""The job queue's side lane (the worker's mesh lane), in-process: side jobs run beside the main lane's work,
barriers run alone, deferred writes go as their model work ends, and replies still leave in arrival order.
Events, not sleeps."""

from __future__ import annotations

import threading

import msgspec

from rpcworker.job import Deferred
from rpcworker.jobs import JobQueue
from rpcworker.wire.messages import PingResult
from tests.worker.job_log import WAIT_S, Log, drain


def test_a_side_job_runs_beside_the_main_lane_and_replies_keep_arrival_order() -> None:
    log = Log()
    side_ran = threading.Event()
    queue = JobQueue(lambda msg: None, log.on_done, side_open=lambda: True)
    queue.submit(log.job(1, "generate_views", lambda: None if side_ran.wait(WAIT_S) else log.add("side never ran")))
    queue.submit(log.job(2, "reconstruct", side_ran.set, side=True))
    drain(queue)
    assert "side never ran" not in log.events
    assert log.threads == {1: "model-main-lane", 2: "model-side-lane"}
    assert log.done == [(1, "ok"), (2, "ok")]  # the side job ended first, and still replied second


def test_side_jobs_run_on_the_main_lane_in_order_while_the_side_lane_is_closed() -> None:
    log = Log()
    queue = JobQueue(lambda msg: None, log.on_done, side_open=lambda: False)
    queue.submit(log.job(1, "generate_views"))
    queue.submit(log.job(2, "reconstruct", side=True))
    queue.submit(log.job(3, "reconstruct", side=True))
    drain(queue)
    assert set(log.threads.values()) == {"model-main-lane"}
    assert log.events == ["1 start", "1 end", "2 start", "2 end", "3 start", "3 end"]


def test_without_a_side_lane_side_jobs_run_on_the_one_executor() -> None:
    log = Log()
    queue = JobQueue(lambda msg: None, log.on_done)
    assert not queue.side_lane
    queue.submit(log.job(1, "reconstruct", side=True))
    drain(queue)
    assert log.threads == {1: "model-main-lane"}


def test_a_barrier_waits_for_the_side_lane_and_holds_back_every_job_behind_it() -> None:
    log = Log()
    release = threading.Event()
    running = threading.Event()

    def side_body() -> None:
        running.set()
        assert release.wait(WAIT_S)

    queue = JobQueue(lambda msg: None, log.on_done, side_open=lambda: True)
    queue.submit(log.job("s1", "reconstruct", side_body, side=True))
    assert running.wait(WAIT_S)
    queue.submit(log.job("load", "load", barrier=True))
    queue.submit(log.job("s2", "reconstruct", side=True))
    queue.submit(log.job("v", "generate_views"))
    assert queue.beside == ["s1"] and queue.batch == [] and queue.queued == 3  # the barrier waits; nothing overtakes it
    release.set()
    drain(queue)
    events = log.events
    assert (
        events.index("s1 end")
        < events.index("load start")
        < events.index("load end")
        < min(events.index("s2 start"), events.index("v start"))
    )
    assert log.done == [("s1", "ok"), ("load", "ok"), ("s2", "ok"), ("v", "ok")]


def test_a_side_jobs_files_are_written_while_an_earlier_job_still_runs() -> None:
    log = Log()
    written = threading.Event()

    def write() -> msgspec.Struct:
        written.set()
        return PingResult()

    queue = JobQueue(lambda msg: None, log.on_done, side_open=lambda: True)
    queue.submit(log.job(1, "generate_views", lambda: None if written.wait(WAIT_S) else log.add("not written beside")))
    queue.submit(log.job(2, "reconstruct", lambda: Deferred(write), side=True))
    drain(queue)
    assert "not written beside" not in log.events
    assert log.done == [(1, "ok"), (2, "ok")]


def test_a_side_job_cancelled_while_queued_is_answered_cancelled_without_running() -> None:
    log = Log()
    release = threading.Event()
    queue = JobQueue(lambda msg: None, log.on_done, side_open=lambda: True)
    queue.submit(log.job(1, "reconstruct", lambda: None if release.wait(WAIT_S) else None, side=True))
    waiting = log.job(2, "reconstruct", side=True)
    waiting.cancelled.set()
    queue.submit(waiting)
    release.set()
    drain(queue)
    assert log.done == [(1, "ok"), (2, "cancelled")] and 2 not in log.threads
