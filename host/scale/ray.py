"""Ray: one actor per GPU, each owning one ordinary stdio worker, and ``map_images`` over a pool of them.

Ray needs the same Python on the driver and in its actors, and InstantMesh needs its own; so the actor lives
in the host's environment (msgspec + ray) and starts the worker in the InstantMesh environment on its node.
Ray gives the actor its GPU through CUDA_VISIBLE_DEVICES, which the worker inherits. Importing ``host`` never
imports ray; this module does (``pip install instantmesh-rpc[ray]``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import ray
from ray.exceptions import RayActorError

from ..api.facade import InstantMeshWorker
from ..api.options import (
    MeshOptions,
    PrepareOptions,
    ViewOptions,
    checked,
    map_mesh_options,
    view_options_of,
)
from ..api.outcome import ObjectOutcome, describe_error, map_targets
from ..worker.busy import until_admitted
from .plan import actor_options

WORKER_LOST = ("WorkerCrashed", "RequestTimeout")
"""Outcome codes that are the worker's failure, not the object's: the object is redone once."""
ACTOR_START_RETRIES = 0
"""Actors are not restarted by Ray: a dead actor's object is retried once on another actor instead."""


class MeshActor:
    """The body of the Ray actor: one warm ``InstantMeshWorker`` on this node, started on construction."""

    def __init__(self, python: str | None = None, **worker_options: Any) -> None:
        worker_options.setdefault("max_batch", 1)  # one object at a time per actor: no batch size to compile at start
        self.worker = InstantMeshWorker(python, auto_restart=True, **worker_options).start()
        self.where = f"{socket.gethostname()}:{os.getpid()}"

    def load(self) -> str:
        self.worker.load()
        return self.where

    def describe(self) -> dict[str, Any]:
        """Where the actor runs, its worker's pid and the GPU Ray gave it."""
        process = self.worker.client.process
        return {
            "where": self.where,
            "worker_pid": process.pid if process is not None else None,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "model_label": self.worker.model_label,
        }

    def make(
        self, index: int, name: str, image: str, mesh_path: str, grid_path: str | None, options: ObjectOptions
    ) -> ObjectOutcome:
        """One object; an error of the object or of the worker becomes a failed outcome, never an exception. A
        request the worker refuses busy (protocol.md section 12) goes again after a short pause."""
        try:
            views = until_admitted(
                lambda: self.worker.generate_views(
                    image,
                    view_options=options.views,
                    save_grid=grid_path,
                    overwrite=options.overwrite,
                    timeout=options.timeout,
                    prepare=options.preparation is not None,
                    prepare_options=options.preparation,
                )
            )
            mesh = until_admitted(
                lambda: self.worker.reconstruct(
                    views, mesh_path, mesh_options=options.mesh, overwrite=options.overwrite, timeout=options.timeout
                )
            )
        except Exception as exc:  # noqa: BLE001 - reported in the outcome
            message, code = describe_error(exc)
            return ObjectOutcome(index, name, None, message, code, worker=self.where)
        return ObjectOutcome(index, name, mesh, worker=self.where, grid_path=grid_path)

    def close(self) -> None:
        self.worker.close()


def actor_class(num_gpus: float = 1, num_cpus: float = 1) -> Any:
    """``MeshActor`` as a Ray actor class with its resources (one GPU each by default)."""
    return ray.remote(num_gpus=num_gpus, num_cpus=num_cpus, max_restarts=ACTOR_START_RETRIES)(MeshActor)


class ObjectOptions(msgspec.Struct, frozen=True):
    """What each object of a map is made with, sent to the actors whole (Structs pickle)."""

    views: ViewOptions
    mesh: MeshOptions
    overwrite: bool = False
    timeout: float | None = None
    preparation: PrepareOptions | None = None
    """How the actor prepares each input on its node (None: sent as it is)."""


@dataclass
class RayMapReport:
    outcomes: list[ObjectOutcome]
    """One per image, in the order given."""
    actors: list[dict[str, Any]] = field(default_factory=list)
    """What each actor said about itself at start (``MeshActor.describe``)."""

    @property
    def failures(self) -> list[ObjectOutcome]:
        return [o for o in self.outcomes if not o.ok]


