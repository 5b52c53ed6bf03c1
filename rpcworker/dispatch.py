"""Turns received messages into method calls and replies; runs model work on one executor thread.

The reader thread calls :meth:`Dispatcher.handle` for every frame. Quick methods (initialize, ping, status,
shutdown) and the cancel notification are answered there at once, so they work while a model call runs;
model methods are queued to a single executor thread, one at a time, in arrival order.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from . import __version__
from .backends.base import Backend
from .errors import (
    Cancelled,
    InternalError,
    InvalidParams,
    InvalidRequest,
    MessageTooLarge,
    MethodNotFound,
    NotInitialized,
    OutOfMemory,
    ParseError,
    RpcError,
    ShuttingDown,
    VersionMismatch,
)
from .handles import ViewStore
from .images import load_input_image, load_views_grid
from .outputs import OutputPolicy, atomic_output, atomic_outputs
from .protocol import (
    METHODS,
    PROTOCOL_VERSION,
    CancelParams,
    ErrorObject,
    ErrorResponse,
    GenerateViewsParams,
    Incoming,
    InitializeParams,
    InitializeResult,
    LoadParams,
    LoadResult,
    MeshResult,
    Notification,
    PingResult,
    ProgressParams,
    ReconstructParams,
    RequestId,
    Response,
    ShutdownResult,
    StatusResult,
    UnloadParams,
    UnloadResult,
    ViewsHandle,
    ViewsResult,
    major,
)
from .transport import BadFrame, FrameTooLarge, MessageStream

log = logging.getLogger("rpcworker")

_PARAM_DECODERS = {name: msgspec.json.Decoder(spec.params) for name, spec in METHODS.items()}
_CANCEL_DECODER = msgspec.json.Decoder(CancelParams)
_EMPTY = msgspec.Raw(b"{}")

ERROR_TEXT_LIMIT = 4096
"""Longest string echoed in an error's message or data: a reply never grows with what the request carried."""


@dataclass
class Job:
    id: RequestId
    method: str
    params: Any
    cancelled: threading.Event = field(default_factory=threading.Event)


class JobContext:
    """The WorkContext a backend sees: progress goes out as notifications, cancel is checked on demand."""

    def __init__(self, job: Job, send: Callable[[msgspec.Struct], None]) -> None:
        self._job = job
        self._send = send

    def progress(self, stage: str, step: int, total: int, message: str = "") -> None:
        self._send(Notification("progress", ProgressParams(self._job.id, stage, step, total, message)))

    def check_cancelled(self) -> None:
        if self._job.cancelled.is_set():
            raise Cancelled(f"request {self._job.id} ({self._job.method}) was cancelled", {"id": self._job.id})


