"""The tools' work over the API, each a blocking call that the server runs on a thread of its own.

They call ``InstantMeshWorker`` or ``WorkerPool`` (the same methods), with the call's progress callback and its
``Cancellation``. Outputs are never overwritten, so a call that was cancelled after the worker had already
written (the cancel came too late to stop it) removes what it wrote: those names were free before it began.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Union

import msgspec

from rpcworker.wire.errors import Cancelled

from ..api.facade import InstantMeshWorker
from ..api.results import Mesh, Views
from ..scale.pool import WorkerPool
from ..worker.cancellation import Cancellation
from ..worker.session import ProgressCallback
from .tool_arguments import GenerateViewsArguments, ImageToMeshArguments, ReconstructArguments, ToolInputError
from .tool_inputs import ToolImage

Target = Union[InstantMeshWorker, WorkerPool]
"""What the tools run on: one warm worker, or a pool (``--workers N``)."""

VIEWS_REMEMBERED = 256
"""generate_views handles the server maps back to their Views (oldest forgotten first; the worker keeps fewer)."""


@dataclasses.dataclass(frozen=True)
class ViewsMade:
    views: Views
    grid_png: bytes
    """The 3x2 grid, returned to the agent as an image."""


class Tools:
    """The four tools over one target. ``scratch``: a folder of the server's for grids the agent did not ask to
    keep (read back for the result, then deleted)."""

    def __init__(self, target: Target, scratch: Path) -> None:
        self.target = target
        self.scratch = scratch
        self._views: OrderedDict[str, Views] = OrderedDict()
        self._views_lock = threading.Lock()

    def image_to_mesh(
        self,
        arguments: ImageToMeshArguments,
        image: ToolImage,
        on_progress: ProgressCallback,
        cancellation: Cancellation,
    ) -> Mesh:
        output = free_path(arguments.output_path, "output_path")
        mesh = self.target.image_to_mesh(
            image,
            output,
            num_inference_steps=arguments.steps,
            seed=arguments.seed,
            format=arguments.format,
            texture_map=arguments.texture_map,
            on_progress=on_progress,
            cancellation=cancellation,
        )
        unless_cancelled(cancellation, [mesh.path, *mesh.extra_paths])
        return mesh

    def generate_views(
        self,
        arguments: GenerateViewsArguments,
        image: ToolImage,
        on_progress: ProgressCallback,
        cancellation: Cancellation,
    ) -> ViewsMade:
        kept = arguments.output_path is not None
        grid = self.scratch / f"{uuid.uuid4().hex}.png"
        if arguments.output_path is not None:
            grid = free_path(arguments.output_path, "output_path")
        try:
            views = self.target.generate_views(
                image,
                num_inference_steps=arguments.steps,
                seed=arguments.seed,
                save_grid=grid,
                on_progress=on_progress,
                cancellation=cancellation,
            )
            grid_png = grid.read_bytes()
        finally:
            if not kept:
                with contextlib.suppress(FileNotFoundError):
                    grid.unlink()
        unless_cancelled(cancellation, [str(grid)] if kept else [])
        if not kept:  # the grid is gone: reconstruct must not fall back to it (a pool does when a worker is lost)
            views = dataclasses.replace(views, grid_path=None)
        with self._views_lock:
            self._views[views.handle] = views
            while len(self._views) > VIEWS_REMEMBERED:
                self._views.popitem(last=False)
        return ViewsMade(views, grid_png)

    def reconstruct(
        self, arguments: ReconstructArguments, on_progress: ProgressCallback, cancellation: Cancellation
    ) -> Mesh:
        with self._views_lock:
            views: Views | Path | None = self._views.get(arguments.views)
        if views is None:
            views = Path(arguments.views).expanduser().resolve()
            if not views.is_file():
                raise ToolInputError(
                    f"views: {arguments.views!r} is neither a handle from generate_views nor an existing grid image"
                )
        output = free_path(arguments.output_path, "output_path")
        mesh = self.target.reconstruct(
            views,
            output,
            format=arguments.format,
            texture_map=arguments.texture_map,
            on_progress=on_progress,
            cancellation=cancellation,
        )
        unless_cancelled(cancellation, [mesh.path, *mesh.extra_paths])
        return mesh

    def status(self) -> dict[str, Any]:
        """The worker's status reply, or with a pool every worker's entry."""
        if isinstance(self.target, WorkerPool):
            return {"workers": msgspec.to_builtins(self.target.status())}
        status: dict[str, Any] = msgspec.to_builtins(self.target.status())
        return status


def free_path(argument: str, name: str) -> Path:
    """The argument as an absolute path that names no existing file: outputs are never overwritten, and checking
    first spares the worker an object it could not write (the worker still refuses one that appears meanwhile)."""
    path = Path(argument).expanduser().resolve()
    if path.exists():
        raise ToolInputError(f"{name}: {path} exists; give a new name (the server never overwrites)")
    return path


def unless_cancelled(cancellation: Cancellation, written: list[str]) -> None:
    """After a call that succeeded: if it was cancelled meanwhile, removes what it wrote and raises Cancelled."""
    if not cancellation.cancelled:
        return
    for path in written:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    raise Cancelled("cancelled after the worker had finished; its outputs were removed", {"removed": written})
