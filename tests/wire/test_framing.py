"""Framing over real OS pipes: limits, partial lines, bad bytes."""

from __future__ import annotations

import os
import threading

import pytest

from rpcworker.wire.envelopes import Request
from rpcworker.wire.framing import BadFrame, MessageStream


@pytest.fixture()
def pipe_stream():
    r, w = os.pipe()
    reader = os.fdopen(r, "rb")
    writer = os.fdopen(w, "wb")
    yield MessageStream(reader, writer, max_line_bytes=1024), writer
    reader.close()
    if not writer.closed:
        writer.close()


def test_send_then_receive(pipe_stream) -> None:
    stream, _ = pipe_stream
    stream.send(Request(1, "ping"))
    msg = stream.receive()
    assert msg.method == "ping" and msg.id == 1


def test_oversized_line_is_discarded_and_the_next_frame_survives(pipe_stream) -> None:
    stream, raw = pipe_stream

    def feed() -> None:
        raw.write(b"x" * 5000 + b"\n" + b'{"jsonrpc":"2.0","id":2,"method":"ping"}\n')
        raw.flush()

    threading.Thread(target=feed).start()
    bad = stream.receive()
    assert isinstance(bad, BadFrame) and bad.reason == "too_large" and bad.size == 5001
    assert stream.receive().id == 2


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"not json", "parse"),
        (b'{"jsonrpc":"2.0","id":1,"method":"p\xff"}', "parse"),
        (b"[1, 2]", "invalid"),
        (b'{"jsonrpc":"2.0","id":[1],"method":"ping"}', "invalid"),
        (b"   ", "invalid"),
    ],
)
def test_bad_lines_become_bad_frames(pipe_stream, line: bytes, reason: str) -> None:
    stream, raw = pipe_stream
    raw.write(line + b"\n")
    raw.flush()
    bad = stream.receive()
    assert isinstance(bad, BadFrame) and bad.reason == reason


def test_partial_line_at_eof_is_reported_then_eof(pipe_stream) -> None:
    stream, raw = pipe_stream
    raw.write(b'{"jsonrpc":"2.0","id":1,"met')
    raw.close()
    assert isinstance(stream.receive(), BadFrame)
    assert stream.receive() is None


def test_concurrent_senders_never_interleave(pipe_stream) -> None:
    stream, _ = pipe_stream
    n, threads = 200, 4
    received = []

    def read() -> None:
        for _ in range(n * threads):
            received.append(stream.receive())

    reader = threading.Thread(target=read)
    reader.start()
    senders = [
        threading.Thread(target=lambda t=t: [stream.send(Request(t * n + i, "ping")) for i in range(n)])
        for t in range(threads)
    ]
    for s in senders:
        s.start()
    for s in senders:
        s.join()
    reader.join(10)
    assert sorted(m.id for m in received) == list(range(n * threads))
