"""Building the compiled views of a machine ahead of use (images, CI): ``build_compiled_views``.

A worker builds them behind eager serving at its first start on a machine (protocol.md, status ``compile``);
this builds them first instead: it starts a worker whose ``load`` builds them (``--compile-build at-load``),
waits until they are ready, and stops it. Every later start on the machine finds them and starts compiled.
"""

from __future__ import annotations

from collections.abc import Sequence

from rpcworker.wire.errors import RpcError
from rpcworker.wire.messages import CompileStatus, Preset

from ..worker.errors import HostError
from ..worker.process import WorkerCommand
from ..worker.session import ProgressCallback
from .facade import InstantMeshWorker

BUILD_IN_LOAD = ("--compile-build", "at-load")
"""The worker flag that makes ``load`` build the compiled views (and wait for them) before it answers."""


class CompiledViewsNotBuilt(HostError):
    """The compiled views could not be built; the message (one line) says why."""


def build_compiled_views(
    python: str | WorkerCommand | None = None,
    *,
    device: str | None = None,
    max_batch: int | None = None,
    preset: Preset = "official",
    optimize: str | None = None,
    worker_args: Sequence[str] = (),
    startup_timeout: float = 300.0,
    progress: bool = False,
    on_progress: ProgressCallback | None = None,
) -> CompileStatus:
    """Builds this machine's compiled views for `device` and `max_batch` (the worker's defaults when None: the
    GPU, 8) into the cache, and returns their status (``ready``; ``built``: packages compiled now, 0 when all
    were there). ``progress`` draws a bar on stderr. Raises `CompiledViewsNotBuilt`, or `WorkerStartError` with
    the worker's reason when the options cannot work (``compile`` needs CUDA)."""
    extra = [*worker_args, *BUILD_IN_LOAD, *(["--optimize", optimize] if optimize else [])]
    worker = InstantMeshWorker(
        python,
        preset=preset,
        device=device,
        max_batch=max_batch,
        worker_args=extra,
        startup_timeout=startup_timeout,
        prepare=False,
        progress=progress,
    )
    with worker:
        try:
            worker.load(["views"], on_progress=on_progress)
        except RpcError as exc:  # the worker's load error says why the build failed
            raise CompiledViewsNotBuilt(f"the compiled views were not built: {exc}") from exc
        status = worker.status().compile
    if status is None or status.state != "ready":
        said = "a worker without compiled views" if status is None else f"{status.state}: {status.message}"
        raise CompiledViewsNotBuilt(f"the compiled views were not built ({said})")
    return status
