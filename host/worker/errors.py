"""Errors the host raises about the worker process itself; they never travel on the wire.

The wire's errors (one class per JSON-RPC code) are in ``rpcworker.wire.errors``, shared by both sides.
"""

from __future__ import annotations

STRAY_QUOTE_BYTES = 60
"""How much of a worker's stray output a StrayOutput error quotes (escaped: it may be any bytes)."""


class HostError(Exception):
    """Errors the host raises about the worker process itself; they never travel on the wire."""


class WorkerStartError(HostError):
    """The worker could not be started or did not complete the handshake."""

    def __init__(self, message: str, exit_code: int | None = None, stderr_tail: str = "") -> None:
        detail = f"{message}" + (f" (exit code {exit_code})" if exit_code is not None else "")
        if stderr_tail:
            detail += f"\n--- worker stderr (last lines) ---\n{stderr_tail}"
        super().__init__(detail)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class WeightsMissing(WorkerStartError):
    """The worker could not find the official weights it was asked for. The message is one line: every place
    searched for each missing file, in order, and how to get the files (the worker's stderr stays in
    ``stderr_tail``)."""

    def __init__(self, message: str, exit_code: int | None = None, stderr_tail: str = "") -> None:
        HostError.__init__(self, message)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class StrayOutput(HostError):
    """Before its first frame the worker wrote bytes that start no frame and end no line (something in its
    environment printing to stdout): a line end may never come, so the host stops waiting at once."""

    def __init__(self, head: bytes) -> None:
        shown = repr(head[:STRAY_QUOTE_BYTES]) + ("..." if len(head) > STRAY_QUOTE_BYTES else "")
        super().__init__(
            f"the worker wrote {shown} to its stdout before its first frame; a frame starts with '{{' "
            "(something in the worker's environment prints to stdout)"
        )
        self.head = head


class WorkerCrashed(HostError):
    """The worker died (or closed its stdout) while the host still needed it."""

    def __init__(self, message: str, exit_code: int | None, stderr_tail: str) -> None:
        detail = f"{message} (exit code {exit_code})"
        if stderr_tail:
            detail += f"\n--- worker stderr (last lines) ---\n{stderr_tail}"
        super().__init__(detail)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class WorkerStopped(HostError):
    """The worker was shut down on purpose (``close()``, a shutdown request): not a crash.

    Without ``auto_restart`` a call after ``close()`` raises it instead of starting a new worker."""


class RequestTimeout(HostError):
    """A request got no response within its timeout; the request was cancelled on the worker."""

    def __init__(self, method: str, request_id: int, timeout: float, sent: bool = True) -> None:
        what = "cancel was sent" if sent else "the request was never sent: the worker is not reading its input"
        super().__init__(f"{method} (id {request_id}) got no response within {timeout:g} s; {what}")
        self.sent = sent
        self.method = method
        self.request_id = request_id
        self.timeout = timeout
