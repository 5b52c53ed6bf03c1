"""The worker's JSON-RPC session: envelope checks, ids in flight, quick methods, replies and their limits.

The reader thread calls :meth:`WorkerSession.handle` for every frame. Quick methods (initialize, ping,
status, shutdown) and the cancel notification are answered there at once, so they work while model work
runs; model methods go to the job queue (rpcworker/jobs.py) and run their handler (rpcworker/handlers.py).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from . import __version__
from .backends.base import Backend, CompilingBackend
from .handlers import BARRIER_METHODS, BATCH_HANDLERS, MESH_LANE_METHODS, MESH_LANE_NEEDS, MODEL_HANDLERS, Workspace
from .handles import ViewStore
from .job import Job
from .jobs import JobQueue
from .options import DEFAULT_MAX_HANDLES
from .outputs import OutputPolicy
from .queued_inputs import DEFAULT_MAX_QUEUED_INLINE_MIB, MIB, inline_bytes
from .replies import ReplySender
from .wire.envelopes import Incoming, Notification, RequestId, Response
from .wire.errors import (
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NotInitialized,
    RpcError,
    ShuttingDown,
    VersionMismatch,
)
from .wire.framing import BadFrame, MessageStream
from .wire.messages import (
    METHODS,
    PROTOCOL_VERSION,
    CancelParams,
    CompileStatus,
    EmptyParams,
    InitializeParams,
    InitializeResult,
    PingResult,
    ShutdownResult,
    StatusResult,
    major,
)

log = logging.getLogger("rpcworker")

_PARAM_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(spec.params) for name, spec in METHODS.items()
}
_CANCEL_DECODER = msgspec.json.Decoder(CancelParams)
_EMPTY = msgspec.Raw(b"{}")

QuickMethod = Callable[["WorkerSession", Any], msgspec.Struct]


class WorkerSession:
    def __init__(
        self,
        backend: Backend,
        stream: MessageStream,
        *,
        max_handles: int = DEFAULT_MAX_HANDLES,
        output_root: str | None = None,
        before_commit: Callable[[str], None] | None = None,
        max_batch: int = 1,
        batch_wait_s: float = 0.0,
        mesh_lane: bool = False,
        max_queued_inline_bytes: int = DEFAULT_MAX_QUEUED_INLINE_MIB * MIB,
    ) -> None:
        self.backend = backend
        self.stream = stream
        self.replies = ReplySender(stream)
        self.workspace = Workspace(backend, ViewStore(max_handles), OutputPolicy(output_root), before_commit)
        self.started = time.monotonic()
        self.initialized = False
        self.stopping = False
        self.on_shutdown: Callable[[], None] | None = None
        """Called once the shutdown reply is out (the server then lingers briefly, answering shutting_down)."""
        self._served = 0
        self._lock = threading.Lock()
        self._in_flight: dict[RequestId, Job] = {}
        # The mesh lane opens once both models are loaded, so a load never runs beside other model work.
        side_open = (lambda: set(MESH_LANE_NEEDS) <= set(backend.loaded())) if mesh_lane else None
        self.jobs = JobQueue(
            self.replies.send,
            self._job_done,
            max_batch=max_batch,
            batch_wait_s=batch_wait_s,
            side_open=side_open,
            max_queued_inline_bytes=max_queued_inline_bytes,
        )
        self._switches = 0
        if isinstance(backend, CompilingBackend):
            backend.watch_compile(self._compile_changed, self._switch_wanted)

    @property
    def requests_served(self) -> int:
        with self._lock:
            return self._served

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    # ------------------------------------------------------------------ reader side

    def handle(self, received: Incoming | BadFrame) -> None:
        """Acts on one frame. Never raises for bad input: every problem becomes an error reply."""
        if isinstance(received, BadFrame):
            self.replies.bad_frame(received)
            return
        msg = received
        reply_id = msg.id if isinstance(msg.id, (int, str)) else None
        if msg.jsonrpc != "2.0":
            detail = '"jsonrpc" must be "2.0"'
            self.replies.error(reply_id, InvalidRequest(detail, {"detail": detail, "jsonrpc": _shown(msg.jsonrpc)}))
            return
        if isinstance(msg.method, msgspec.UnsetType):
            if msg.result is not msgspec.UNSET or msg.error is not msgspec.UNSET:
                log.warning("ignoring a response sent to the worker (id %r)", _shown(msg.id))
                return
            detail = "a request needs a method"
            self.replies.error(reply_id, InvalidRequest(detail, {"detail": detail}))
            return
        if msg.id is msgspec.UNSET:
            self._notification(msg.method, msg.params)
            return
        if reply_id is None:
            detail = "a request id must be a number or a string, not null"
            self.replies.error(None, InvalidRequest(detail, {"detail": detail}))
            return
        try:
            self._request(reply_id, msg.method, msg.params)
        except RpcError as err:
            self.replies.error(reply_id, err)

    def _request(self, request_id: RequestId, method: str, raw_params: Any) -> None:
        # Before initialize every other request gets not_initialized, whatever its method or params.
        if method != "initialize" and not self.initialized:
            raise NotInitialized(
                f"{method} before initialize; the first request must be initialize", {"method": method}
            )
        if method not in METHODS:
            raise MethodNotFound(f"unknown method {method!r}", {"method": method, "methods": sorted(METHODS)})
        params = _decode_params(method, raw_params)
        if self.stopping:
            raise ShuttingDown(f"{method} refused: the worker is shutting down", {"method": method})
        with self._lock:
            # Checked for every method, quick ones too: a reused id would make two replies indistinguishable.
            if request_id in self._in_flight:
                detail = f"request id {request_id!r} is already in flight"
                raise InvalidRequest(detail, {"detail": detail, "id": request_id})
            handler = MODEL_HANDLERS.get(method)
            if handler is not None:
                workspace = self.workspace
                job = Job(
                    request_id,
                    method,
                    params,
                    lambda p, ctx: handler(workspace, p, ctx),
                    side=method in MESH_LANE_METHODS,
                    barrier=method in BARRIER_METHODS,
                    inline_bytes=inline_bytes(params),
                )
                batching = BATCH_HANDLERS.get(method)
                if batching is not None and self.jobs.max_batch > 1:
                    key_of, batch_handler = batching
                    job.batch_key = key_of(params)
                    job.run_batch = lambda batch, ctxs: batch_handler(workspace, batch, ctxs)
                self.jobs.submit(job)  # refused (busy) before it counts as in flight
                self._in_flight[request_id] = job
                return
        result = QUICK_METHODS[method](self, params)
        self.replies.send(Response(request_id, result))
        self._count_served()
        if method == "shutdown":
            self.stop()
            if self.on_shutdown is not None:
                self.on_shutdown()

    def _notification(self, method: str, raw_params: Any) -> None:
        if method != "cancel":
            log.warning("ignoring unknown notification %r", method)
            return
        try:
            params = _CANCEL_DECODER.decode(raw_params if raw_params is not msgspec.UNSET else _EMPTY)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            log.warning("ignoring cancel with bad params: %s", exc)
            return
        self.cancel(params.id)

    def cancel(self, request_id: RequestId) -> bool:
        with self._lock:
            job = self._in_flight.get(request_id)
        if job is None:
            return False
        job.cancelled.set()
        return True

    # ------------------------------------------------------------------ compiled views

    def _compile_changed(self, status: CompileStatus) -> None:
        """Every change of the compiled views' status goes to the host as a ``compile`` notification."""
        if not self.stopping:
            self.replies.send(Notification("compile", status))

    def _switch_wanted(self) -> None:
        """Queues the switch to the compiled views as a job of its own that runs alone: after the requests before
        it, before those after it, so a request runs wholly eager or wholly compiled."""
        backend = self.backend
        if self.stopping or not isinstance(backend, CompilingBackend):
            return
        with self._lock:
            self._switches += 1
            number = self._switches

        def switch(params: Any, ctx: Any) -> msgspec.Struct:
            if not self.stopping:
                backend.switch_compiled()
            return EmptyParams()

        self.jobs.submit(Job(f"compile-switch-{number}", "switch_compiled", None, switch, barrier=True, internal=True))

    # ------------------------------------------------------------------ executor side

    def _job_done(self, job: Job, result: msgspec.Struct | None, error: RpcError | None) -> None:
        if job.internal:  # no request, no reply
            if error is not None:
                log.error("%s failed: %s", job.method, error)
            return
        # Bookkeeping before the reply goes out: a host that reads the reply and asks for status at once
        # must see the job finished (not busy, counted).
        with self._lock:
            self._served += 1
            self._in_flight.pop(job.id, None)
        if error is not None:
            self.replies.error(job.id, error)
        else:
            self.replies.send(Response(job.id, result))

    def _count_served(self) -> None:
        with self._lock:
            self._served += 1

    # ------------------------------------------------------------------ lifecycle

    def stop(self, grace: float = 0.0) -> None:
        """Cancels queued and running work; waits up to ``grace`` seconds for the executor to finish."""
        self.stopping = True
        with self._lock:
            jobs = list(self._in_flight.values())
        for job in jobs:
            job.cancelled.set()
        self.jobs.stop(grace)


