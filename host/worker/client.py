"""A worker process plus its session: handshake, typed methods, crash reports, restart and shutdown."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import msgspec

from rpcworker.wire.framing import MessageStream
from rpcworker.wire.messages import (
    MODEL_NAMES,
    PROTOCOL_VERSION,
    WEIGHTS_MISSING_LINE,
    GenerateViewsParams,
    InitializeParams,
    InitializeResult,
    LoadParams,
    LoadResult,
    MeshResult,
    ModelName,
    PingResult,
    ReconstructParams,
    ShutdownResult,
    StatusResult,
    UnloadParams,
    UnloadResult,
    ViewsResult,
)

from .cancellation import Cancellation, kill_if_stuck
from .errors import HostError, RequestTimeout, WeightsMissing, WorkerCrashed, WorkerStartError, WorkerStopped
from .process import WorkerCommand, WorkerProcess
from .session import PendingCall, ProgressCallback, RpcSession
from .writer import FrameWriter

ResultT = TypeVar("ResultT", bound=msgspec.Struct)
log = logging.getLogger("host.worker.client")

_MISSING_MODULE = re.compile(r"No module named '([^']+)'")

STARTUP_TIMEOUT_S = 300.0
"""How long the handshake may take (the models env imports torch first)."""
CANCEL_GRACE_S = 30.0
"""After a timed-out call's cancel, how long the worker has to answer it before it is killed as stuck."""
SHUTDOWN_REQUEST_S = 5.0
"""Shutdown ladder, first rung: how long the shutdown request may take (then EOF, SIGTERM, SIGKILL)."""
CLOSE_TIMEOUT_S = 10.0
"""The whole of ``close()``'s wait for the worker to exit after its stdin is closed."""
QUICK_CALL_TIMEOUT_S = 10.0
"""Default timeout of ping, status and shutdown."""
DISCARD_WAIT_S = 5.0
"""How long to wait for a killed worker to be gone before starting its replacement."""


