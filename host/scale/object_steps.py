"""One object through the pool: its views on the least-loaded worker, its mesh on the worker that holds them
(or, split, on a mesh worker), and the one redo on another worker that a lost worker earns the object. A request
a worker refuses busy (protocol.md section 12) is sent again once another request of the pool has ended: it is
neither a failure nor an attempt."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rpcworker.wire.errors import HandleExpired, WorkerBusy

from ..api.inputs import ImageLike
from ..api.options import MeshOptions, PrepareOptions, ViewOptions
from ..api.outcome import ObjectOutcome, ObjectTarget, describe_error, mesh_companions
from ..api.preparing import prepared
from ..api.results import Mesh, Views
from ..api.tally import ObjectTally
from ..worker.busy import BusyWait
from ..worker.cancellation import Cancellation
from ..worker.errors import RequestTimeout, WorkerCrashed
from ..worker.session import ProgressCallback
from .slots import Slot, Slots

T = TypeVar("T")
log = logging.getLogger("host.scale.pool")

WORKER_LOST = (WorkerCrashed, RequestTimeout)
"""Failures of the worker, not of the object: the object is redone once on another worker."""


@dataclass
class Attempts:
    """How many times one object was tried: 2 once a lost worker's step was redone on another. Read by the
    object's outcome whether it ends in a mesh or in an error."""

    count: int = 1


@dataclass(frozen=True)
class Call:
    """What every request of one call (or one map) carries besides the options."""

    overwrite: bool = False
    timeout: float | None = None
    on_progress: ProgressCallback | None = None
    cancellation: Cancellation | None = None
    """Cancels the call's request in flight, on whichever worker it runs, and refuses its later requests."""
    preparation: PrepareOptions | None = None
    """How a map's inputs are prepared, each on the pool's thread that takes it (None: sent as they are)."""


@dataclass(frozen=True)
class PoolViews(Views):
    """Views made by one pool worker; ``reconstruct`` sends them back to it (``worker``)."""

    worker: int = 0
    transfer: bool = False
    """The grid was written only to pass it to a mesh worker (split mode); deleted once used."""


