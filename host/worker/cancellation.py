"""Cancelling a blocking call from another thread: an agent's cancel, a window's Stop button.

A call (``generate_views``, ``reconstruct``, ``image_to_mesh``, on a worker or a pool) that is given a
``Cancellation`` watches it: ``cancel()`` cancels the request in flight on the worker, which stops it and answers
``Cancelled`` (so nothing is written), and every later request of the call is refused before it is sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rpcworker.wire.errors import Cancelled

from .process import WorkerProcess
from .session import PendingCall

log = logging.getLogger("host.worker.cancellation")


class Cancellation:
    """Made by the caller, handed to a call, cancelled from any thread; one per call (it stays cancelled)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._in_flight: list[PendingCall] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Cancels the request in flight (a worker that does not stop it is treated as a timed-out call's: killed
        after the client's cancel grace); the call then raises Cancelled."""
        with self._lock:
            self._cancelled = True
            in_flight = list(self._in_flight)
        for call in in_flight:
            call.abandon()

    def check(self, method: str) -> None:
        """Raises Cancelled, before ``method`` is sent, once the call was cancelled."""
        if self._cancelled:
            raise Cancelled(f"{method} not sent: the call was cancelled", {"method": method})

    @contextmanager
    def watching(self, call: PendingCall) -> Iterator[None]:
        """While the block waits for ``call``, ``cancel()`` cancels it (at once if it came first)."""
        with self._lock:
            self._in_flight.append(call)
            cancelled = self._cancelled
        if cancelled:
            call.abandon()
        try:
            yield
        finally:
            with self._lock:
                self._in_flight.remove(call)


def kill_if_stuck(process: WorkerProcess, call: PendingCall, grace: float) -> None:
    """Kills the worker, from a thread of its own, if it has not answered the cancelled ``call`` within ``grace``
    seconds: it is stuck (a step that never checks for cancel, a hang in native code)."""

    def watch() -> None:
        if call.wait_done(grace) or not process.alive:
            return
        reason = f"killed by the host: {call.method} (id {call.id}) did not stop within {grace:g} s of its cancel"
        log.warning("worker pid %d is stuck; %s", process.pid, reason)
        process.kill(reason)

    threading.Thread(target=watch, name=f"cancel-watch-{call.id}", daemon=True).start()
