"""Request ids, response correlation and notifications over one MessageStream.

One reader thread receives every frame; callers on any thread send requests and wait on their own
``PendingCall``. When the stream ends, every waiting call fails at once with the error ``on_closed``
builds (the client attaches the worker's exit code and stderr there).

Frames go out through a :class:`FrameWriter` thread when one is given (the client's pipes), so a worker
that stops reading never blocks a caller past its timeout, nor a cancel. Progress callbacks run on a
thread of their own, never the reader's: a callback may call the client (a status query) without
deadlocking the reader that has to deliver the answer.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from rpcworker.wire.envelopes import Incoming, Notification, Request
from rpcworker.wire.errors import MessageTooLarge, RpcError, error_from_wire
from rpcworker.wire.framing import BadFrame, FrameTooLarge, MessageStream
from rpcworker.wire.messages import METHODS, CancelParams, CompileStatus, LogParams, ProgressParams

from .errors import HostError, RequestTimeout, StrayOutput
from .writer import FrameWriter

log = logging.getLogger("host.worker.session")

FRAME_START = b"{"
"""Every frame is one JSON object (protocol.md, section 1)."""
READER_JOIN_S = 2.0
"""After a failed write, how long to wait for the reader to see the worker's end (for the crash report)."""
worker_log = logging.getLogger("host.worker")

ProgressCallback = Callable[[ProgressParams], None]

_RESULT_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(spec.result) for name, spec in METHODS.items()
}
_ANY_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_PROGRESS_DECODER = msgspec.json.Decoder(ProgressParams)
_LOG_DECODER = msgspec.json.Decoder(LogParams)
_INCOMING_DECODER = msgspec.json.Decoder(Incoming)
_COMPILE_DECODER = msgspec.json.Decoder(CompileStatus)


class PendingCall:
    """A request in flight: wait for it, or cancel it."""

    def __init__(self, session: RpcSession, request_id: int, method: str, on_progress: ProgressCallback | None) -> None:
        self.session = session
        self.id = request_id
        self.method = method
        self.on_progress = on_progress
        self.has_progress = on_progress is not None
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None

    def _resolve(self, result: Any = None, error: BaseException | None = None) -> None:
        self._result, self._error = result, error
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait_done(self, timeout: float | None) -> bool:
        """Waits for the answer without consuming it (True once answered or failed)."""
        return self._done.wait(timeout)

    def cancel(self) -> None:
        """Asks the worker to stop this request; it then answers with a Cancelled error."""
        if not self.done:
            self.session.notify("cancel", CancelParams(self.id))

    def abandon(self) -> None:
        """Cancels the request as a timed-out one is: the client kills a worker that does not answer the cancel
        within its cancel grace (a step that never checks for cancel), so the waiter is never left hanging."""
        if self.done:
            return
        self.cancel()
        self.session._timed_out(self)

    def result(self, timeout: float | None = None) -> Any:
        """The decoded result. On timeout the request is cancelled and RequestTimeout raised.

        Ctrl-C while waiting cancels the request on the worker and re-raises KeyboardInterrupt.
        """
        try:
            finished = self._done.wait(timeout)
        except KeyboardInterrupt:
            self.cancel()
            raise
        if not finished:
            # The call stays registered, so the worker's late answer (normally `cancelled`) is matched to it
            # rather than counted as unknown, and on_timeout can tell whether the worker honoured the cancel.
            self.abandon()
            raise RequestTimeout(self.method, self.id, timeout or 0.0)
        if self._error is not None:
            raise self._error
        return self._result


def _glued_to_a_frame(line: bytes) -> bytes | None:
    """The stray bytes before a frame on the same line (read in one go before they could be told apart)."""
    start = line.find(FRAME_START)
    while start > 0:
        try:
            _INCOMING_DECODER.decode(line[start:])
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            start = line.find(FRAME_START, start + 1)
            continue
        return line[:start]
    return None


