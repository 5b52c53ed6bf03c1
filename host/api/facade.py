"""The API people call: ``InstantMeshWorker`` with generate_views, reconstruct and image_to_mesh."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from rpcworker.wire.errors import HandleExpired, RpcError
from rpcworker.wire.messages import (
    GenerateViewsParams,
    InitializeResult,
    LoadResult,
    MeshLane,
    Preset,
    StatusResult,
    UnloadResult,
    ViewsGridPath,
    ViewsHandle,
    ViewsResult,
    ViewsSource,
)

from ..worker.cancellation import Cancellation
from ..worker.client import WorkerClient
from ..worker.process import WorkerCommand
from ..worker.session import ProgressCallback
from .arguments import worker_arguments
from .inputs import ImageLike, absolute_path
from .map import map_objects, views_in_order
from .options import (
    MeshOptions,
    PrepareOptions,
    ViewOptions,
    checked,
    map_mesh_options,
    mesh_options_of,
    reconstruct_params,
    view_options_of,
    views_params,
)
from .outcome import ObjectOutcome, map_targets
from .preparing import Preparation, model_input, require_image_libraries
from .progress import WorkerProgress
from .results import Mesh, Views


class InstantMeshWorker:
    """One warm worker; use it as a context manager so the worker is shut down with the block.

    ``python``: the worker environment, as a python path, a venv directory, ``conda:ENV`` or a command
    prefix; by default INSTANTMESH_RPC_PYTHON or the project's models env.

    ``preset``: ``"official"`` (the default) starts only with the official weights, found as the README says,
    and otherwise raises WeightsMissing at start (one line naming every place searched and how to get the
    files); ``"tiny"`` runs random tiny models (tests, demos); ``"auto"`` falls back to tiny when they are missing.

    ``prepare`` (default on): generate_views, image_to_mesh and map prepare each photo in this process first,
    as upstream's run.py does and as the CLI does (``host.api.preparing``: the object cut out by its mask, a
    file's ``NAME_mask.png``, its alpha, a white backdrop or rembg (the ``rembg`` extra, for any other photo),
    then cropped, centred and scaled as ``prepare_options`` say). It needs pillow and numpy here, checked now:
    without them this raises PreparationUnavailable naming the fix (rembg is looked for only when a photo needs
    it, and its absence is that photo's InputUnreadable, naming the install command). ``prepare=False`` sends
    inputs as they are (prepared elsewhere, e.g. Any6D's crops). Each call may choose otherwise (``prepare=``, ``prepare_options=``).

    ``progress`` (default off): bars on stderr for each request's stages (load, views, mesh), and for a
    map (or generate_views_many) one line of objects done, in flight, per minute and the time left.
    """

    def __init__(
        self,
        python: str | WorkerCommand | None = None,
        *,
        backend: str = "instantmesh",
        preset: Preset = "official",
        zero123plus: str | None = None,
        unet: str | None = None,
        lrm: str | None = None,
        device: str | None = None,
        max_batch: int | None = None,
        mesh_lane: MeshLane | None = None,
        worker_args: Sequence[str] = (),
        request_timeout: float | None = None,
        startup_timeout: float = 300.0,
        auto_restart: bool = True,
        on_progress: ProgressCallback | None = None,
        on_stderr: Callable[[str], None] | None = None,
        prepare: bool = True,
        prepare_options: PrepareOptions | None = None,
        progress: bool = False,
    ) -> None:
        self.preparation = Preparation(prepare, checked(prepare_options or PrepareOptions()))
        if prepare:
            require_image_libraries()  # refused here, in one line, rather than at the first request
        self.progress = WorkerProgress(progress)
        command = python if isinstance(python, WorkerCommand) else (WorkerCommand.parse(python) if python else None)
        # max_batch: objects per diffusion batch in the worker (its default: 8 on CUDA, 1 on CPU); 1 starts faster
        # (one compiled batch size) and suits one object at a time; above 1 pays off through map().
        # mesh_lane: "on", "off" or "auto" (the worker's default: on with CUDA), reconstruct beside the next diffusion.
        args = worker_arguments(
            backend,
            preset=preset,
            zero123plus=zero123plus,
            unet=unet,
            lrm=lrm,
            device=device,
            max_batch=max_batch,
            mesh_lane=mesh_lane,
            extra=worker_args,
        )
        self.client = WorkerClient(
            command,
            args,
            startup_timeout=startup_timeout,
            request_timeout=request_timeout,
            auto_restart=auto_restart,
            on_stderr=on_stderr,
        )
        self.on_progress = on_progress

    def __enter__(self) -> InstantMeshWorker:
        self.client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> InstantMeshWorker:
        self.client.start()
        return self

    def close(self) -> int | None:
        """Shuts the worker down; returns its exit code (None when none was running)."""
        return self.client.close()

    @property
    def info(self) -> InitializeResult:
        """The running worker's handshake (pid, python, device, model label, capabilities); starts it if needed."""
        return self.client.start()

    @property
    def generation(self) -> int:
        """Counts worker starts: a change means the worker was restarted and its models and handles are gone."""
        return self.client.generation

    @property
    def command_line(self) -> str:
        """The worker's interpreter command, as shown to people."""
        return " ".join(self.client.command.prefix)

    @property
    def model_label(self) -> str:
        return self.client.start().model_label

    def load(
        self, models: Sequence[str] = ("views", "mesh"), *, on_progress: ProgressCallback | None = None
    ) -> LoadResult:
        with self.progress.request(on_progress or self.on_progress) as callback:
            return self.client.load(models, on_progress=callback)

    def unload(self, models: Sequence[str] = ("views", "mesh")) -> UnloadResult:
        """Frees the models' memory; the result names what was unloaded and the memory left allocated."""
        return self.client.unload(models)

    def status(self) -> StatusResult:
        return self.client.status()

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
    ) -> Views:
        """Views of one object. The keywords override ``view_options`` (default ``ViewOptions()``: seed
        DEFAULT_SEED, DEFAULT_STEPS steps, guidance DEFAULT_GUIDANCE); a bad value raises InvalidParams.
        ``cancellation``: another thread may cancel the call, which then raises Cancelled (nothing written).
        ``prepare``/``prepare_options``: None keeps the worker's choice (see the class). When the worker's queued
        requests already hold its bound of inline images (several threads sending at once; protocol.md section 12)
        this raises WorkerBusy at once, nothing queued: call again once one of the earlier calls has returned
        (``map`` and ``generate_views_many`` wait so themselves)."""
        options = view_options_of(
            view_options, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale
        )
        source = model_input(image, self.preparation.of_call(prepare, prepare_options))
        params = views_params(source, absolute_path(save_grid), options, overwrite)
        with self.progress.request(on_progress or self.on_progress) as callback:
            result = self.client.generate_views(
                params, timeout=timeout, on_progress=callback, cancellation=cancellation
            )
        return self.views_from_result(result)

    def generate_views_many(
        self,
        images: Sequence[ImageLike],
        *,
        seeds: Sequence[int] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        view_options: ViewOptions | None = None,
        save_grids: Sequence[str | os.PathLike[str] | None] | None = None,
        overwrite: bool = False,
        timeout: float | None = None,
        prepare: bool | None = None,
        prepare_options: PrepareOptions | None = None,
    ) -> list[Views | RpcError]:
        """Views of several objects, all requested at once so that a worker started with ``--max-batch``
        (see ``worker_args``) can run them as batches. One object's worker error (RpcError) is returned in
        its place and does not stop the others; a dead worker or a timeout (``timeout`` bounds each
        request) raises as in generate_views. Seeds default to ``view_options``' seed each; inputs are
        prepared as in generate_views (an input that cannot be prepared gets its error in its place too)."""
        preparation = self.preparation.of_call(prepare, prepare_options)
        options = view_options_of(view_options, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
        per_image = (
            [view_options_of(options, seed=seed) for seed in seeds] if seeds is not None else [options] * len(images)
        )
        grids = list(save_grids) if save_grids is not None else [None] * len(images)
        if not len(per_image) == len(grids) == len(images):
            raise ValueError(
                f"{len(images)} images need as many seeds and save_grids, got {len(per_image)} and {len(grids)}"
            )
        params: list[GenerateViewsParams | RpcError] = []
        for image, one, grid in zip(images, per_image, grids):  # lengths checked above
            try:
                params.append(views_params(model_input(image, preparation), absolute_path(grid), one, overwrite))
            except RpcError as err:  # an input the host cannot prepare: its error, in its place
                params.append(err)
        tally = self.progress.objects(len(params))
        return list(self.progress.ending(views_in_order(self, params, timeout, tally)))

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
        """Every image to ``out_dir/NAME.FORMAT`` (and ``NAME_views.png``) through this worker, with enough
        requests in flight that a ``--max-batch`` worker runs full batches and never waits for the host.
        Yields one outcome per object in input order, failures in place (never raised); a dead worker raises.
        Options as in generate_views and reconstruct (format default obj); names as in ``WorkerPool.map``.
        Each input is prepared just before its views are requested; one that cannot be fails alone."""
        views = view_options_of(
            view_options, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale
        )
        mesh = map_mesh_options(mesh_options, format=format, texture_map=texture_map, orientation=orientation)
        preparation = self.preparation.of_call(prepare, prepare_options)
        items = list(images)
        targets = map_targets(items, out_dir, mesh, save_grids=save_grids, names=names)
        outcomes = map_objects(
            self,
            items,
            targets,
            views,
            mesh,
            overwrite=overwrite,
            timeout=timeout,
            preparation=preparation,
            tally=self.progress.objects(len(targets)),
        )
        return self.progress.ending(outcomes)

    def views_from_result(self, result: ViewsResult) -> Views:
        """The API's Views for a generate_views result of this worker (used by the map helpers too)."""
        return Views.from_result(result, self.client.generation)

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
        """``views``: a Views from generate_views, or the path of a saved 3x2 grid image. The keywords
        override ``mesh_options`` (default ``MeshOptions()``: format from the path's extension, vertex colours);
        ``cancellation`` as in generate_views."""
        options = mesh_options_of(mesh_options, format=format, texture_map=texture_map, orientation=orientation)
        source: ViewsSource
        if isinstance(views, Views):
            if views.worker_generation != self.client.generation:
                raise HandleExpired(
                    f"views handle {views.handle} came from a worker that has since been restarted",
                    {"handle": views.handle, "reason": "worker restarted"},
                )
            source = ViewsHandle(views.handle)
        else:
            source = ViewsGridPath(absolute_path(views) or "")
        params = reconstruct_params(source, absolute_path(output_path) or "", options, overwrite)
        with self.progress.request(on_progress or self.on_progress) as callback:
            result = self.client.reconstruct(params, timeout=timeout, on_progress=callback, cancellation=cancellation)
        return Mesh.from_result(result)

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
        """generate_views (the input prepared as there) then reconstruct, with their options; ``on_progress``
        hears both, ``cancellation`` stops whichever runs (a cancelled call sends no reconstruct)."""
        views_chosen = view_options_of(
            view_options, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale
        )
        mesh_chosen = mesh_options_of(mesh_options, format=format, texture_map=texture_map, orientation=orientation)
        call: dict[str, Any] = dict(
            overwrite=overwrite, timeout=timeout, on_progress=on_progress, cancellation=cancellation
        )
        views = self.generate_views(
            image,
            view_options=views_chosen,
            save_grid=save_grid,
            prepare=prepare,
            prepare_options=prepare_options,
            **call,
        )
        return self.reconstruct(views, output_path, mesh_options=mesh_chosen, **call)
