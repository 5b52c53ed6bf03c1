"""The host's writes to the worker's stdin, on a thread of their own, so no caller ever blocks on a pipe.

A worker that stops reading (SIGSTOP, a hang, a full pipe) would otherwise block the thread writing to it
for ever, and with it every cancel and every other call behind the write lock. Callers hand frames to
:class:`FrameWriter` and wait for them, if at all, with a deadline; the writer writes the descriptor
directly (non-blocking, waiting in ``select``), so ``close`` ends it at once even mid-frame.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import threading

log = logging.getLogger("host.worker.writer")


class Outgoing:
    """A frame handed to the writer; ``written`` is set once it is out (or failed: see ``error``)."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.written = threading.Event()
        self.error: OSError | None = None
        self.started = False
        """True once its first byte may have gone out: from then on it cannot be withdrawn."""


class FrameWriter:
    """Writes queued frames in order to ``fd``. After a write error every frame fails with that error."""

    def __init__(self, fd: int, name: str = "rpc-session-writer") -> None:
        self._fd = fd
        os.set_blocking(fd, False)
        self._queue: collections.deque[Outgoing] = collections.deque()
        self._cond = threading.Condition()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, frame: bytes) -> Outgoing:
        item = Outgoing(frame)
        with self._cond:
            if self._error is not None or self._closed:
                item.error = self._error or BrokenPipeError("the writer is closed")
                item.written.set()
                return item
            self._queue.append(item)
            self._cond.notify()
        return item

    def withdraw(self, item: Outgoing) -> bool:
        """Takes a frame back if none of it was written yet (a request that timed out before going out)."""
        with self._cond:
            if item.started or item not in self._queue:
                return False
            self._queue.remove(item)
            return True

    def close(self) -> None:
        """Stops the writer (frames not yet written fail); the descriptor itself stays open for its owner."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    self._fail_all(BrokenPipeError("the writer was closed"))
                    return
                item = self._queue[0]
                item.started = True
            error = self._write(item.frame)
            with self._cond:
                self._queue.popleft()
                item.error = error
                item.written.set()
                if error is not None:
                    self._error = error
                    self._fail_all(error)
                    return

    def _write(self, frame: bytes) -> OSError | None:
        view = memoryview(frame)
        while view:
            try:
                count = os.write(self._fd, view)
            except BlockingIOError:
                count = 0
            except OSError as exc:
                return exc
            view = view[count:]
            if view:
                readable, _, _ = select.select([self._wake_r], [self._fd], [])
                if readable:
                    return BrokenPipeError("the writer was closed while a frame was half written")
        return None

    def _fail_all(self, error: OSError) -> None:
        while self._queue:
            item = self._queue.popleft()
            item.error = error
            item.written.set()
