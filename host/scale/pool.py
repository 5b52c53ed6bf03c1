"""``WorkerPool``: many ordinary stdio workers behind the ``InstantMeshWorker`` methods, one per GPU by default.

Each request goes to the least-loaded worker; views stay bound to the worker that made them. A worker that
crashes is restarted in the background and the object it was working on is redone once on another worker
(a stalled one: after its request timeout), while the other workers keep going. Split mode runs views on one
device and meshes on another; the views grid travels between them as a file in shared memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from host.api.facade import InstantMeshWorker
from host.api.inputs import ImageLike
from host.api.options import (
    DEFAULT_MAP_FORMAT,
    MeshOptions,
    ViewOptions,
    map_mesh_options,
    mesh_options_of,
    view_options_of,
)
from host.api.outcome import ObjectOutcome, ObjectTarget, describe_error, object_targets
from host.api.results import Mesh, Views
from host.scale.slots import (
    ROLE_MODELS,
    PoolWorkerStatus,
    Slot,
    Slots,
    close_all,
    in_parallel,
    pinned_command,
    start_all,
    visible_gpus,
    worker_plan,
)
from host.worker.errors import RequestTimeout, WorkerCrashed
from host.worker.process import WorkerCommand
from host.worker.session import ProgressCallback
from rpcworker.wire.errors import HandleExpired

T = TypeVar("T")

WORKER_LOST = (WorkerCrashed, RequestTimeout)
"""Failures of the worker, not of the object: the object is redone once on another worker."""
SHARED_MEMORY_DIR = "/dev/shm"


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


@dataclass(frozen=True)
class PoolViews(Views):
    """Views made by one pool worker; ``reconstruct`` sends them back to it (``worker``)."""

    worker: int = 0
    transfer: bool = False
    """The grid was written only to pass it to a mesh worker (split mode); deleted once used."""


class WorkerPool:
    """Starts the workers on entry and stops them all on exit. Safe to call from many threads.

    ``devices``: one worker per entry (``cuda:N`` is pinned with CUDA_VISIBLE_DEVICES); ``workers=N``: N
    workers on the default device (several on one large GPU, or mock workers on the CPU); neither: one per
    visible GPU. ``split={"views": "cuda:0", "mesh": "cuda:1"}`` (a device or a list of devices each): views
    workers and mesh workers apart. Every other keyword goes to each ``InstantMeshWorker``.
    """

    def __init__(
        self,
        python: str | WorkerCommand | None = None,
        *,
        devices: Sequence[str] | None = None,
        workers: int | None = None,
        split: Mapping[str, str | Sequence[str]] | None = None,
        cancel_grace: float | None = 30.0,
        **worker_options: Any,
    ) -> None:
        plan = worker_plan(devices, workers, split, worker_options.pop("device", None))
        worker_options.setdefault("max_batch", 1)  # each worker takes one object at a time: no batch size to compile
        base = (
            python
            if isinstance(python, WorkerCommand)
            else (WorkerCommand.parse(python) if python else WorkerCommand.default())
        )
        gpus = visible_gpus()
        slots = []
        for index, (role, device) in enumerate(plan):
            command, worker_device = pinned_command(base, device, gpus)
            worker = InstantMeshWorker(command, device=worker_device, auto_restart=True, **worker_options)
            worker.client.cancel_grace = cancel_grace
            slots.append(Slot(index, role, device, worker))
        self.split = split is not None
        self._slots = Slots(slots, worker_options.get("startup_timeout", 300.0))
        self._transfer_dir: str | None = None

    # ---------------------------------------------------------------- life

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> WorkerPool:
        start_all(self._slots.slots)
        if self.split and self._transfer_dir is None:
            base = SHARED_MEMORY_DIR if os.access(SHARED_MEMORY_DIR, os.W_OK) else None
            self._transfer_dir = tempfile.mkdtemp(prefix="instantmesh-pool-", dir=base)
        return self

    def close(self) -> None:
        """Stops every worker (calls still waiting fail with WorkerCrashed and are not retried)."""
        self._slots.shutdown()
        close_all(self._slots.slots)
        if self._transfer_dir is not None:
            shutil.rmtree(self._transfer_dir, ignore_errors=True)
            self._transfer_dir = None

    @property
    def size(self) -> int:
        return len(self._slots)

    def load(self) -> None:
        """Loads each worker's models (views and mesh, or its split role's) on all workers at once."""
        self._slots.warm_models = True
        in_parallel(self._slots.slots, lambda slot: slot.worker.load(ROLE_MODELS[slot.role]))

    def status(self) -> list[PoolWorkerStatus]:
        """One entry per worker, with its pid, counters and (while it runs) its own status reply."""
        return [self._slots.status(slot) for slot in self._slots]

    @property
    def model_label(self) -> str:
        return self._slots.slots[0].worker.model_label

    # ---------------------------------------------------------------- the InstantMeshWorker methods

    def generate_views(
        self,
        image: ImageLike,
        *,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        view_options: ViewOptions | None = None,
        save_grid: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> PoolViews:
        """On the least-loaded views worker, options as in ``InstantMeshWorker.generate_views``. In split mode
        the grid is always written (to ``save_grid``, else to a shared-memory file), because a mesh worker reads it."""
        options = view_options_of(
            view_options, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale
        )
        call = Call(overwrite, timeout, on_progress)
        views, _ = self._views(image, save_grid, options, call, Attempts())
        return views

    def reconstruct(
        self,
        views: Views | str | os.PathLike[str],
        output_path: str | os.PathLike[str],
        *,
        format: str | None = None,
        texture_map: bool | None = None,
        orientation: str | None = None,
        mesh_options: MeshOptions | None = None,
        overwrite: bool = False,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Mesh:
        """Views from this pool go back to the worker that holds them; a grid path goes to the least-loaded
        mesh worker. If the holder crashed, views with a saved grid are reconstructed from it elsewhere."""
        options = mesh_options_of(mesh_options, format=format, texture_map=texture_map, orientation=orientation)
        mesh, _ = self._mesh(views, output_path, options, Call(overwrite, timeout, on_progress), Attempts())
        return mesh

    def image_to_mesh(
        self,
        image: ImageLike,
        output_path: str | os.PathLike[str],
        *,
        save_grid: str | os.PathLike[str] | None = None,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        format: str | None = None,
        texture_map: bool | None = None,
        orientation: str | None = None,
        view_options: ViewOptions | None = None,
        mesh_options: MeshOptions | None = None,
        overwrite: bool = False,
        timeout: float | None = None,
    ) -> Mesh:
        views = view_options_of(
            view_options, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale
        )
        mesh_chosen = mesh_options_of(mesh_options, format=format, texture_map=texture_map, orientation=orientation)
        target = ObjectTarget("", Path(output_path), Path(save_grid) if save_grid is not None else None)
        mesh, _ = self._object(image, target, views, mesh_chosen, Call(overwrite, timeout), Attempts())
        return mesh

    def map(
        self,
        images: Iterable[ImageLike],
        out_dir: str | os.PathLike[str],
        *,
        format: str | None = None,
        save_grids: bool = True,
        names: Sequence[str] | None = None,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        texture_map: bool | None = None,
        orientation: str | None = None,
        view_options: ViewOptions | None = None,
        mesh_options: MeshOptions | None = None,
        overwrite: bool = False,
        timeout: float | None = None,
    ) -> Iterator[ObjectOutcome]:
        """Every image to ``out_dir/NAME.FORMAT`` (and ``NAME_views.png``), every worker busy; yields one
        outcome per object as it finishes, failures included (never raised). Options as in
        ``InstantMeshWorker.map``. Leaving the loop early drops the objects not started yet."""
        views = view_options_of(
            view_options, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale
        )
        mesh = map_mesh_options(mesh_options, format=format, texture_map=texture_map, orientation=orientation)
        items = list(images)
        targets = object_targets(
            items, out_dir, format=mesh.format or DEFAULT_MAP_FORMAT, save_grids=save_grids, names=names
        )
        return self._map(
            items, targets, views, mesh, Call(overwrite, timeout)
        )  # checked now, run as the caller iterates

    def _map(
        self, items: list[ImageLike], targets: list[ObjectTarget], views: ViewOptions, mesh: MeshOptions, call: Call
    ) -> Iterator[ObjectOutcome]:
        executor = ThreadPoolExecutor(max_workers=max(1, len(self._slots)), thread_name_prefix="pool-map")
        futures: dict[Future[ObjectOutcome], int] = {}
        try:
            for index, (image, target) in enumerate(zip(items, targets, strict=True)):
                future = executor.submit(self._outcome, index, image, target, views, mesh, call)
                futures[future] = index
            for future in as_completed(futures):
                yield future.result()
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- retries

    def _outcome(
        self,
        index: int,
        image: ImageLike,
        target: ObjectTarget,
        views: ViewOptions,
        mesh_options: MeshOptions,
        call: Call,
    ) -> ObjectOutcome:
        tries = Attempts()
        try:
            mesh, worker = self._object(image, target, views, mesh_options, call, tries)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this object's outcome
            message, code = describe_error(exc)
            return ObjectOutcome(index, target.name, None, message, code, attempts=tries.count)
        grid = str(target.grid) if target.grid is not None else None
        return ObjectOutcome(index, target.name, mesh, worker=worker, attempts=tries.count, grid_path=grid)

    def _object(
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
        views, first = self._views(image, target.grid, view_options, call, tries)
        try:
            mesh, slot = self._mesh(views, target.mesh, mesh_options, call, tries)
        except (HandleExpired, *WORKER_LOST):
            if tries.count > 1 or views.grid_path is not None or self._slots.closing:
                raise  # with a grid, the mesh step has already been retried from it
            tries.count = 2
            views, first = self._views(image, target.grid, view_options, call, tries, avoid=first)
            mesh, slot = self._mesh(views, target.mesh, mesh_options, call, tries)
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
        slot = self._slots.take(first) if first is not None else self._slots.acquire(kind, avoid=avoid)
        try:
            with self._slots.held(slot):
                result = work(slot)
            self._slots.count(slot, True)
            return result, slot
        except WORKER_LOST as exc:
            self._slots.count(slot, False)
            if isinstance(exc, WorkerCrashed):
                self._slots.restart_in_background(slot)
            again = retry or (work if first is None else None)
            if again is None or self._slots.closing:
                raise
            lost = slot
        tries.count = 2
        try:
            slot = self._slots.acquire(kind, avoid=lost)
            with self._slots.held(slot):
                result = again(slot)
            self._slots.count(slot, True)
            return result, slot
        except WORKER_LOST as exc:
            if isinstance(exc, WorkerCrashed):
                self._slots.restart_in_background(slot)
            raise

    def _views(
        self,
        image: ImageLike,
        save_grid: str | os.PathLike[str] | None,
        options: ViewOptions,
        call: Call,
        tries: Attempts,
        avoid: Slot | None = None,
    ) -> tuple[PoolViews, Slot]:
        transfer = self.split and save_grid is None
        grid = os.path.join(self._transfer_dir or "", f"grid-{uuid.uuid4().hex}.png") if transfer else save_grid

        def attempt(again: bool) -> Callable[[Slot], PoolViews]:
            # A second attempt may find the grid that its lost first attempt wrote: that file is ours to replace.
            overwrite = call.overwrite or transfer or again

            def work(slot: Slot) -> PoolViews:
                views = slot.worker.generate_views(
                    image,
                    view_options=options,
                    save_grid=grid,
                    overwrite=overwrite,
                    timeout=call.timeout,
                    on_progress=call.on_progress,
                )
                return PoolViews(**vars(views), worker=slot.index, transfer=transfer)

            return work

        return self._attempt("views", attempt(False), tries, retry=attempt(True), avoid=avoid)

    def _mesh(
        self,
        views: Views | str | os.PathLike[str],
        output_path: str | os.PathLike[str],
        options: MeshOptions,
        call: Call,
        tries: Attempts,
    ) -> tuple[Mesh, Slot]:
        def from_source(source: Views | str | os.PathLike[str]) -> Callable[[Slot], Mesh]:
            def work(slot: Slot) -> Mesh:
                return slot.worker.reconstruct(
                    source,
                    output_path,
                    mesh_options=options,
                    overwrite=call.overwrite,
                    timeout=call.timeout,
                    on_progress=call.on_progress,
                )

            return work

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
                return self._attempt("mesh", from_source(path), tries)
            from_grid = from_source(views.grid_path) if views.grid_path is not None else None
            if self.split:
                assert from_grid is not None
                return self._attempt("mesh", from_grid, tries)
            owner = self._slots.slots[views.worker]
            try:
                return self._attempt("mesh", from_source(views), tries, first=owner, retry=from_grid)
            except HandleExpired:
                if from_grid is None:
                    raise
                return self._attempt("mesh", from_grid, tries)
        finally:
            if isinstance(views, PoolViews) and views.transfer and views.grid_path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(views.grid_path)