def serve_stream(session: WorkerSession, *, grace_s: float, at_end_of_input: Callable[[], object] | None = None) -> int:
    """The serve loop, one for the stdio worker, the in-memory tests and the fuzz: hands every frame on the
    session's stream to the session until the stream ends; then calls ``at_end_of_input``, stops the session
    (its work gets ``grace_s`` seconds) and closes the output. Returns the number of frames read."""
    frames = 0
    while (received := session.stream.receive()) is not None:
        frames += 1
        session.handle(received)
    if at_end_of_input is not None:
        at_end_of_input()
    session.stop(grace=grace_s)
    session.stream.close_writer()
    return frames


# ---------------------------------------------------------------------- quick methods


def _initialize(session: WorkerSession, params: InitializeParams) -> InitializeResult:
    if major(params.protocol_version) != major(PROTOCOL_VERSION):
        raise VersionMismatch(
            f"host speaks protocol {params.protocol_version}, this worker speaks {PROTOCOL_VERSION}",
            {"host": params.protocol_version, "worker": PROTOCOL_VERSION},
        )
    session.initialized = True
    info = session.backend.info()
    return InitializeResult(
        protocol_version=PROTOCOL_VERSION,
        worker_version=__version__,
        python=sys.version.split()[0],
        pid=os.getpid(),
        backend=info.name,
        model_label=info.model_label,
        device=info.device,
        torch=info.torch,
        cuda=info.cuda,
        capabilities=info.capabilities,
        max_line_bytes=session.stream.max_line_bytes,
        max_handles=session.workspace.views.capacity,
        weights=info.weights,
        max_queued_inline_bytes=session.jobs.queued_inline.limit,
    )


