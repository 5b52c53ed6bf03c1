"""Waiting out a worker's ``busy`` refusal (protocol.md section 12) before sending the request again.

The worker refuses a request at once when its inline image would take the bytes held by queued requests past
its bound; room comes back as earlier requests start. So a caller with requests of its own in flight waits for
the first of them to end; one with none pauses briefly, a little longer each time. The map, the pool and Ray
wait this way; a single call raises ``WorkerBusy`` and leaves the choice to its caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from rpcworker.wire.errors import WorkerBusy

if TYPE_CHECKING:
    from .session import PendingCall

T = TypeVar("T")

BUSY_FIRST_PAUSE_S = 0.05
"""The first pause before a refused request goes again, when the caller has no other request in flight."""
BUSY_LONGEST_WAIT_S = 1.0
"""The longest a refused request waits before it goes again: for an earlier request to end, or a pause (the
pauses double from BUSY_FIRST_PAUSE_S up to this)."""


class BusyWait:
    """The waits of one refused request, each before it is sent again."""

    def __init__(self) -> None:
        self._pause = BUSY_FIRST_PAUSE_S
        self.refusals = 0
        """How many times the request was refused busy so far."""

    def next_pause(self) -> float:
        """The pause for this refusal: BUSY_FIRST_PAUSE_S, doubling each time up to BUSY_LONGEST_WAIT_S."""
        self.refusals += 1
        pause, self._pause = self._pause, min(2 * self._pause, BUSY_LONGEST_WAIT_S)
        return pause

    def after(self, calls: Iterable[PendingCall]) -> None:
        """Waits until the first of ``calls`` (the caller's own requests) still in flight ends, at most
        BUSY_LONGEST_WAIT_S; with none in flight, for the next pause."""
        pause = self.next_pause()
        for call in calls:
            if not call.done:
                call.wait_done(BUSY_LONGEST_WAIT_S)
                return
        time.sleep(pause)


def until_admitted(send: Callable[[], T]) -> T:
    """``send()``, again after each busy refusal, pausing between tries (for a caller with nothing else in flight
    on the worker, such as a Ray actor's one object)."""
    wait = BusyWait()
    while True:
        try:
            return send()
        except WorkerBusy:
            wait.after(())
