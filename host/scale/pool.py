"""``WorkerPool``: many ordinary stdio workers behind the ``InstantMeshWorker`` methods, one per GPU by default.

Each request goes to the least-loaded worker; views stay bound to the worker that made them. A worker that
crashes is restarted in the background and the object it was working on is redone once on another worker
(a stalled one: after its request timeout), while the other workers keep going. Split mode runs views on one
device and meshes on another; the views grid travels between them as a file in shared memory, in a folder
named after the pool's host: a pool that starts removes the folders of pools whose host was killed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from ..api.facade import InstantMeshWorker
from ..api.inputs import ImageLike
from ..api.options import (
    MeshOptions,
    PrepareOptions,
    ViewOptions,
    checked,
    map_mesh_options,
    mesh_options_of,
    view_options_of,
)
from ..api.outcome import ObjectOutcome, ObjectTarget, map_targets
from ..api.preparing import Preparation, prepared, require_image_libraries
from ..api.progress import WorkerProgress
from ..api.results import Mesh, Views
from ..api.tally import ObjectTally
from ..worker.cancellation import Cancellation
from ..worker.owners import owned_folder
from ..worker.process import WorkerCommand
from ..worker.session import ProgressCallback
from .object_steps import Attempts, Call, ObjectSteps, PoolViews
from .plan import DEFAULT_CANCEL_GRACE_S, pool_options, worker_plan
from .slots import (
    ROLE_MODELS,
    PoolWorkerStatus,
    Slot,
    Slots,
    close_all,
    in_parallel,
    pinned_command,
    start_all,
    visible_gpus,
)

SHARED_MEMORY_DIR = "/dev/shm"
TRANSFER_PREFIX = "instantmesh-pool-"
"""A transfer folder's name: this, its host's owner tag and a random part (`host.worker.owners.owned_folder`)."""


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
        cancel_grace: float | None = DEFAULT_CANCEL_GRACE_S,
        prepare: bool = True,
        prepare_options: PrepareOptions | None = None,
        progress: bool = False,
        **worker_options: Any,
    ) -> None:
        layout = pool_options(
            devices=devices,
            workers=workers,
            split=split,
            device=worker_options.pop("device", None),
            cancel_grace=cancel_grace,
        )
        gpus = visible_gpus()
        plan = worker_plan(layout, gpus)  # a bad argument or a GPU this machine lacks: one line, before any worker
        self.preparation = Preparation(prepare, checked(prepare_options or PrepareOptions()))
        if prepare:
            require_image_libraries()  # refused here, in one line, rather than at the first request
        self.progress = WorkerProgress(progress)
        worker_options.setdefault("max_batch", 1)  # each worker takes one object at a time: no batch size to compile
        base = (
            python
            if isinstance(python, WorkerCommand)
            else (WorkerCommand.parse(python) if python else WorkerCommand.default())
        )
        slots = []
        for index, (role, device) in enumerate(plan):
            command, worker_device = pinned_command(base, device, gpus)
            # The pool prepares each input itself, once, whichever worker takes it.
            worker = InstantMeshWorker(
                command, device=worker_device, auto_restart=True, prepare=False, **worker_options
            )
            worker.client.cancel_grace = layout.cancel_grace
            slots.append(Slot(index, role, device, worker))
        self.split = layout.split is not None
        self._slots = Slots(slots, worker_options.get("startup_timeout", 300.0))
        self._steps = ObjectSteps(self._slots, self.split)

    # ---------------------------------------------------------------- life

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> WorkerPool:
        start_all(self._slots.slots)
        if self.split and self._steps.transfer_dir is None:
            base = SHARED_MEMORY_DIR if os.access(SHARED_MEMORY_DIR, os.W_OK) else tempfile.gettempdir()
            self._steps.transfer_dir = owned_folder(TRANSFER_PREFIX, base)
        return self

    def close(self) -> None:
        """Stops every worker (calls still waiting fail with WorkerCrashed and are not retried)."""
        self._slots.shutdown()
        close_all(self._slots.slots)
        if self._steps.transfer_dir is not None:
            shutil.rmtree(self._steps.transfer_dir, ignore_errors=True)
            self._steps.transfer_dir = None

    @property
    def size(self) -> int:
        return len(self._slots)

    @property
    def transfer_dir(self) -> str | None:
        """Split mode, while the pool runs: the folder grids pass through from views to mesh workers."""
        return self._steps.transfer_dir

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

    @property
    def weights(self) -> str | None:
        """Which weights the workers run: ``official``, ``tiny`` or ``none`` (the mock backend)."""
        return self._slots.slots[0].worker.info.weights

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
        cancellation: Cancellation | None = None,
        prepare: bool | None = None,
        prepare_options: PrepareOptions | None = None,
    ) -> PoolViews:
        """On the least-loaded views worker, options as in ``InstantMeshWorker.generate_views``. In split mode
        the grid is always written (to ``save_grid``, else to a shared-memory file), because a mesh worker reads it."""
        options = view_options_of(
            view_options, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale
        )
        source = prepared(image, self.preparation.of_call(prepare, prepare_options))
        with self.progress.request(on_progress) as callback:
            call = Call(overwrite, timeout, callback, cancellation)
            views, _ = self._steps.views(source, save_grid, options, call, Attempts())
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
        cancellation: Cancellation | None = None,
    ) -> Mesh:
        """Views from this pool go back to the worker that holds them; a grid path goes to the least-loaded
        mesh worker. If the holder crashed, views with a saved grid are reconstructed from it elsewhere."""
        options = mesh_options_of(mesh_options, format=format, texture_map=texture_map, orientation=orientation)
        with self.progress.request(on_progress) as callback:
            call = Call(overwrite, timeout, callback, cancellation)
            mesh, _ = self._steps.mesh(views, output_path, options, call, Attempts())
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
        on_progress: ProgressCallback | None = None,
        cancellation: Cancellation | None = None,
        prepare: bool | None = None,
        prepare_options: PrepareOptions | None = None,
    ) -> Mesh:
        views = view_options_of(
            view_options, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale
        )
        mesh_chosen = mesh_options_of(mesh_options, format=format, texture_map=texture_map, orientation=orientation)
        source = prepared(image, self.preparation.of_call(prepare, prepare_options))
        target = ObjectTarget("", Path(output_path), Path(save_grid) if save_grid is not None else None)
        with self.progress.request(on_progress) as callback:
            call = Call(overwrite, timeout, callback, cancellation)
            mesh, _ = self._steps.object(source, target, views, mesh_chosen, call, Attempts())
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
        prepare: bool | None = None,
        prepare_options: PrepareOptions | None = None,
    ) -> Iterator[ObjectOutcome]:
        """Every image to ``out_dir/NAME.FORMAT`` (and ``NAME_views.png``), every worker busy; yields one
        outcome per object as it finishes, failures included (never raised). Options as in
        ``InstantMeshWorker.map``. Leaving the loop early drops the objects not started yet."""
        views = view_options_of(
            view_options, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale
        )
        mesh = map_mesh_options(mesh_options, format=format, texture_map=texture_map, orientation=orientation)
        call = Call(overwrite, timeout, preparation=self.preparation.of_call(prepare, prepare_options))
        items = list(images)
        targets = map_targets(items, out_dir, mesh, save_grids=save_grids, names=names)
        tally = self.progress.objects(len(targets))
        return self.progress.ending(self._map(items, targets, views, mesh, call, tally))  # checked now, run as iterated

    def _map(
        self,
        items: list[ImageLike],
        targets: list[ObjectTarget],
        views: ViewOptions,
        mesh: MeshOptions,
        call: Call,
        tally: ObjectTally | None,
    ) -> Iterator[ObjectOutcome]:
        if len(items) != len(targets):  # map_targets makes one per image; a mismatch is a bug, not bad input
            raise ValueError(f"{len(items)} images for {len(targets)} output targets")
        executor = ThreadPoolExecutor(max_workers=max(1, len(self._slots)), thread_name_prefix="pool-map")
        futures: dict[Future[ObjectOutcome], int] = {}
        try:
            for index, (image, target) in enumerate(zip(items, targets)):
                future = executor.submit(self._steps.outcome, index, image, target, views, mesh, call, tally)
                futures[future] = index
            for future in as_completed(futures):
                yield future.result()
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