def _ping(session: WorkerSession, params: Any) -> PingResult:
    return PingResult()


def _status(session: WorkerSession, params: Any) -> StatusResult:
    backend = session.backend
    info = backend.info()
    return StatusResult(
        backend=info.name,
        model_label=info.model_label,
        device=info.device,
        loaded=session.backend.loaded(),
        memory=session.backend.memory(),
        requests_served=session.requests_served,
        uptime_s=time.monotonic() - session.started,
        handles=len(session.workspace.views),
        max_handles=session.workspace.views.capacity,
        busy=session.jobs.busy,
        queued=session.jobs.queued,
        pid=os.getpid(),
        batch=session.jobs.batch,
        max_batch=session.jobs.max_batch,
        mesh_lane=session.jobs.side_lane,
        reconstructing=session.jobs.beside,
        weights=info.weights,
        queued_inline_bytes=session.jobs.queued_inline.queued,
        compile=backend.compile_status() if isinstance(backend, CompilingBackend) else CompileStatus("off"),
    )


def _shutdown(session: WorkerSession, params: Any) -> ShutdownResult:
    return ShutdownResult(session.requests_served + 1)


QUICK_METHODS: dict[str, QuickMethod] = {
    "initialize": _initialize,
    "ping": _ping,
    "status": _status,
    "shutdown": _shutdown,
}


def _decode_params(method: str, raw: Any) -> Any:
    try:
        return _PARAM_DECODERS[method].decode(raw if raw is not msgspec.UNSET else _EMPTY)
    except msgspec.ValidationError as exc:
        detail = str(exc).replace("`$", "`$.params")
        raise InvalidParams(f"invalid params for {method}: {detail}", {"method": method, "detail": detail}) from exc
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:  # the framing should have caught these
        raise InvalidParams(f"invalid params for {method}: {exc}", {"method": method, "detail": str(exc)}) from exc


def _shown(value: Any) -> Any:
    return None if value is msgspec.UNSET else value
