"""The stdio server: guards the protocol stream, reads frames, and ends cleanly.

Protocol frames go to a private duplicate of the original stdout; fd 1 itself is pointed at stderr, so
``print``, progress bars and C extensions that write to fd 1 land in the host's stderr buffer instead of
corrupting the stream.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from .backends.base import Backend
from .options import DEFAULT_MAX_HANDLES
from .queued_inputs import DEFAULT_MAX_QUEUED_INLINE_MIB, MIB
from .session import WorkerSession, serve_stream
from .wire.envelopes import Notification
from .wire.framing import MessageStream
from .wire.messages import MAX_LINE_BYTES, LogParams

log = logging.getLogger("rpcworker")

PARENT_POLL_S = 0.25
"""How often the watchdog checks that the parent process still runs."""
EXIT_GRACE_S = 1.0
"""How long the executor gets to finish after shutdown or EOF; requests arriving meanwhile get shutting_down."""


def protect_stdout() -> BinaryIO:
    """Returns a binary stream on a duplicate of the original stdout; fd 1 then points at stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.set_inheritable(protocol_fd, False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=1024 * 1024)


class LogForwarder(logging.Handler):
    """Sends the worker's own log records to the host as ``log`` notifications."""

    def __init__(self, stream: MessageStream, level: int) -> None:
        super().__init__(level)
        self._stream = stream
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            self._stream.send(
                Notification("log", LogParams(record.levelname.lower(), record.getMessage(), record.name))
            )
        except (OSError, ValueError):  # the host is gone, or a message that cannot be encoded
            pass
        finally:
            self._local.busy = False


def _watch_parent(parent: int, on_orphaned: threading.Event) -> None:
    """Ends the worker when its parent dies even if something else still holds our stdin open."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    on_orphaned.set()
    log.warning("parent process %d is gone; exiting", parent)
    os._exit(3)


def claim_stdio() -> MessageStream:
    """Takes stdin/stdout for the protocol before anything else can write to them."""
    out = protect_stdout()
    stdin = os.fdopen(os.dup(0), "rb", buffering=1024 * 1024)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return MessageStream(stdin, out, MAX_LINE_BYTES)


def serve(
    stream: MessageStream,
    backend: Backend,
    *,
    max_handles: int = DEFAULT_MAX_HANDLES,
    output_root: str | None = None,
    log_level: str = "info",
    before_commit: Callable[[str], None] | None = None,
    max_batch: int = 1,
    batch_wait_s: float = 0.0,
    mesh_lane: bool = False,
    max_queued_inline_bytes: int = DEFAULT_MAX_QUEUED_INLINE_MIB * MIB,
) -> int:
    """Serves until EOF on stdin or a shutdown request; returns the exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[worker %(levelname)s %(name)s] %(message)s")
    forwarder = LogForwarder(stream, getattr(logging, log_level.upper(), logging.INFO))
    for name in ("rpcworker", "instantmesh"):
        logging.getLogger(name).addHandler(forwarder)

    orphaned = threading.Event()
    threading.Thread(target=_watch_parent, args=(os.getppid(), orphaned), name="parent-watch", daemon=True).start()

    dispatcher = WorkerSession(
        backend,
        stream,
        max_handles=max_handles,
        output_root=output_root,
        before_commit=before_commit,
        max_batch=max_batch,
        batch_wait_s=batch_wait_s,
        mesh_lane=mesh_lane,
        max_queued_inline_bytes=max_queued_inline_bytes,
    )
    # After the shutdown reply the reader keeps answering (requests get shutting_down) until EOF or
    # until the executor had its grace; then the worker exits, whether or not the host closed stdin.
    eof = threading.Event()
    dispatcher.on_shutdown = lambda: threading.Thread(
        target=_exit_after_shutdown, args=(dispatcher, stream, eof), name="shutdown-exit", daemon=True
    ).start()

    def end_of_input() -> None:
        log.info("stdin closed; exiting")
        eof.set()

    serve_stream(dispatcher, grace_s=EXIT_GRACE_S, at_end_of_input=end_of_input)
    return 0


def _exit_after_shutdown(dispatcher: WorkerSession, stream: MessageStream, eof: threading.Event) -> None:
    """Ends the worker at most EXIT_GRACE_S after the shutdown reply (EOF ends it sooner, in serve)."""
    deadline = time.monotonic() + EXIT_GRACE_S
    dispatcher.stop(grace=EXIT_GRACE_S)
    if eof.wait(max(0.0, deadline - time.monotonic())):
        return
    stream.close_writer()
    sys.stderr.flush()
    os._exit(0)
