"""Many objects through one worker with requests kept in flight, so batches fill and the GPU never waits.

The host keeps a window of objects in flight (twice the worker's ``--max-batch``, so the next batch is queued
while one runs; three times with the worker's mesh lane, where the batch before is still reconstructing; never
more than the worker keeps views for), sending their `generate_views` a whole batch at a time, and each
object's `reconstruct` as soon as its views arrive; an object leaves the window when its mesh is written. The
worker answers model requests in order, so waiting on the oldest request in flight is always right, and every
answer still means "written". Outcomes come back in input order, failures in place. A request the worker refuses
``busy`` (too many inline images queued, protocol.md section 12) is sent again once an earlier request of the map
has ended; it keeps its object's place in the window, and never fails the object.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from rpcworker.wire.errors import RpcError, WorkerBusy
from rpcworker.wire.messages import GenerateViewsParams, ReconstructParams, ViewsHandle, ViewsResult

from ..worker.busy import BusyWait
from ..worker.client import WorkerClient
from ..worker.errors import HostError
from ..worker.session import ProgressCallback
from .inputs import ImageLike
from .options import MeshOptions, PrepareOptions, ViewOptions, reconstruct_params, views_params
from .outcome import ObjectOutcome, ObjectTarget, describe_error
from .preparing import model_input
from .results import Mesh, Views
from .tally import ObjectTally

if TYPE_CHECKING:
    from ..worker.session import PendingCall

log = logging.getLogger("host.api.map")

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
    params: GenerateViewsParams | ReconstructParams
    """What was sent, to send again if the worker refuses it busy."""
    sent_at: float
    """time.monotonic() when the object's views were requested."""
    views: Views | None = None
    """Set for a reconstruct: the views it was made from."""
    busy: BusyWait | None = None
    """Set once the worker refused the request busy: how it waits before going again."""


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
    preparation: PrepareOptions | None = None,
    tally: ObjectTally | None = None,
) -> Iterator[ObjectOutcome]:
    """Yields each object's outcome in input order, one per target. ``images`` is read lazily, each image
    just before its request is sent (so a caller may prepare inputs on the fly; ``preparation`` prepares each
    then, as ``prepare_image`` does); an exception in its place fails that object alone. ``timeout`` bounds
    each request from the moment it is the oldest in flight (the one the worker is on). Ctrl-C or leaving the
    loop early cancels what is in flight; a timeout or a dead worker raises (as the single-object calls do).
    ``overwrite`` applies to the meshes and, unless ``overwrite_grids`` says otherwise, the grids. ``tally``
    hears of each object sent and ended."""
    run = _Run(
        worker,
        targets,
        view_options,
        mesh_options,
        overwrite,
        overwrite if overwrite_grids is None else overwrite_grids,
        timeout,
        preparation,
        tally,
    )
    pending = iter(images)
    count = len(targets)
    status = worker.client.status()
    window = in_flight_window(status.max_batch, status.max_handles, status.mesh_lane)
    group = min(status.max_batch, window)
    next_send, next_yield = 0, 0
    try:
        while next_yield < count:
            # Views go out a whole batch at a time, after the reconstructs already sent: only consecutive
            # generate_views requests share a batch on the worker.
            while (free := window - len(run.flight)) >= min(group, count - next_send) > 0:
                for _ in range(min(group, free, count - next_send)):
                    run.send_views(next(pending), next_send)
                    next_send += 1
            if run.flight:
                run.finish(run.flight.popleft())
            while next_yield in run.done:
                yield run.done.pop(next_yield)
                next_yield += 1
    finally:
        for item in run.flight:
            item.call.cancel()


