"""The model methods, one function each, registered by name: what a request does once it is valid.

Params arrive decoded and range-checked by their msgspec types (rpcworker/wire/messages.py); a handler
checks what types cannot say (output rules, the mesh format of a path), reads inputs, calls the backend
and writes outputs. Adding a method touches this module (and the wire types) only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from .backends.base import Backend, BatchingBackend, GeneratedViews
from .handles import ViewStore
from .images import load_input_image, load_views_grid
from .job import Deferred, JobContext
from .mesh_output import plan_mesh_outputs, write_mesh_outputs
from .outputs import OutputPolicy, atomic_output
from .wire.errors import InternalError, InvalidParams
from .wire.messages import (
    GenerateViewsParams,
    LoadParams,
    LoadResult,
    MeshResult,
    ReconstructParams,
    UnloadParams,
    UnloadResult,
    ViewsHandle,
    ViewsResult,
)

if TYPE_CHECKING:
    from PIL import Image


GRID_PNG_COMPRESS_LEVEL = 1
"""zlib level of the views grid PNG: lossless at any level; 1 writes a 960x640 grid about 5x faster than
Pillow's default 6 for files about 20% larger, and the writes of a batch's grids lie between two diffusions."""


@dataclass
class Workspace:
    """What model methods act on: the backend, the views kept between calls, and the output rules."""

    backend: Backend
    views: ViewStore
    outputs: OutputPolicy
    before_commit: Callable[[str], None] | None = None
    """Sees each finished output just before it is moved into place (the mock's write_delay)."""


Handler = Callable[[Workspace, Any, JobContext], "msgspec.Struct | Deferred"]
BatchHandler = Callable[
    [Workspace, Sequence[Any], Sequence[JobContext]], "list[msgspec.Struct | Deferred | BaseException]"
]
MODEL_HANDLERS: dict[str, Handler] = {}


def handles(method: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        MODEL_HANDLERS[method] = function
        return function

    return register


@handles("load")
def load(ws: Workspace, params: LoadParams, ctx: JobContext) -> LoadResult:
    seconds = ws.backend.load(list(dict.fromkeys(params.models)), ctx)
    return LoadResult(seconds, ws.backend.loaded(), ws.backend.info().device)


@handles("unload")
def unload(ws: Workspace, params: UnloadParams, ctx: JobContext) -> UnloadResult:
    unloaded = ws.backend.unload(list(params.models))
    if "views" in unloaded:
        ws.views.clear()
    return UnloadResult(unloaded, ws.backend.loaded(), ws.backend.memory())


@dataclass
class PreparedViews:
    """A generate_views request whose output rules are checked and whose input is read: ready for the model."""

    params: GenerateViewsParams
    out: str | None
    image: Image.Image
    start: float
    read_s: float


def _prepare_views(ws: Workspace, params: GenerateViewsParams) -> PreparedViews:
    out = None if params.output_path is None else ws.outputs.check(params.output_path, "output_path", params.overwrite)
    if out is not None and not out.lower().endswith(".png"):
        raise InvalidParams(f"output_path must end in .png, got {params.output_path}", {"field": "output_path"})
    start = time.perf_counter()
    image = load_input_image(params.image)
    return PreparedViews(params, out, image, start, time.perf_counter() - start)


def _finish_views(
    ws: Workspace, prep: PreparedViews, generated: GeneratedViews, ctx: JobContext, batch_size: int
) -> Deferred:
    """The rest of a generate_views once the views exist: the grid PNG and the handle, on the finisher thread
    (the host learns the handle from this reply only, so nothing can ask for it sooner)."""
    ctx.check_cancelled()
    params, out = prep.params, prep.out

    def finish() -> ViewsResult:
        save_s = 0.0
        if out is not None:
            t = time.perf_counter()
            with atomic_output(out, params.overwrite, ws.before_commit, ws.outputs.root) as tmp:
                generated.grid.save(tmp, format="PNG", compress_level=GRID_PNG_COMPRESS_LEVEL)
            save_s = time.perf_counter() - t
        handle = ws.views.put(generated.views, generated.view_size)
        return ViewsResult(
            handle=handle,
            grid_path=out,
            grid_width=generated.grid.width,
            grid_height=generated.grid.height,
            view_size=generated.view_size,
            seed=params.seed,
            num_inference_steps=params.num_inference_steps,
            model_label=ws.backend.info().model_label,
            weights=ws.backend.info().weights,
            timings={
                "read_input_s": prep.read_s,
                **generated.timings,
                "save_s": save_s,
                "total_s": time.perf_counter() - prep.start,
                "batch_size": float(batch_size),
            },
        )

    return Deferred(finish)


@handles("generate_views")
def generate_views(ws: Workspace, params: GenerateViewsParams, ctx: JobContext) -> Deferred:
    prep = _prepare_views(ws, params)
    generated = ws.backend.generate_views(
        prep.image, params.seed, params.num_inference_steps, params.guidance_scale, ctx
    )
    return _finish_views(ws, prep, generated, ctx, 1)


def views_batch_key(params: GenerateViewsParams) -> tuple[str, int, float]:
    """generate_views requests with equal keys can share a diffusion batch: same steps and guidance."""
    return ("generate_views", params.num_inference_steps, params.guidance_scale)


def generate_views_batch(
    ws: Workspace, batch: Sequence[GenerateViewsParams], ctxs: Sequence[JobContext]
) -> list[msgspec.Struct | Deferred | BaseException]:
    """Several compatible generate_views requests through one diffusion batch.

    Each request's inputs and output rules are checked first: one that fails (or was cancelled) drops out
    alone before the batch starts. The backend then gets one seed and one context per object.
    """
    outcomes: list[msgspec.Struct | Deferred | BaseException | None] = [None] * len(batch)
    ready: list[tuple[int, PreparedViews]] = []
    for i, (params, ctx) in enumerate(zip(batch, ctxs, strict=True)):
        try:
            ctx.check_cancelled()
            ready.append((i, _prepare_views(ws, params)))
        except Exception as exc:
            outcomes[i] = exc
    backend = ws.backend
    if ready:
        if not isinstance(backend, BatchingBackend):
            raise InternalError(
                f"the {backend.info().name} backend cannot batch generate_views", {"type": "BackendError"}
            )
        first = ready[0][1].params
        generated = backend.generate_views_batch(
            [prep.image for _, prep in ready],
            [prep.params.seed for _, prep in ready],
            first.num_inference_steps,
            first.guidance_scale,
            [ctxs[i] for i, _ in ready],
        )
        if len(generated) != len(ready):
            raise InternalError(
                f"the {backend.info().name} backend returned {len(generated)} results for a batch of {len(ready)}",
                {"type": "BackendError"},
            )
        for (i, prep), views in zip(ready, generated, strict=True):
            if isinstance(views, BaseException):
                outcomes[i] = views
                continue
            try:
                outcomes[i] = _finish_views(ws, prep, views, ctxs[i], len(ready))
            except Exception as exc:
                outcomes[i] = exc
    return [outcome if outcome is not None else InternalError("no outcome", {}) for outcome in outcomes]


BATCH_HANDLERS: dict[str, tuple[Callable[[Any], Hashable], BatchHandler]] = {
    "generate_views": (views_batch_key, generate_views_batch),
}
"""Methods whose queued requests may run together: the key that says which may, and the batch handler."""


MESH_LANE_METHODS = frozenset({"reconstruct"})
"""Methods that may run on the mesh lane (``--mesh-lane``), beside the diffusion of other requests."""
MESH_LANE_NEEDS = ("views", "mesh")
"""The models that must both be loaded for the mesh lane to run: a load (or a load on demand) never overlaps other work."""
BARRIER_METHODS = frozenset({"load", "unload"})
"""Methods that run with nothing beside them."""


@handles("reconstruct")
def reconstruct(ws: Workspace, params: ReconstructParams, ctx: JobContext) -> Deferred:
    """The LRM and the mesh extraction on the executor; the export (CPU) deferred, overlapping the next job."""
    plan = plan_mesh_outputs(ws.outputs, params)  # every output rule checked before any work
    start = time.perf_counter()
    if isinstance(params.views, ViewsHandle):
        views, _ = ws.views.get(params.views.handle)
    else:
        views, _ = ws.backend.views_from_grid(load_views_grid(params.views))
    mesh = ws.backend.reconstruct(views, params.texture_map, ctx)
    ctx.check_cancelled()
    if mesh.textured != params.texture_map:
        raise InternalError(
            f"the {ws.backend.info().name} backend returned a mesh {'with' if mesh.textured else 'without'} a texture map "
            f"for texture_map={params.texture_map}",
            {"type": "BackendError"},
        )

    def finish() -> MeshResult:
        t = time.perf_counter()
        bounds = write_mesh_outputs(plan, mesh, params, ws.before_commit)
        export_s = time.perf_counter() - t
        return MeshResult(
            mesh_path=plan.mesh_path,
            format=plan.format,
            num_vertices=int(len(mesh.vertices)),
            num_faces=int(len(mesh.faces)),
            bounds=bounds,
            model_label=ws.backend.info().model_label,
            weights=ws.backend.info().weights,
            timings={**mesh.timings, "export_s": export_s, "total_s": time.perf_counter() - start},
            extra_paths=plan.companions,
        )

    return Deferred(finish)