class WorkerClient:
    """Owns one worker at a time. Thread-safe: several threads may call methods concurrently.

    With ``auto_restart`` a call made after the worker died starts a new one first (views handles from the
    old worker are then gone, and say so). The call that was running when it died still fails with
    WorkerCrashed: requests are never retried behind the caller's back.

    A request that times out is cancelled; if the worker has not answered it ``cancel_grace`` seconds
    later, the worker is stuck (a step that never checks for cancel, a hang in native code), so it is
    killed: other calls in flight fail with WorkerCrashed saying why, and the next call starts a new
    worker (with ``auto_restart``). ``cancel_grace=None`` keeps a stuck worker.
    """

    def __init__(
        self,
        command: WorkerCommand | None = None,
        worker_args: Sequence[str] = (),
        *,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        request_timeout: float | None = None,
        auto_restart: bool = False,
        on_stderr: Callable[[str], None] | None = None,
        client_name: str = "instantmesh-rpc host",
        cancel_grace: float | None = CANCEL_GRACE_S,
    ) -> None:
        self.command = command or WorkerCommand.default()
        self.worker_args = list(worker_args)
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.auto_restart = auto_restart
        self.client_name = client_name
        self.cancel_grace = cancel_grace
        self._on_stderr = on_stderr
        self._process: WorkerProcess | None = None
        self._session: RpcSession | None = None
        self._lock = threading.RLock()
        self._closed = False
        """Set by close(): without auto_restart, later calls raise WorkerStopped instead of starting a worker."""
        self.info: InitializeResult | None = None
        self.generation = 0
        """Counts worker starts; results remember the generation that produced them."""
        self.started_at = 0.0
        self.startup_seconds = 0.0

    # ---------------------------------------------------------------- life

    def start(self) -> InitializeResult:
        with self._lock:
            if (
                self._session is not None
                and not self._session.closed
                and self._process is not None
                and self._process.alive
            ):
                assert self.info is not None
                return self.info
            self._discard()
            self._closed = False
            began = time.monotonic()
            try:
                process = WorkerProcess(self.command, self.worker_args, on_stderr=self._on_stderr)
            except OSError as exc:
                raise WorkerStartError(f"cannot start the worker: {exc}") from exc
            stream = MessageStream(process.stdout, process.stdin)
            session = RpcSession(
                stream,
                lambda: self._crash_error(process),
                lambda call: self._watch_cancel(process, call),
                writer=FrameWriter(process.stdin.fileno(), name=f"worker-{process.pid}-writer"),
            )
            try:
                info: InitializeResult = session.call(
                    "initialize",
                    InitializeParams(PROTOCOL_VERSION, self.client_name),
                    timeout=self.startup_timeout,
                )
            except KeyboardInterrupt:
                process.kill()  # Ctrl-C during the handshake: never leave a half-started worker behind
                process.wait_exit(2.0)
                session.close()
                raise
            except Exception as exc:
                process.kill()
                code = process.wait_exit(2.0)
                session.close()
                if isinstance(exc, RequestTimeout):
                    reason = f"no answer to initialize within {self.startup_timeout:g} s"
                elif isinstance(exc, WorkerCrashed):
                    reason = "the worker exited before completing the handshake"
                else:
                    reason = f"handshake failed: {exc}"
                tail = process.stderr_tail()
                weights = [line for line in tail.splitlines() if line.startswith(WEIGHTS_MISSING_LINE)]
                if weights:
                    raise WeightsMissing(weights[-1][len(WEIGHTS_MISSING_LINE) :], code, tail) from exc
                missing = _MISSING_MODULE.findall(tail)
                if missing:
                    reason += f"; the worker environment lacks the Python package {missing[-1]!r} (install it there)"
                raise WorkerStartError(reason, code, tail) from exc
            self._process, self._session, self.info = process, session, info
            self.generation += 1
            self.started_at = time.monotonic()
            self.startup_seconds = self.started_at - began
            log.info(
                "worker pid %d started in %.2f s (%s, %s)", info.pid, self.startup_seconds, info.backend, info.device
            )
            return info

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> int | None:
        """Polite shutdown: the shutdown request, then EOF, then terminate, then kill. Returns the exit code.

        Afterwards, without ``auto_restart``, calls raise WorkerStopped until ``start()`` is called."""
        with self._lock:
            self._closed = True
            process, session = self._process, self._session
            self._process = self._session = None
            if process is None:
                return None
            if session is not None and not session.closed and process.alive:
                try:
                    session.call("shutdown", timeout=min(timeout, SHUTDOWN_REQUEST_S))
                except (HostError, OSError) as exc:
                    log.debug("shutdown request failed: %s", exc)
            if session is not None:
                session.close()
            return process.stop(timeout)

    def _discard(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait_exit(DISCARD_WAIT_S)
        if self._session is not None:
            self._session.close()
        self._process = self._session = None

    def _crash_error(self, process: WorkerProcess) -> HostError:
        code = process.wait_exit(1.0)
        if code == 0 and process.kill_reason is None:
            return WorkerStopped(f"the worker (pid {process.pid}) was shut down (exit code 0)")
        why = f": {process.kill_reason}" if process.kill_reason else ""
        return WorkerCrashed(
            f"the worker (pid {process.pid}) exited or closed its output{why}", code, process.stderr_tail()
        )

    def _watch_cancel(self, process: WorkerProcess, call: PendingCall) -> None:
        """After a timeout or a cancel: kill the worker if it does not answer the cancelled call within cancel_grace."""
        if self.cancel_grace is not None:
            kill_if_stuck(process, call, self.cancel_grace)

    def __enter__(self) -> WorkerClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def process(self) -> WorkerProcess | None:
        return self._process

    @property
    def alive(self) -> bool:
        return (
            self._process is not None and self._process.alive and self._session is not None and not self._session.closed
        )

    # ---------------------------------------------------------------- calls

    def _live_session(self) -> RpcSession:
        with self._lock:
            # A worker that has exited counts as gone even before the session's reader has seen EOF, so a
            # call made just after a crash restarts it (auto_restart) instead of failing on a dead pipe.
            exited = self._process is not None and not self._process.alive
            if self._closed and not self.auto_restart:
                raise WorkerStopped("the client was closed; call start() to start a new worker")
            if self._session is None or self._session.closed or exited:
                if self._session is not None and not self.auto_restart:
                    assert self._process is not None
                    raise self._crash_error(self._process)
                self.start()
            assert self._session is not None
            return self._session

    def request(
        self,
        method: str,
        params: msgspec.Struct | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> PendingCall:
        """Sends a request and returns once it is written; ``.result()`` waits, ``.cancel()`` cancels.

        ``timeout`` bounds the write (a worker that stopped reading). A request that could not even be
        written (the worker died just before) was never delivered, so with ``auto_restart`` it is sent
        once more to a new worker; delivered requests are never re-sent.
        """
        session = self._live_session()
        try:
            return session.request(method, params, on_progress, timeout)
        except (WorkerCrashed, WorkerStopped):
            if not self.auto_restart:
                raise
            with self._lock:
                if self._session is session:
                    self._discard()
            return self._live_session().request(method, params, on_progress, timeout)

    def call(
        self,
        method: str,
        params: msgspec.Struct | None = None,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        cancellation: Cancellation | None = None,
    ) -> Any:
        """One call; the timeout (else ``request_timeout``) covers writing the request and its answer.
        ``cancellation``: another thread may cancel the call (it then raises Cancelled)."""
        limit = timeout if timeout is not None else self.request_timeout
        deadline = None if limit is None else time.monotonic() + limit
        if cancellation is not None:
            cancellation.check(method)
        call = self.request(method, params, on_progress, limit)
        with cancellation.watching(call) if cancellation is not None else contextlib.nullcontext():
            return call.result(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _call_for(
        self,
        result_type: type[ResultT],
        method: str,
        params: msgspec.Struct | None = None,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        cancellation: Cancellation | None = None,
    ) -> ResultT:
        """``call`` for a method whose result type is known: the session decodes results by method, so a reply of
        another type is a bug in the session, not in the worker."""
        result = self.call(method, params, timeout=timeout, on_progress=on_progress, cancellation=cancellation)
        if not isinstance(result, result_type):
            raise TypeError(f"{method} answered with {type(result).__name__}, not {result_type.__name__}")
        return result

    def ping(self, timeout: float | None = QUICK_CALL_TIMEOUT_S) -> PingResult:
        return self._call_for(PingResult, "ping", timeout=timeout)

    def status(self, timeout: float | None = QUICK_CALL_TIMEOUT_S) -> StatusResult:
        return self._call_for(StatusResult, "status", timeout=timeout)

    def load(
        self,
        models: Sequence[str] = MODEL_NAMES,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> LoadResult:
        return self._call_for(
            LoadResult,
            "load",
            LoadParams(cast(list[ModelName], list(models))),
            timeout=timeout,
            on_progress=on_progress,
        )

    def unload(self, models: Sequence[str] = MODEL_NAMES, *, timeout: float | None = None) -> UnloadResult:
        return self._call_for(
            UnloadResult, "unload", UnloadParams(cast(list[ModelName], list(models))), timeout=timeout
        )

    def generate_views(
        self,
        params: GenerateViewsParams,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        cancellation: Cancellation | None = None,
    ) -> ViewsResult:
        return self._call_for(
            ViewsResult, "generate_views", params, timeout=timeout, on_progress=on_progress, cancellation=cancellation
        )

    def reconstruct(
        self,
        params: ReconstructParams,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        cancellation: Cancellation | None = None,
    ) -> MeshResult:
        return self._call_for(
            MeshResult, "reconstruct", params, timeout=timeout, on_progress=on_progress, cancellation=cancellation
        )

    def shutdown(self) -> ShutdownResult:
        return self._call_for(ShutdownResult, "shutdown", timeout=QUICK_CALL_TIMEOUT_S)