class Dispatcher:
    def __init__(
        self,
        backend: Backend,
        stream: MessageStream,
        *,
        max_handles: int = 16,
        output_root: str | None = None,
    ) -> None:
        self.backend = backend
        self.stream = stream
        self.views = ViewStore(max_handles)
        self.outputs = OutputPolicy(output_root)
        self.started = time.monotonic()
        self.requests_served = 0
        self._served_lock = threading.Lock()
        self.on_shutdown: Callable[[], None] | None = None
        """Called once the shutdown reply is out (the server then lingers briefly, answering shutting_down)."""
        self.initialized = False
        self.stopping = False
        self._jobs: dict[RequestId, Job] = {}
        self._jobs_lock = threading.Lock()
        self._current: Job | None = None
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._executor = threading.Thread(target=self._run_jobs, name="model-executor", daemon=True)
        self._executor.start()

    # ------------------------------------------------------------------ reader side

    def handle(self, received: Incoming | BadFrame) -> None:
        """Acts on one frame. Never raises for bad input: every problem becomes an error reply."""
        if isinstance(received, BadFrame):
            self._reply_bad_frame(received)
            return
        msg = received
        has_id = msg.id is not msgspec.UNSET
        if msg.jsonrpc != "2.0":
            detail = '"jsonrpc" must be "2.0"'
            self._reply_error(msg.id if has_id else None, InvalidRequest(detail, {"detail": detail, "jsonrpc": _show(msg.jsonrpc)}))
            return
        if msg.method is msgspec.UNSET:
            if msg.result is not msgspec.UNSET or msg.error is not msgspec.UNSET:
                log.warning("ignoring a response sent to the worker (id %r)", _show(msg.id))
                return
            detail = "a request needs a method"
            self._reply_error(msg.id if has_id else None, InvalidRequest(detail, {"detail": detail}))
            return
        if not has_id:
            self._notification(msg.method, msg.params)
            return
        if msg.id is None:
            detail = "a request id must be a number or a string, not null"
            self._reply_error(None, InvalidRequest(detail, {"detail": detail}))
            return
        try:
            self._request(msg.id, msg.method, msg.params)
        except RpcError as err:
            self._reply_error(msg.id, err)

    def _request(self, request_id: RequestId, method: str, raw_params: Any) -> None:
        # Before initialize every other request gets not_initialized, whatever its method or params.
        if method != "initialize" and not self.initialized:
            raise NotInitialized(f"{method} before initialize; the first request must be initialize", {"method": method})
        spec = METHODS.get(method)
        if spec is None:
            raise MethodNotFound(f"unknown method {method!r}", {"method": method, "methods": sorted(METHODS)})
        params = _decode_params(method, raw_params)
        if self.stopping:
            raise ShuttingDown(f"{method} refused: the worker is shutting down", {"method": method})
        with self._jobs_lock:
            # Checked for every method, quick ones too: a reused id would make two replies indistinguishable.
            if request_id in self._jobs:
                detail = f"request id {request_id!r} is already in flight"
                raise InvalidRequest(detail, {"detail": detail, "id": request_id})
            if spec.runs_on_executor:
                job = Job(request_id, method, params)
                self._jobs[request_id] = job
                self._queue.put(job)
                return
        result = getattr(self, f"_do_{method}")(params)
        self._send(Response(request_id, result))
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
        with self._jobs_lock:
            job = self._jobs.get(request_id)
        if job is None:
            return False
        job.cancelled.set()
        return True

    # ------------------------------------------------------------------ quick methods

    def _do_initialize(self, params: InitializeParams) -> InitializeResult:
        if major(params.protocol_version) != major(PROTOCOL_VERSION):
            raise VersionMismatch(
                f"host speaks protocol {params.protocol_version}, this worker speaks {PROTOCOL_VERSION}",
                {"host": params.protocol_version, "worker": PROTOCOL_VERSION},
            )
        self.initialized = True
        info = self.backend.info()
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
            max_line_bytes=self.stream.max_line_bytes,
            max_handles=self.views.capacity,
        )

    def _do_ping(self, params: Any) -> PingResult:
        return PingResult()

    def _do_status(self, params: Any) -> StatusResult:
        info = self.backend.info()
        current = self._current
        return StatusResult(
            backend=info.name,
            model_label=info.model_label,
            device=info.device,
            loaded=self.backend.loaded(),
            memory=self.backend.memory(),
            requests_served=self.requests_served,
            uptime_s=time.monotonic() - self.started,
            handles=len(self.views),
            max_handles=self.views.capacity,
            busy=current.method if current else None,
            queued=self._queue.qsize(),
            pid=os.getpid(),
        )

    def _do_shutdown(self, params: Any) -> ShutdownResult:
        return ShutdownResult(self.requests_served + 1)

    # ------------------------------------------------------------------ executor side

    def _run_jobs(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._current = job
            reply: Response | None = None
            error: RpcError | None = None
            try:
                JobContext(job, self._send).check_cancelled()
                reply = Response(job.id, getattr(self, f"_do_{job.method}")(job.params, JobContext(job, self._send)))
            except RpcError as err:
                error = err
            except MemoryError as exc:
                error = OutOfMemory(f"out of host memory in {job.method}", {"device": "cpu", "detail": str(exc)})
            except Exception as exc:  # the worker must keep serving whatever a backend raises
                log.error("%s failed:\n%s", job.method, traceback.format_exc())
                error = InternalError(
                    f"{job.method} failed: {type(exc).__name__}: {exc}",
                    {"type": type(exc).__name__, "traceback": traceback.format_exc(limit=8)[-4000:]},
                )
            # Bookkeeping before the reply goes out: a host that reads the reply and asks for status at
            # once must see the job finished (not busy, counted).
            self._current = None
            self._count_served()
            with self._jobs_lock:
                self._jobs.pop(job.id, None)
            if reply is not None:
                self._send(reply)
            else:
                assert error is not None
                self._reply_error(job.id, error)

    def _do_load(self, params: LoadParams, ctx: JobContext) -> LoadResult:
        seconds = self.backend.load(list(dict.fromkeys(params.models)), ctx)
        return LoadResult(seconds, self.backend.loaded(), self.backend.info().device)

    def _do_unload(self, params: UnloadParams, ctx: JobContext) -> UnloadResult:
        unloaded = self.backend.unload(list(params.models))
        if "views" in unloaded:
            self.views.clear()
        return UnloadResult(unloaded, self.backend.loaded(), self.backend.memory())

    def _do_generate_views(self, params: GenerateViewsParams, ctx: JobContext) -> ViewsResult:
        _check_range("num_inference_steps", params.num_inference_steps, 1, 1000)
        _check_range("guidance_scale", params.guidance_scale, 0.0, 100.0)
        _check_range("seed", params.seed, 0, 2**63 - 1)
        out = None if params.output_path is None else self.outputs.check(params.output_path, "output_path", params.overwrite)
        if out is not None and not out.lower().endswith(".png"):
            raise InvalidParams(f"output_path must end in .png, got {params.output_path}", {"field": "output_path"})
        start = time.perf_counter()
        image = load_input_image(params.image)
        read_s = time.perf_counter() - start
        generated = self.backend.generate_views(image, params.seed, params.num_inference_steps, params.guidance_scale, ctx)
        ctx.check_cancelled()
        save_s = 0.0
        if out is not None:
            t = time.perf_counter()
            with atomic_output(out, overwrite=params.overwrite, before_commit=self._before_commit) as tmp:
                generated.grid.save(tmp, format="PNG")
            save_s = time.perf_counter() - t
        handle = self.views.put(generated.views, generated.view_size)
        timings = {"read_input_s": read_s, **generated.timings, "save_s": save_s, "total_s": time.perf_counter() - start}
        return ViewsResult(
            handle=handle,
            grid_path=out,
            grid_width=generated.grid.width,
            grid_height=generated.grid.height,
            view_size=generated.view_size,
            seed=params.seed,
            num_inference_steps=params.num_inference_steps,
            model_label=self.backend.info().model_label,
            timings=timings,
        )

    def _do_reconstruct(self, params: ReconstructParams, ctx: JobContext) -> MeshResult:
        from instantmesh.export import (
            MESH_FORMATS,
            TEXTURED_FORMATS,
            mesh_bounds,
            texture_companions,
            write_mesh,
            write_textured_mesh,
        )

        fmt = params.format or os.path.splitext(params.output_path)[1].lstrip(".").lower()
        if fmt not in MESH_FORMATS:
            raise InvalidParams(
                f"cannot tell the mesh format of {params.output_path!r}; use .obj, .glb or .ply or set format",
                {"field": "format", "path": params.output_path},
            )
        if params.texture_map and fmt not in TEXTURED_FORMATS:
            raise InvalidParams(
                f"texture_map needs obj or glb output; {fmt} has no standard way to reference a texture "
                "(use texture_map=false for vertex colours in PLY)",
                {"field": "texture_map", "value": fmt},
            )
        out = self.outputs.check(params.output_path, "output_path", params.overwrite)
        companions = texture_companions(out, fmt) if params.texture_map else []
        companions = [self.outputs.check(path, "output_path", params.overwrite) for path in companions]
        if out in companions:
            raise InvalidParams(
                f"output_path {params.output_path} is also the name of its own texture or material file; use the .obj extension",
                {"field": "output_path", "path": params.output_path},
            )
        start = time.perf_counter()
        if isinstance(params.views, ViewsHandle):
            views, _ = self.views.get(params.views.handle)
        else:
            views, _ = self.backend.views_from_grid(load_views_grid(params.views))
        mesh = self.backend.reconstruct(views, params.texture_map, ctx)
        ctx.check_cancelled()
        if mesh.textured != params.texture_map:
            raise InternalError(
                f"the {self.backend.info().name} backend returned a mesh {'with' if mesh.textured else 'without'} a texture map "
                f"for texture_map={params.texture_map}",
                {"type": "BackendError"},
            )
        t = time.perf_counter()
        # The mesh goes last: once it is in place, its companions are too.
        with atomic_outputs([*companions, out], overwrite=params.overwrite, before_commit=self._before_commit) as tmps:
            if mesh.textured:
                write_textured_mesh(
                    tmps[-1], fmt, mesh.vertices, mesh.faces, mesh.uvs, mesh.uv_faces, mesh.texture, params.orientation,
                    mtl_path=tmps[0] if companions else None,
                    texture_path=tmps[1] if companions else None,
                    reference_stem=os.path.splitext(os.path.basename(out))[0],
                )
            else:
                write_mesh(tmps[-1], fmt, mesh.vertices, mesh.faces, mesh.vertex_colors, params.orientation)
        export_s = time.perf_counter() - t
        return MeshResult(
            mesh_path=out,
            format=fmt,
            num_vertices=int(len(mesh.vertices)),
            num_faces=int(len(mesh.faces)),
            bounds=mesh_bounds(mesh.vertices, params.orientation),
            model_label=self.backend.info().model_label,
            timings={**mesh.timings, "export_s": export_s, "total_s": time.perf_counter() - start},
            extra_paths=companions,
        )

    def _count_served(self) -> None:
        with self._served_lock:
            self.requests_served += 1

    def _before_commit(self, tmp: str) -> None:
        """Lets a backend act on a written output before it is renamed into place (the mock's write_delay)."""
        hook = getattr(self.backend, "before_commit", None)
        if hook is not None:
            hook(tmp)

    # ------------------------------------------------------------------ lifecycle and replies

    def stop(self, grace: float = 0.0) -> None:
        """Cancels queued and running work; waits up to ``grace`` seconds for the executor to finish."""
        self.stopping = True
        with self._jobs_lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancelled.set()
        self._queue.put(None)
        if grace > 0:
            self._executor.join(grace)

    def _send(self, message: msgspec.Struct) -> None:
        try:
            self.stream.send(message)
        except FrameTooLarge as exc:
            log.error("a %s is too large to send: %s", type(message).__name__, exc)
            request_id = getattr(message, "id", None)
            if request_id is not None and not isinstance(message, ErrorResponse):
                self._reply_error(request_id, MessageTooLarge(f"the reply is too large to send: {exc}", {"size": exc.size, "limit": exc.limit}))
        except UnicodeEncodeError as exc:
            # A string that is not valid UTF-8 (a path whose name is not UTF-8 reaches Python as surrogates):
            # never a dropped frame, always an error on the request's id.
            log.error("could not encode a %s: %s", type(message).__name__, exc)
            request_id = getattr(message, "id", None)
            if request_id is not None and not isinstance(message, ErrorResponse):
                self._reply_error(request_id, InternalError(
                    "the reply cannot be sent: it holds a string that is not valid UTF-8 "
                    "(a file or directory name that is not UTF-8?)",
                    {"type": "UnicodeEncodeError", "detail": _utf8(str(exc))},
                ))
            elif isinstance(message, ErrorResponse):
                error = message.error
                self._send(ErrorResponse(message.id, ErrorObject(error.code, _utf8(error.message), _utf8(error.data))))
        except (TypeError, msgspec.EncodeError) as exc:
            log.error("could not encode a %s: %s", type(message).__name__, exc)
            request_id = getattr(message, "id", None)
            if request_id is not None:
                self._reply_error(request_id, InternalError(f"the worker built a reply it cannot encode: {exc}", {"type": type(exc).__name__}))
        except (ValueError, OSError):
            log.warning("could not send a %s: the host is gone", type(message).__name__)

    def _reply_error(self, request_id: RequestId | None, err: RpcError) -> None:
        """Sends an error; long strings the request put in it (a huge path or method name) are cut."""
        self._send(ErrorResponse(request_id, ErrorObject(err.code, _clip(err.message), _clip(err.data) or None)))

    def _reply_bad_frame(self, bad: BadFrame) -> None:
        data = {"detail": bad.detail, "size": bad.size}
        if bad.reason == "too_large":
            err: RpcError = MessageTooLarge(f"message discarded: {bad.detail}", {**data, "limit": self.stream.max_line_bytes})
        elif bad.reason == "parse":
            err = ParseError(f"not valid JSON: {bad.detail}", data)
        else:
            err = InvalidRequest(f"not a JSON-RPC message: {bad.detail}", data)
        self._reply_error(None, err)


def _decode_params(method: str, raw: Any) -> Any:
    try:
        return _PARAM_DECODERS[method].decode(raw if raw is not msgspec.UNSET else _EMPTY)
    except msgspec.ValidationError as exc:
        detail = str(exc).replace("`$", "`$.params")
        raise InvalidParams(f"invalid params for {method}: {detail}", {"method": method, "detail": detail}) from exc
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:  # the transport should have caught these
        raise InvalidParams(f"invalid params for {method}: {exc}", {"method": method, "detail": str(exc)}) from exc


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InvalidParams(f"{name} must be between {low:g} and {high:g}, got {value}", {"field": name, "value": value})


def _clip(value: Any, limit: int = ERROR_TEXT_LIMIT) -> Any:
    """``value`` with every string cut to ``limit`` characters (and containers to 64 items)."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}... [cut: {len(value)} characters]"
    if isinstance(value, dict):
        return {_clip(str(k), 256): _clip(v, limit) for k, v in list(value.items())[:64]}
    if isinstance(value, (list, tuple)):
        return [_clip(v, limit) for v in value[:64]]
    return value


def _utf8(value: Any) -> Any:
    """``value`` with every string made encodable: a lone surrogate (an undecodable byte) becomes ``\\udcXX``."""
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_utf8(k): _utf8(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_utf8(v) for v in value]
    return value


def _show(value: Any) -> Any:
    return None if value is msgspec.UNSET else value