class ObjectSteps:
    """The views and mesh steps of objects over the pool's slots. ``transfer_dir`` (split mode): where grids
    travel from a views worker to a mesh worker; the pool sets it while it runs."""

    def __init__(self, slots: Slots, split: bool) -> None:
        self.slots = slots
        self.split = split
        self.transfer_dir: str | None = None

    def outcome(
        self,
        index: int,
        image: ImageLike,
        target: ObjectTarget,
        views: ViewOptions,
        mesh_options: MeshOptions,
        call: Call,
        tally: ObjectTally | None = None,
    ) -> ObjectOutcome:
        """One object of a map, its failure included (never raised); ``tally`` hears when it starts and ends."""
        tries = Attempts()
        if tally is not None:
            tally.started(target.name)
        try:
            source = prepared(image, call.preparation)
            mesh, worker = self.object(source, target, views, mesh_options, call, tries)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this object's outcome
            message, code = describe_error(exc)
            outcome = ObjectOutcome(index, target.name, None, message, code, attempts=tries.count)
        else:
            grid = str(target.grid) if target.grid is not None else None
            outcome = ObjectOutcome(index, target.name, mesh, worker=worker, attempts=tries.count, grid_path=grid)
        if tally is not None:
            tally.finished(target.name, outcome.ok)
        return outcome

    def object(
        self,
        image: ImageLike,
        target: ObjectTarget,
        view_options: ViewOptions,
        mesh_options: MeshOptions,
        call: Call,
        tries: Attempts,
    ) -> tuple[Mesh, str]:
        """Views then mesh. A lost worker at either step redoes the object once: the mesh step from the
        saved grid when there is one, otherwise views and mesh again on another worker."""
        views, first = self.views(image, target.grid, view_options, call, tries)
        fresh = _absent(target.mesh, mesh_options)
        try:
            mesh, slot = self.mesh(views, target.mesh, mesh_options, call, tries, fresh=fresh)
        except (HandleExpired, *WORKER_LOST):
            if tries.count > 1 or views.grid_path is not None or self.slots.closing:
                raise  # with a grid, the mesh step has already been retried from it
            tries.count = 2
            views, first = self.views(image, target.grid, view_options, call, tries, avoid=first)
            mesh, slot = self.mesh(views, target.mesh, mesh_options, call, tries, fresh=fresh, redo=True)
            return mesh, str(slot.index)
        worker = str(slot.index) if slot is first else f"{first.index}+{slot.index}"
        return mesh, worker

    def _attempt(
        self,
        kind: str,
        work: Callable[[Slot], T],
        tries: Attempts,
        *,
        first: Slot | None = None,
        retry: Callable[[Slot], T] | None = None,
        avoid: Slot | None = None,
    ) -> tuple[T, Slot]:
        """``work`` on ``first`` or the least-loaded ``kind`` worker; if that worker is lost, ``retry``
        (default: ``work``) once on another one, counted in ``tries``. ``first`` given without ``retry``: no second attempt."""
        work, retry = self._patient(work), (self._patient(retry) if retry is not None else None)
        slot = self.slots.take(first) if first is not None else self.slots.acquire(kind, avoid=avoid)
        try:
            with self.slots.held(slot):
                result = work(slot)
            self.slots.count(slot, True)
            return result, slot
        except WORKER_LOST as exc:
            self.slots.count(slot, False)
            if isinstance(exc, WorkerCrashed):
                self.slots.restart_in_background(slot)
            again = retry or (work if first is None else None)
            if again is None or self.slots.closing:
                raise
            lost = slot
        tries.count = 2
        try:
            slot = self.slots.acquire(kind, avoid=lost)
            with self.slots.held(slot):
                result = again(slot)
            self.slots.count(slot, True)
            return result, slot
        except WORKER_LOST as exc:
            if isinstance(exc, WorkerCrashed):
                self.slots.restart_in_background(slot)
            raise

    def _patient(self, work: Callable[[Slot], T]) -> Callable[[Slot], T]:
        """``work`` on a slot, sent again each time its worker refuses it busy, after another request of the
        pool has ended (or a short pause, with none in flight)."""

        def run(slot: Slot) -> T:
            wait = BusyWait()
            while True:
                seen = self.slots.ended
                try:
                    return work(slot)
                except WorkerBusy as exc:
                    if self.slots.closing:
                        raise
                    log.debug("worker %d refused a request, sent again after a wait: %s", slot.index, exc)
                    self.slots.wait_for_end(seen, wait.next_pause())

        return run

    def views(
        self,
        image: ImageLike,
        save_grid: str | os.PathLike[str] | None,
        options: ViewOptions,
        call: Call,
        tries: Attempts,
        avoid: Slot | None = None,
    ) -> tuple[PoolViews, Slot]:
        transfer = self.split and save_grid is None
        grid = os.path.join(self.transfer_dir or "", f"grid-{uuid.uuid4().hex}.png") if transfer else save_grid
        fresh = grid is None or not os.path.lexists(grid)

        def attempt(again: bool) -> Callable[[Slot], PoolViews]:
            # A second attempt may find the grid that its lost first attempt wrote: that file is ours to replace
            # (one that was there before the first attempt is not).
            overwrite = call.overwrite or transfer or (again and fresh)

            def work(slot: Slot) -> PoolViews:
                views = slot.worker.generate_views(
                    image,
                    view_options=options,
                    save_grid=grid,
                    overwrite=overwrite,
                    timeout=call.timeout,
                    on_progress=call.on_progress,
                    cancellation=call.cancellation,
                )
                return PoolViews(**vars(views), worker=slot.index, transfer=transfer)

            return work

        return self._attempt("views", attempt(False), tries, retry=attempt(True), avoid=avoid)

    def mesh(
        self,
        views: Views | str | os.PathLike[str],
        output_path: str | os.PathLike[str],
        options: MeshOptions,
        call: Call,
        tries: Attempts,
        *,
        fresh: bool | None = None,
        redo: bool = False,
    ) -> tuple[Mesh, Slot]:
        """The mesh step. A second attempt (and a ``redo`` of the object) may find the mesh its lost first
        attempt wrote, complete, before that worker could answer: it replaces it, so the object succeeds. Only
        files that were not there before the object's first attempt (``fresh``) count as its own."""
        if fresh is None:
            fresh = _absent(Path(output_path), options)

        def from_source(source: Views | str | os.PathLike[str], again: bool) -> Callable[[Slot], Mesh]:
            overwrite = call.overwrite or ((again or redo) and fresh)

            def work(slot: Slot) -> Mesh:
                return slot.worker.reconstruct(
                    source,
                    output_path,
                    mesh_options=options,
                    overwrite=overwrite,
                    timeout=call.timeout,
                    on_progress=call.on_progress,
                    cancellation=call.cancellation,
                )

            return work

        def anywhere(source: Views | str | os.PathLike[str]) -> tuple[Mesh, Slot]:
            return self._attempt("mesh", from_source(source, False), tries, retry=from_source(source, True))

        try:
            if not isinstance(views, PoolViews):
                path = views
                if isinstance(views, Views):
                    if views.grid_path is None:
                        raise HandleExpired(
                            f"views {views.handle} come from another worker and have no saved grid",
                            {"handle": views.handle, "reason": "not from this pool"},
                        )
                    path = views.grid_path
                return anywhere(path)
            grid = views.grid_path
            if self.split:
                assert grid is not None
                return anywhere(grid)
            owner = self.slots.slots[views.worker]
            from_grid = from_source(grid, True) if grid is not None else None
            try:
                return self._attempt("mesh", from_source(views, False), tries, first=owner, retry=from_grid)
            except HandleExpired:
                if grid is None:
                    raise
                return anywhere(grid)
        finally:
            if isinstance(views, PoolViews) and views.transfer and views.grid_path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(views.grid_path)


def _absent(mesh: Path, options: MeshOptions) -> bool:
    """Whether none of the files a reconstruct to ``mesh`` writes exists yet."""
    return not any(
        os.path.lexists(path) for path in (*mesh_companions(mesh, options.format, options.texture_map), mesh)
    )
