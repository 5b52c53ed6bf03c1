"""How the host waits out a busy refusal: for the caller's own earlier request to end, else a growing pause."""

from __future__ import annotations

import threading

import pytest

from host.worker.busy import BUSY_FIRST_PAUSE_S, BUSY_LONGEST_WAIT_S, BusyWait, until_admitted
from rpcworker.wire.errors import InvalidParams, WorkerBusy


class StubCall:
    """A request in flight that ends when the test says so (what BusyWait.after reads of a PendingCall)."""

    def __init__(self, done: bool = False) -> None:
        self.ended = threading.Event()
        if done:
            self.ended.set()
        self.waited: list[float | None] = []

    @property
    def done(self) -> bool:
        return self.ended.is_set()

    def wait_done(self, timeout: float | None) -> bool:
        self.waited.append(timeout)
        return self.ended.wait(timeout)


def test_pauses_double_from_the_first_up_to_the_longest_wait() -> None:
    """Each refusal's pause doubles, from BUSY_FIRST_PAUSE_S, and never passes BUSY_LONGEST_WAIT_S."""
    wait = BusyWait()
    pauses = [wait.next_pause() for _ in range(12)]
    assert pauses[0] == BUSY_FIRST_PAUSE_S and pauses[1] == 2 * BUSY_FIRST_PAUSE_S
    assert max(pauses) == BUSY_LONGEST_WAIT_S and pauses == sorted(pauses) and wait.refusals == 12


def test_after_waits_for_the_first_own_request_still_in_flight() -> None:
    """The wait is for the first of the caller's requests not yet ended (ended ones are skipped), bounded by
    BUSY_LONGEST_WAIT_S, and returns as soon as it ends."""
    ended, running, later = StubCall(done=True), StubCall(), StubCall()
    threading.Timer(0.05, running.ended.set).start()
    BusyWait().after([ended, running, later])
    assert running.done and running.waited == [BUSY_LONGEST_WAIT_S]
    assert ended.waited == [] and later.waited == []


def test_until_admitted_sends_again_after_each_refusal_and_passes_other_errors() -> None:
    """A send refused busy goes again until admitted; any other error is raised at once."""
    tries: list[int] = []

    def send() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise WorkerBusy("refused", {"method": "generate_views", "size": 1, "queued": 1, "limit": 1})
        return "views"

    assert until_admitted(send) == "views" and len(tries) == 3

    def bad() -> str:
        raise InvalidParams("bad")

    with pytest.raises(InvalidParams):
        until_admitted(bad)
