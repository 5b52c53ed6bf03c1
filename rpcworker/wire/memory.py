"""An in-memory transport pair: two MessageStreams joined back to back, for running the host's session and
the worker's session in one process (tests, fuzzing). Real pipes are tested apart, for what pipes add."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .framing import MessageStream
from .messages import MAX_LINE_BYTES


class MemoryPipe:
    """One direction: ``write`` appends bytes, ``readline`` blocks until a line (or EOF after ``close``).

    It has the parts of a binary file the framing uses (readline, write, flush, close)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._closed = False
        self._cond = threading.Condition()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        with self._cond:
            if self._closed:
                raise BrokenPipeError("the memory pipe is closed")
            self._data += data
            self._cond.notify_all()
        return len(data)

    def writelines(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def readline(self, limit: int = -1) -> bytes:
        with self._cond:
            while True:
                end = self._data.find(b"\n")
                if end >= 0 and (limit < 0 or end < limit):
                    count = end + 1
                    break
                if limit >= 0 and len(self._data) >= limit:
                    count = limit
                    break
                if self._closed:
                    count = len(self._data)
                    break
                self._cond.wait()
            line = bytes(self._data[:count])
            del self._data[:count]
            return line

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def stream_pair(max_line_bytes: int = MAX_LINE_BYTES) -> tuple[MessageStream, MessageStream, MemoryPipe, MemoryPipe]:
    """(host side, worker side, host→worker pipe, worker→host pipe). Close a pipe for its reader's EOF."""
    to_worker, to_host = MemoryPipe(), MemoryPipe()
    host = MessageStream(to_host, to_worker, max_line_bytes)  # type: ignore[arg-type]
    worker = MessageStream(to_worker, to_host, max_line_bytes)  # type: ignore[arg-type]
    return host, worker, to_worker, to_host
