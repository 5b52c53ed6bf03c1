"""Many objects through one worker with requests kept in flight, so batches fill and the GPU never waits.

The host keeps a window of objects in flight (twice the worker's ``--max-batch``, so the next batch is queued
while one runs; three times with the worker's mesh lane, where the batch before is still reconstructing; never
more than the worker keeps views for), sending their `generate_views` a whole batch at a time, and each
object's `reconstruct` as soon as its views arrive; an object leaves the window when its mesh is written. The
worker answers model requests in order, so waiting on the oldest request in flight is always right, and every
answer still means "written". Outcomes come back in input order, failures in place.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from rpcworker.wire.errors import RpcError
from rpcworker.wire.messages import ViewsHandle, ViewsResult

from ..worker.client import WorkerClient
from ..worker.session import ProgressCallback
from .inputs import ImageLike, image_input
from .options import MeshOptions, ViewOptions, reconstruct_params, views_params
from .outcome import ObjectOutcome, ObjectTarget, describe_error
from .results import Mesh, Views

if TYPE_CHECKING:
    from ..worker.session import PendingCall

BATCHES_AHEAD = 2
"""Objects kept in flight, in worker batches: one running, one queued behind it."""
BATCHES_AHEAD_WITH_MESH_LANE = 3
"""The same beside the worker's mesh lane, plus the batch reconstructing there: its replies wait behind the running
batch's (request order), so without a third batch queued the diffusion would wait for them."""


class MappedWorker(Protocol):
    """What a map needs of a worker (``InstantMeshWorker`` is one): its client to send requests on, the
    progress callback they carry, and the API's Views for a views result."""

    @property
    def client(self) -> WorkerClient: ...

    @property
    def on_progress(self) -> ProgressCallback | None: ...

    def views_from_result(self, result: ViewsResult) -> Views: ...


@dataclass
class _InFlight:
    index: int
    call: PendingCall
    sent_at: float
    """time.monotonic() when the object's views were requested."""
    views: Views | None = None
    """Set for a reconstruct: the views it was made from."""


def in_flight_window(max_batch: int, max_handles: int, mesh_lane: bool = False) -> int:
    """How many objects to keep in flight (views requested or made, mesh not yet written): enough to fill the
    next batch, never more than the worker keeps views for, which keeps views not yet reconstructed first (a
    handle evicted before its reconstruct would fail that object)."""
    ahead = BATCHES_AHEAD_WITH_MESH_LANE if mesh_lane else BATCHES_AHEAD
    return max(1, min(ahead * max_batch, max_handles))


def map_objects(
    worker: MappedWorker,
    images: Iterable[ImageLike | BaseException],
    targets: Sequence[ObjectTarget],
    view_options: ViewOptions,
    mesh_options: MeshOptions,
    *,
    overwrite: bool = False,
    overwrite_grids: bool | None = None,
    timeout: float | None = None,
) -> Iterator[ObjectOutcome]:
    """Yields each object's outcome in input order, one per target. ``images`` is read lazily, each image
    just before its request is sent (so a caller may prepare inputs on the fly); an exception in its place fails that
    object alone. ``timeout`` bounds each request from the moment it is the oldest in flight (the one the
    worker is on). Ctrl-C or leaving the loop early cancels what is in flight; a timeout or a dead worker raises (as the
    single-object calls do). ``overwrite`` applies to the meshes and, unless ``overwrite_grids`` says otherwise, the grids."""
    pending = iter(images)
    grids_overwrite = overwrite if overwrite_grids is None else overwrite_grids
    count = len(targets)
    status = worker.client.status()
    window = in_flight_window(status.max_batch, status.max_handles, status.mesh_lane)
    group = min(status.max_batch, window)
    flight: deque[_InFlight] = deque()
    done: dict[int, ObjectOutcome] = {}
    next_send, next_yield = 0, 0
    try:
        while next_yield < count:
            # Views go out a whole batch at a time, after the reconstructs already sent: only consecutive
            # generate_views requests share a batch on the worker.
            while (free := window - len(flight)) >= min(group, count - next_send) > 0:
                for _ in range(min(group, free, count - next_send)):
                    _send_views(
                        worker,
                        next(pending),
                        next_send,
                        targets[next_send],
                        view_options,
                        grids_overwrite,
                        flight,
                        done,
                        timeout,
                    )
                    next_send += 1
            if flight:
                item = flight.popleft()
                _finish(worker, item, targets[item.index], mesh_options, overwrite, flight, done, timeout)
            while next_yield in done:
                yield done.pop(next_yield)
                next_yield += 1
    finally:
        for item in flight:
            item.call.cancel()


def _send_views(
    worker: MappedWorker,
    image: ImageLike | BaseException,
    index: int,
    target: ObjectTarget,
    view_options: ViewOptions,
    overwrite: bool,
    flight: deque[_InFlight],
    done: dict[int, ObjectOutcome],
    timeout: float | None,
) -> None:
    if isinstance(image, BaseException):
        done[index] = _failed(index, target, image)
        return
    grid = os.fspath(target.grid) if target.grid is not None else None
    try:
        params = views_params(image_input(image), grid, view_options, overwrite)
    except (OSError, ValueError, TypeError) as exc:  # an image the host cannot even encode fails alone
        done[index] = _failed(index, target, exc)
        return
    flight.append(
        _InFlight(index, worker.client.request("generate_views", params, worker.on_progress, timeout), time.monotonic())
    )


def _finish(
    worker: MappedWorker,
    item: _InFlight,
    target: ObjectTarget,
    mesh_options: MeshOptions,
    overwrite: bool,
    flight: deque[_InFlight],
    done: dict[int, ObjectOutcome],
    timeout: float | None,
) -> None:
    """Waits for the oldest request: views are followed by their reconstruct at once; a mesh ends the object."""
    try:
        result = item.call.result(timeout)
    except RpcError as exc:
        done[item.index] = _failed(item.index, target, exc)
        return
    if item.views is None:
        views = worker.views_from_result(result)
        params = reconstruct_params(ViewsHandle(views.handle), os.fspath(target.mesh), mesh_options, overwrite)
        flight.append(
            _InFlight(
                item.index,
                worker.client.request("reconstruct", params, worker.on_progress, timeout),
                item.sent_at,
                views,
            )
        )
        return
    mesh = Mesh.from_result(result)
    done[item.index] = ObjectOutcome(
        item.index,
        target.name,
        mesh,
        grid_path=item.views.grid_path,
        views_timings=item.views.timings,
        latency_s=time.monotonic() - item.sent_at,
    )


def _failed(index: int, target: ObjectTarget, exc: BaseException) -> ObjectOutcome:
    message, code = describe_error(exc)
    return ObjectOutcome(index, target.name, None, message, code)