class RpcSession:
    def __init__(
        self,
        stream: MessageStream,
        on_closed: Callable[[], HostError],
        on_timeout: Callable[[PendingCall], None] | None = None,
        writer: FrameWriter | None = None,
    ) -> None:
        self.stream = stream
        self._writer = writer
        self._callbacks: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._callback_thread = threading.Thread(target=self._run_callbacks, name="rpc-progress-callbacks", daemon=True)
        self._callback_thread.start()
        self._on_closed = on_closed
        self._on_timeout = on_timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, PendingCall] = {}
        self._lock = threading.Lock()
        self._closed_error: HostError | None = None
        self.bad_frames = 0
        self.unknown_responses = 0
        self._reader = threading.Thread(target=self._read_loop, name="rpc-session-reader", daemon=True)
        self._reader.start()

    @property
    def closed(self) -> bool:
        return self._closed_error is not None

    def request(
        self,
        method: str,
        params: msgspec.Struct | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> PendingCall:
        """Sends a request; returns once it is written. ``timeout`` bounds the wait for the write: a worker
        that does not read gets RequestTimeout (``sent=False`` if none of the frame went out)."""
        with self._lock:
            if self._closed_error is not None:
                raise self._closed_error
            call = PendingCall(self, next(self._ids), method, on_progress)
            self._pending[call.id] = call
        message = Request(call.id, method, params) if params is not None else Request(call.id, method)
        try:
            frame = self.stream.encode_frame(message)
        except FrameTooLarge as exc:
            self._forget(call.id)
            raise MessageTooLarge(
                f"{method} request not sent: {exc} (send large images as paths)",
                {"method": method, "size": exc.size, "limit": exc.limit},
            ) from exc
        try:
            self._write(frame, call, timeout)
        except OSError:
            self._forget(call.id)
            self._reader.join(timeout=READER_JOIN_S)
            raise (self._closed_error or self._on_closed()) from None
        return call

    def _write(self, frame: bytes, call: PendingCall, timeout: float | None) -> None:
        if self._writer is None:
            self.stream.write_frame(frame)
            return
        item = self._writer.put(frame)
        if item.written.wait(timeout):
            if item.error is not None:
                raise item.error
            return
        if self._writer.withdraw(item):
            self._forget(call.id)
            raise RequestTimeout(call.method, call.id, timeout or 0.0, sent=False)
        # Partly written: the worker may yet read it, so it is cancelled like any call that timed out.
        call.cancel()
        self._timed_out(call)
        raise RequestTimeout(call.method, call.id, timeout or 0.0)

    def close(self) -> None:
        """Stops the writer and the callback thread (the stream's owner closes the pipes afterwards)."""
        if self._writer is not None:
            self._writer.close()
        self._callbacks.put(None)

    def call(
        self,
        method: str,
        params: msgspec.Struct | None = None,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Any:
        """One call; ``timeout`` covers writing the request and waiting for its answer."""
        deadline = None if timeout is None else time.monotonic() + timeout
        call = self.request(method, params, on_progress, timeout)
        return call.result(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def notify(self, method: str, params: msgspec.Struct) -> None:
        """Queues a notification; never waits for the worker to read it."""
        try:
            frame = self.stream.encode_frame(Notification(method, params))
            if self._writer is not None:
                self._writer.put(frame)
            else:
                self.stream.write_frame(frame)
        except OSError:
            log.debug("could not send %s: the worker is gone", method)

    def _forget(self, request_id: int) -> None:
        with self._lock:
            self._pending.pop(request_id, None)

    def _timed_out(self, call: PendingCall) -> None:
        if self._on_timeout is not None:
            self._on_timeout(call)

    def _read_loop(self) -> None:
        error: HostError | None = None
        framed = False
        while True:
            if not framed and (stray := self._stray_output()) is not None:
                error = StrayOutput(stray)
                break
            try:
                received = self.stream.receive()
            except (OSError, ValueError):
                received = None
            if received is None:
                break
            if isinstance(received, BadFrame):
                self.bad_frames += 1
                log.warning("ignoring a bad frame from the worker (%s): %s", received.reason, received.detail[:200])
                continue
            framed = True
            self._dispatch(received)
        if error is None:
            error = self._on_closed()
        with self._lock:
            self._closed_error = error
            pending, self._pending = list(self._pending.values()), {}
        for call in pending:
            call._resolve(error=error)

    def _stray_output(self) -> bytes | None:
        """Before the worker's first frame: stray bytes that would hold it up, or None. A whole stray line is
        skipped like any bad frame (protocol.md, section 1); bytes with no line end might wait for one
        forever, and a frame written after them is glued to them (lost), so either ends the session now."""
        try:
            head = self.stream.arrived()
        except (OSError, ValueError):
            return None  # the stream is gone: receive() says so
        if not head or head.startswith(FRAME_START):
            return None
        line, ended, _ = head.partition(b"\n")
        if not ended:
            return head
        return _glued_to_a_frame(line)

    def _dispatch(self, msg: Incoming) -> None:
        if msg.method is not msgspec.UNSET:
            self._notification(msg)
            return
        if not isinstance(msg.id, int):
            if msg.error is not msgspec.UNSET:
                log.warning(
                    "worker reported an error not tied to a request: [%s] %s", msg.error.code, msg.error.message
                )
            else:
                self.unknown_responses += 1
                log.warning("ignoring a response with id %r", msg.id)
            return
        with self._lock:
            call = self._pending.pop(msg.id, None)
        if call is None:
            self.unknown_responses += 1
            log.warning("ignoring a response to unknown or abandoned request id %r", msg.id)
            return
        if call.has_progress:
            # Resolved after its progress callbacks (on their thread), so a caller that gets the result
            # has seen every step; a call without callbacks is resolved here at once.
            self._callbacks.put(lambda: self._resolve(call, msg))
        else:
            self._resolve(call, msg)

    @staticmethod
    def _resolve(call: PendingCall, msg: Incoming) -> None:
        if msg.error is not msgspec.UNSET:
            call._resolve(error=error_from_wire(msg.error.code, msg.error.message, msg.error.data))
        elif msg.result is not msgspec.UNSET:
            try:
                call._resolve(_RESULT_DECODERS.get(call.method, _ANY_DECODER).decode(msg.result))
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                call._resolve(error=RpcError(f"worker sent an invalid {call.method} result: {exc}"))
        else:
            call._resolve(error=RpcError(f"worker response to {call.method} has neither result nor error"))

    def _notification(self, msg: Incoming) -> None:
        raw = msg.params if msg.params is not msgspec.UNSET else b"{}"
        try:
            if msg.method == "progress":
                progress = _PROGRESS_DECODER.decode(raw)
                with self._lock:
                    call = self._pending.get(progress.id) if isinstance(progress.id, int) else None
                if call is not None and call.on_progress is not None:
                    self._callbacks.put(lambda: self._report_progress(call, progress))
            elif msg.method == "log":
                entry = _LOG_DECODER.decode(raw)
                level = logging.getLevelName(entry.level.upper())
                worker_log.log(level if isinstance(level, int) else logging.INFO, "%s", entry.message)
            elif msg.method == "compile":
                status = _COMPILE_DECODER.decode(raw)
                worker_log.info("compiled views: %s %d/%d %s", status.state, status.done, status.total, status.message)
            else:
                log.debug("ignoring notification %r", msg.method)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            log.warning("ignoring a malformed %s notification: %s", msg.method, exc)

    def _run_callbacks(self) -> None:
        while (task := self._callbacks.get()) is not None:
            task()

    @staticmethod
    def _report_progress(call: PendingCall, progress: ProgressParams) -> None:
        callback = call.on_progress
        if callback is None:
            return
        try:
            callback(progress)
        except Exception:  # a user's callback must not end progress reporting for other calls
            log.exception("the progress callback of %s (id %d) raised; it is not called again", call.method, call.id)
            call.on_progress = None
