"""Stray bytes before the worker's first frame, over a real pipe in-process: what the session skips, what ends it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import msgspec
import pytest

from host.worker.errors import StrayOutput, WorkerCrashed
from host.worker.session import RpcSession
from rpcworker.wire.envelopes import Response
from rpcworker.wire.framing import MessageStream
from rpcworker.wire.messages import PingResult

ANSWER_S = 10.0
"""Far longer than an answer takes; a session that waited for a line end would use it all and fail."""
ANSWER_TO_FIRST_REQUEST = msgspec.json.encode(Response(1, PingResult())) + b"\n"


class PipedSession:
    """A session reading a pipe that this test writes the worker's side of (kept open: no EOF)."""

    def __init__(self) -> None:
        read_end, self.write_end = os.pipe()
        self.reader = os.fdopen(read_end, "rb")
        self.sink = open(os.devnull, "wb")  # noqa: SIM115 - closed in close()
        self.session = RpcSession(
            MessageStream(self.reader, self.sink), lambda: WorkerCrashed("the pipe ended", None, "")
        )

    def worker_writes(self, data: bytes) -> None:
        os.write(self.write_end, data)  # one write: the reader gets it in one read

    def close(self) -> None:
        os.close(self.write_end)  # EOF: the reader thread ends
        self.session.close()
        self.sink.close()


@pytest.fixture()
def piped() -> Iterator[PipedSession]:
    made = PipedSession()
    yield made
    made.close()


def test_bytes_without_a_line_end_end_the_session_at_once(piped: PipedSession) -> None:
    call = piped.session.request("ping")
    piped.worker_writes(b"\x1b[1mhello")
    with pytest.raises(StrayOutput) as stray:
        call.result(ANSWER_S)
    assert str(stray.value).startswith("the worker wrote b'\\x1b[1mhello' to its stdout before its first frame")


def test_a_frame_glued_to_stray_bytes_ends_the_session_quoting_only_the_stray_bytes(piped: PipedSession) -> None:
    """Both arrive in one read: the frame is lost behind them, so waiting for it would wait for the timeout."""
    call = piped.session.request("ping")
    piped.worker_writes(b"abc" + ANSWER_TO_FIRST_REQUEST)
    with pytest.raises(StrayOutput, match=r"^the worker wrote b'abc' to its stdout"):
        call.result(ANSWER_S)


def test_a_whole_stray_line_is_skipped_and_the_frame_after_it_answers(piped: PipedSession) -> None:
    call = piped.session.request("ping")
    piped.worker_writes(b"banner {with braces}\n" + ANSWER_TO_FIRST_REQUEST)
    assert call.result(ANSWER_S) == PingResult()
    assert piped.session.bad_frames == 1


def test_after_the_first_frame_a_partial_line_is_not_stray_output(piped: PipedSession) -> None:
    """The check holds before the first frame only: later bytes are read as frames as they always were."""
    call = piped.session.request("ping")
    piped.worker_writes(ANSWER_TO_FIRST_REQUEST + b"abc")
    assert call.result(ANSWER_S) == PingResult()
    assert not piped.session.closed