@dataclass
class _Run:
    """One map's objects: those in flight, oldest first, and those ended but not yet yielded."""

    worker: MappedWorker
    targets: Sequence[ObjectTarget]
    view_options: ViewOptions
    mesh_options: MeshOptions
    overwrite: bool
    overwrite_grids: bool
    timeout: float | None
    preparation: PrepareOptions | None
    tally: ObjectTally | None
    flight: deque[_InFlight] = field(default_factory=deque)
    done: dict[int, ObjectOutcome] = field(default_factory=dict)

    def send_views(self, image: ImageLike | BaseException, index: int) -> None:
        target = self.targets[index]
        if isinstance(image, BaseException):
            self._end(index, _failed(index, target, image))
            return
        grid = os.fspath(target.grid) if target.grid is not None else None
        try:
            source = model_input(image, self.preparation)
            params = views_params(source, grid, self.view_options, self.overwrite_grids)
        except (RpcError, OSError, ValueError, TypeError) as exc:  # an image the host cannot prepare or encode
            self._end(index, _failed(index, target, exc))
            return
        call = self.worker.client.request("generate_views", params, self.worker.on_progress, self.timeout)
        self.flight.append(_InFlight(index, call, params, time.monotonic()))
        if self.tally is not None:
            self.tally.started(target.name)

    def finish(self, item: _InFlight) -> None:
        """Waits for the oldest request: views are followed by their reconstruct at once; a mesh ends the object."""
        target = self.targets[item.index]
        try:
            result = item.call.result(self.timeout)
        except WorkerBusy as exc:
            self._send_again(item, exc)
            return
        except RpcError as exc:
            self._end(item.index, _failed(item.index, target, exc))
            return
        if item.views is None:
            views = self.worker.views_from_result(result)
            params = reconstruct_params(
                ViewsHandle(views.handle), os.fspath(target.mesh), self.mesh_options, self.overwrite
            )
            call = self.worker.client.request("reconstruct", params, self.worker.on_progress, self.timeout)
            self.flight.append(_InFlight(item.index, call, params, item.sent_at, views))
            return
        outcome = ObjectOutcome(
            item.index,
            target.name,
            Mesh.from_result(result),
            grid_path=item.views.grid_path,
            views_timings=item.views.timings,
            latency_s=time.monotonic() - item.sent_at,
        )
        self._end(item.index, outcome)

    def _send_again(self, item: _InFlight, refusal: WorkerBusy) -> None:
        """A request refused busy goes again once the next request of this map in flight has ended (or after a
        pause, with none in flight), at the back of the window, where it is now the newest request sent."""
        item.busy = item.busy or BusyWait()
        log.debug("%s of object %d refused, sent again after a wait: %s", item.call.method, item.index, refusal)
        item.busy.after(other.call for other in self.flight)
        item.call = self.worker.client.request(item.call.method, item.params, self.worker.on_progress, self.timeout)
        self.flight.append(item)

    def _end(self, index: int, outcome: ObjectOutcome) -> None:
        self.done[index] = outcome
        if self.tally is not None:
            self.tally.finished(outcome.name, outcome.ok)


def views_in_order(
    worker: MappedWorker,
    params: Sequence[GenerateViewsParams | RpcError],
    timeout: float | None = None,
    tally: ObjectTally | None = None,
) -> Iterator[Views | RpcError]:
    """Sends every request at once (so a batching worker runs them as batches), then yields each object's
    Views, or the error for it (the worker's, or one already in ``params``' place), in order; a dead worker or
    a timeout raises."""
    pending = [
        one if isinstance(one, RpcError) else worker.client.request("generate_views", one, worker.on_progress, timeout)
        for one in params
    ]
    if tally is not None:
        for index in range(len(pending)):
            tally.started(str(index))
    for index in range(len(pending)):
        outcome: Views | RpcError
        busy: BusyWait | None = None
        while True:
            call = pending[index]
            try:
                outcome = call if isinstance(call, RpcError) else worker.views_from_result(call.result(timeout))
            except WorkerBusy:  # sent again with every later one refused too, after a wait: none of them fails
                busy = busy or BusyWait()
                busy.after(later for later in pending[index + 1 :] if not isinstance(later, RpcError))
                for again in range(index, len(pending)):
                    one, sent = params[again], pending[again]
                    if index == again or (not isinstance(sent, RpcError) and _refused(sent)):
                        assert not isinstance(one, RpcError)
                        pending[again] = worker.client.request("generate_views", one, worker.on_progress, timeout)
                continue
            except RpcError as err:
                outcome = err
            break
        if tally is not None:
            tally.finished(str(index), isinstance(outcome, Views))
        yield outcome


def _refused(call: PendingCall) -> bool:
    """Whether a request was answered busy (an unanswered one is not, yet)."""
    if not call.done:
        return False
    try:
        call.result(0)
    except WorkerBusy:
        return True
    except (RpcError, HostError):  # answered with another error: not ours to send again
        pass
    return False


def _failed(index: int, target: ObjectTarget, exc: BaseException) -> ObjectOutcome:
    message, code = describe_error(exc)
    return ObjectOutcome(index, target.name, None, message, code)