def map_images(
    images: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    actors: int | list[Any] | None = None,
    address: str | None = None,
    python: str | None = None,
    num_gpus: float = 1,
    num_cpus: float = 1,
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
    load: bool = True,
    prepare: bool = True,
    prepare_options: PrepareOptions | None = None,
    **worker_options: Any,
) -> RayMapReport:
    """Images (paths every node can read) to meshes in ``out_dir`` (a folder every node can write) over
    ``actors`` Ray actors (default: one per GPU of the cluster, at least one; or a list of ``start_actors``
    handles, kept running afterwards so several maps share warm workers). Connects to ``address``
    (``auto`` or ``ray://...``) unless Ray is already initialised. Each actor takes one object at a time;
    an actor (or its worker) that dies has its object redone once. Failures are listed, not raised. Options as
    in ``InstantMeshWorker.map``; each actor prepares its inputs on its node (pillow and numpy there; the
    actors this starts refuse at start without them), unless ``prepare=False``. Every other keyword goes to
    each actor's ``InstantMeshWorker``."""
    views = view_options_of(
        view_options, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale
    )
    mesh = map_mesh_options(mesh_options, format=format, texture_map=texture_map, orientation=orientation)
    preparation = checked(prepare_options or PrepareOptions()) if prepare else None
    options = ObjectOptions(views, mesh, overwrite, timeout, preparation)
    if not isinstance(actors, list):  # a bad count is refused before Ray is reached
        actor_options(actors=actors, num_gpus=num_gpus, num_cpus=num_cpus)
    if not ray.is_initialized():
        ray.init(address=address)
    paths = [os.path.abspath(os.fspath(image)) for image in images]
    targets = map_targets(paths, out_dir, mesh, save_grids=save_grids, names=names)
    os.makedirs(os.path.abspath(os.fspath(out_dir)), exist_ok=True)
    if isinstance(actors, list):
        owned, live = False, list(actors)
    else:
        owned, live = (
            True,
            start_actors(
                actors, python=python, num_gpus=num_gpus, num_cpus=num_cpus, prepare=prepare, **worker_options
            ),
        )
    try:
        described = ray.get([a.describe.remote() for a in live])
        if load:
            ray.get([a.load.remote() for a in live])
        outcomes = _schedule(live, paths, targets, options)
    finally:
        if owned:
            stop_actors(live)
    return RayMapReport(outcomes, described)


def start_actors(
    count: int | None = None,
    *,
    python: str | None = None,
    num_gpus: float = 1,
    num_cpus: float = 1,
    **worker_options: Any,
) -> list[Any]:
    """``count`` MeshActors (default: one per GPU of the cluster); refuses a bad count (``actors`` in the
    message, as map_images calls it) and what the cluster cannot place, in one line."""
    chosen = actor_options(actors=count, num_gpus=num_gpus, num_cpus=num_cpus)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if chosen.num_gpus and cluster_gpus < chosen.num_gpus:
        raise ValueError(
            f"the Ray cluster has {cluster_gpus:g} GPU(s), an actor needs {num_gpus:g}; pass num_gpus=0 for CPU actors"
        )
    if chosen.actors is not None:
        count = chosen.actors
    else:
        count = max(1, int(cluster_gpus // chosen.num_gpus)) if chosen.num_gpus else 1
    remote = actor_class(chosen.num_gpus, chosen.num_cpus)
    return [remote.remote(python, **worker_options) for _ in range(count)]


def stop_actors(live: Sequence[Any]) -> None:
    """Each actor stops its worker (polite shutdown), then the actor goes."""
    for actor in live:
        with contextlib.suppress(RayActorError, ray.exceptions.GetTimeoutError):
            ray.get(actor.close.remote(), timeout=30)
        ray.kill(actor)


def _schedule(live: list[Any], paths: list[str], targets: list[Any], options: ObjectOptions) -> list[ObjectOutcome]:
    """One object per actor at a time; a lost actor leaves the rotation and its object goes to another once."""
    todo = [(i, 1) for i in range(len(paths))]
    todo.reverse()
    results: dict[int, ObjectOutcome] = {}
    running: dict[Any, tuple[Any, int, int]] = {}
    idle = list(live)

    def submit(actor: Any) -> None:
        index, attempt = todo.pop()
        target = targets[index]
        grid = str(target.grid) if target.grid is not None else None
        # A redo may find the grid or mesh that its lost first attempt wrote: those files are ours to replace.
        ref = actor.make.remote(
            index,
            target.name,
            paths[index],
            str(target.mesh),
            grid,
            options if attempt == 1 else msgspec.structs.replace(options, overwrite=True),
        )
        running[ref] = (actor, index, attempt)

    while todo or running:
        while todo and idle:
            submit(idle.pop())
        if not running:  # every actor died: what is left fails
            for index, attempt in todo:
                results[index] = ObjectOutcome(
                    index, targets[index].name, None, "no Ray actor left to run it", "RayActorError", attempts=attempt
                )
            break
        ready, _ = ray.wait(list(running), num_returns=1)
        actor, index, attempt = running.pop(ready[0])
        try:
            outcome = ray.get(ready[0])
            if outcome.error_code in WORKER_LOST and attempt == 1:
                todo.append((index, 2))  # the actor's worker died or stalled; it restarts with its next object
                idle.insert(0, actor)  # another idle actor, if any, takes the retry
                continue
        except RayActorError as exc:
            if attempt == 1:
                todo.append((index, 2))
                continue
            outcome = ObjectOutcome(
                index,
                targets[index].name,
                None,
                f"the Ray actor died: {str(exc).splitlines()[0]}",
                "RayActorError",
                attempts=attempt,
            )
            results[index] = outcome
            continue
        results[index] = ObjectOutcome(**{**vars(outcome), "attempts": attempt})
        idle.append(actor)
    return [results[i] for i in range(len(paths))]
