"""The real backend: Zero123++ for the views and the InstantMesh LRM for the mesh, both kept warm.

Torch is imported when the backend is created (initialize reports the device); the models load on the
first ``load`` or the first call that needs them. On CUDA the diffusion pipeline runs in float16 and the LRM
in float32, as upstream runs them. Texture maps (``texture_map``) also need the optional ``xatlas``
package; without it they are refused and ``initialize`` does not list the capability.
"""

from __future__ import annotations

import functools
import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch

from instantmesh.texture import TextureUnavailable, load_xatlas, texture_maps_available
from instantmesh.zero123plus.networks.choice import check_optimizations

from ..options import CompileBuild, WorkerOptions
from ..wire.errors import InvalidParams, OutOfMemory
from ..wire.messages import CompileStatus, MemoryInfo
from .base import CAPABILITIES, BackendInfo, GeneratedViews, MeshData, WorkContext
from .grid import split_grid
from .host_memory import process_memory
from .mesh_loading import MeshBeside, MeshModel, load_mesh
from .model_files import ModelFiles, resolve_model_files
from .views_behind import ViewsBehind
from .views_compile import packages_on_cpu
from .views_loading import ViewsLoad
from .views_switch import switch_to_compiled

log = logging.getLogger("rpcworker.instantmesh")


CUDA_DEFAULT_OPTIMIZATIONS = ("channels_last", "compile")
"""The fast default on CUDA (see docs/benchmarks.md, 'One object on the fast path'): the denoising step's two
passes compiled with CUDA graphs (the next step's reference pass beside this step's main pass), the VAE and image
encoder compiled, all in ``load`` and cached on disk per machine, with channels_last convolutions."""
CUDA_DEFAULT_MAX_BATCH = 8
"""Objects per diffusion batch on CUDA when ``--max-batch`` is not given: the best throughput measured (see
docs/benchmarks.md, 'Throughput of one worker'), at the price of a second compiled batch size at start."""


class InstantMeshBackend:
    def __init__(
        self,
        files: ModelFiles,
        device: str | None = None,
        optimizations: tuple[str, ...] | None = None,
        max_batch: int | None = None,
        compile_build: CompileBuild = "at-load",
    ) -> None:
        self.files = files
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        if optimizations is None:
            optimizations = CUDA_DEFAULT_OPTIMIZATIONS if self.device.type == "cuda" else ()
        check_optimizations(optimizations, None if self.device.type == "cpu" and packages_on_cpu() else self.device)
        self.optimizations = tuple(optimizations)
        self.views_behind = ViewsBehind(compile_build)
        """The compiled views: built inside load (in-process callers: load returns them compiled), or behind eager
        serving, switched to between requests (the worker's default, ``--compile-build behind``)."""
        self.max_batch = max_batch or (CUDA_DEFAULT_MAX_BATCH if self.device.type == "cuda" else 1)
        """The most objects one diffusion batch holds; with ``compile`` the step is compiled for 1 and for this many."""
        self.mesh_lane_pays = self.device.type == "cuda"
        """Whether reconstruct beside the diffusion (``--mesh-lane auto``) pays: on a GPU the LRM and FlexiCubes fill
        what the diffusion leaves idle; on the CPU both would share the same cores."""
        self._mesh_stream: torch.cuda.Stream | None = None
        """reconstruct's own CUDA stream (made at the first reconstruct), so that on the mesh lane its kernels run
        beside the diffusion's."""
        self.load_phases: dict[str, float] = {}
        """Seconds per phase of the last loads, for benchmarks and the log. Views: ``read_<part>_s`` from
        `load_zero123plus` (imports, cuda_init, unet, vae, text_encoder, vision_encoder, processors, to_device;
        cuda_init and ``unet_weights_s``, the white-background UNet onto the device, run in a thread beside the
        imports; read_unet_s = ``unet_meta_build_s`` + ``unet_weights_wait_s`` + the strict load),
        ``views_prompt_s``, ``views_read_s`` (all of the above), ``views_optimize_s`` = ``views_optimize_setup_s`` + ``views_warmup_step<i>_s``. Mesh:
        ``mesh_read_s`` (checkpoint onto the device), ``mesh_geometry_s`` (FlexiCubes grid, cameras)."""
        self._pipeline: Any = None
        self._mesh: MeshModel | None = None

    @classmethod
    def from_options(cls, options: WorkerOptions, files: ModelFiles | None = None) -> InstantMeshBackend:
        """The backend the worker's flags describe; ``files``: already resolved from them."""
        files = files or resolve_model_files(options)
        backend = cls(files, options.device, options.optimizations(), options.max_batch, options.compile_build)
        if options.compile_build == "at-load" and "compile" not in backend.optimizations:
            raise ValueError("--compile-build at-load builds the compiled views: it needs the optimization 'compile'")
        return backend

    def info(self) -> BackendInfo:
        cuda = str(torch.version.cuda) if self.device.type == "cuda" else None
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return BackendInfo(
            name="instantmesh",
            model_label=self.files.label,
            weights=self.files.weights,
            device=f"{self.device} ({name})" if self.device.type == "cuda" else "cpu",
            torch=str(torch.__version__),
            cuda=cuda,
            capabilities=[*CAPABILITIES, *(["texture_map"] if texture_maps_available() else [])],
        )

    def loaded(self) -> list[str]:
        return [name for name, model in (("views", self._pipeline), ("mesh", self._mesh)) if model is not None]

    # ------------------------------------------------------------------ loading

    def load(self, models: list[str], ctx: WorkContext) -> dict[str, float]:
        seconds: dict[str, float] = {}
        loading = [name for name in models if name not in self.loaded()]
        beside = MeshBeside(self._load_mesh) if loading == ["views", "mesh"] else None  # see mesh_loading
        try:
            for i, name in enumerate(models):
                if name in self.loaded():
                    continue
                ctx.progress("load", i + 1, len(models), name)
                start = time.perf_counter()
                with self._device_errors(f"load {name}"):
                    if name == "views":
                        report = functools.partial(ctx.progress, "load", i + 1, len(models))
                        load = self.views_load()
                        load.before_warm_up = beside.wait if beside is not None else lambda: None
                        self._pipeline = self.views_behind.start_views(load, report, ctx.progress)
                    elif beside is not None:
                        self._mesh = beside.result()
                    else:
                        self._mesh = self._load_mesh()
                self._synchronize()
                seconds[name] = time.perf_counter() - start
                if name == "mesh" and beside is not None:
                    seconds[name], beside = beside.seconds, None  # its own time, beside the views'
                log.info("loaded %s in %.2f s", name, seconds[name])
        finally:
            if beside is not None:  # the views failed: the mesh loaded beside them stays loaded
                self._mesh = beside.loaded()
        return seconds

    def compile_status(self) -> CompileStatus:
        return self.views_behind.tracker.snapshot()

    def watch_compile(self, listener: Callable[[CompileStatus], None], switch_wanted: Callable[[], None]) -> None:
        self.views_behind.watch(listener, switch_wanted)

    def switch_compiled(self) -> None:
        """Between requests (the session's switch job): the compiled networks, once built and checked, replace the
        ones the views ran until now (in the same pipeline)."""
        with self._device_errors("switch to the compiled views"):
            compiled = self.views_behind.switch(self._pipeline, self._free)
            if compiled is not None:
                switch_to_compiled(self._pipeline, compiled)  # the eager networks it returns are dropped here
                self._free()

    def _batch_sizes(self) -> list[int]:
        """The batches (objects) the step is compiled for at load: one object and a full batch. A batch in between
        runs padded up to the full one or as single objects (`BatchedStep.plan`), never compiling in a request."""
        return sorted({1, self.max_batch})

    def views_load(self) -> ViewsLoad:
        """A load of the views with this backend's files, device and options (its phases go into ``load_phases``)."""
        return ViewsLoad(
            self.files,
            self.device,
            self.dtype,
            self.optimizations,
            self._batch_sizes(),
            self.load_phases,
            self._synchronize,
            self._free,
        )

    def _load_mesh(self) -> MeshModel:
        return load_mesh(self.files, self.device, self.load_phases, self._synchronize)

    def unload(self, models: list[str]) -> list[str]:
        unloaded = [m for m in self.loaded() if m in models]
        if "views" in unloaded:
            self._pipeline = None
        if "mesh" in unloaded:
            self._mesh = None
        self._free()
        return unloaded

    def _require(self, model: str, ctx: WorkContext) -> Any:
        if model not in self.loaded():
            self.load([model], ctx)
        return self._pipeline if model == "views" else self._mesh

    # ------------------------------------------------------------------ work

    def generate_views(
        self, image: Any, seed: int, num_inference_steps: int, guidance_scale: float, ctx: WorkContext
    ) -> GeneratedViews:
        (result,) = self.generate_views_batch([image], [seed], num_inference_steps, guidance_scale, [ctx])
        if isinstance(result, BaseException):
            raise result
        return result

    def generate_views_batch(
        self,
        images: list[Any],
        seeds: list[int],
        num_inference_steps: int,
        guidance_scale: float,
        ctxs: list[WorkContext],
    ) -> list[GeneratedViews | BaseException]:
        """Several objects through one diffusion batch, each with its own CPU generator (its seed's noise)."""
        pipeline = self._require("views", ctxs[0])
        compiled = 1.0 if self.views_behind.tracker.snapshot().batch_sizes else 0.0
        size = self.files.view_size
        start = time.perf_counter()
        with self._device_errors("generate_views"), torch.inference_mode():
            grids = pipeline.generate_batch(
                images,
                [torch.Generator("cpu").manual_seed(seed) for seed in seeds],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                width=2 * size,
                height=3 * size,
                output_type="pil",
                progress=[lambda step, total, ctx=ctx: ctx.progress("diffusion", step, total) for ctx in ctxs],
                check_cancelled=[ctx.check_cancelled for ctx in ctxs],
            )
            self._synchronize_stream()
        seconds = time.perf_counter() - start
        results: list[GeneratedViews | BaseException] = []
        for grid in grids:
            if isinstance(grid, BaseException):
                results.append(grid)
                continue
            views, view_size = split_grid(grid)
            results.append(GeneratedViews(grid, views, view_size, {"diffusion_s": seconds, "compiled": compiled}))
        return results

    def views_from_grid(self, grid: Any) -> tuple[Any, int]:
        return split_grid(grid)

    def reconstruct(self, views: Any, texture_map: bool, ctx: WorkContext) -> MeshData:
        if texture_map:
            _require_texture_support()
        mesh: MeshModel = self._require("mesh", ctx)
        lrm = mesh.lrm
        timings: dict[str, float] = {}
        with self._device_errors("reconstruct"), torch.inference_mode(), self._on_mesh_stream():
            t = time.perf_counter()
            images = self._lrm_input(views, mesh.input_size)
            ctx.progress("reconstruct", 1, 3, "planes")
            planes = lrm.forward_planes(images, mesh.cameras)
            self._synchronize_stream()
            timings["planes_s"] = time.perf_counter() - t
            ctx.check_cancelled()
            t = time.perf_counter()
            ctx.progress("reconstruct", 2, 3, "mesh")
            if texture_map:
                textured = lrm.extract_mesh(planes, use_texture_map=True, texture_resolution=mesh.texture_resolution)
            else:
                vertices, faces, colors = lrm.extract_mesh(planes, use_texture_map=False)
            self._synchronize_stream()  # nothing of this request is left on the stream when its tensors are freed
            timings["mesh_s"] = time.perf_counter() - t
            ctx.progress("reconstruct", 3, 3, "done")
        if not texture_map:
            return MeshData(vertices, faces, colors, timings)
        from PIL import Image

        texture = Image.fromarray(textured.texture, "RGB")
        return MeshData(textured.vertices, textured.faces, None, timings, texture, textured.uvs, textured.uv_faces)

    def _lrm_input(self, views: np.ndarray, size: int) -> torch.Tensor:
        """uint8 [6,S,S,3] -> [1,6,3,R,R] in [0,1] (R: `size`); resized with antialiasing when S != R (no torchvision)."""
        images = torch.from_numpy(np.ascontiguousarray(views)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if images.shape[-1] != size:
            images = torch.nn.functional.interpolate(
                images, size=(size, size), mode="bicubic", align_corners=False, antialias=True
            )
            images = images.clamp(0, 1)
        return images.unsqueeze(0)

    # ------------------------------------------------------------------ memory

    def memory(self) -> MemoryInfo:
        if self.device.type == "cuda":
            return MemoryInfo(
                str(self.device),
                torch.cuda.memory_allocated(self.device),
                torch.cuda.memory_reserved(self.device),
                torch.cuda.max_memory_allocated(self.device),
                torch.cuda.get_device_properties(self.device).total_memory,
            )
        return process_memory()

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _synchronize_stream(self) -> None:
        """Waits for this thread's stream only: on the mesh lane, the other lane's work goes on."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def _on_mesh_stream(self) -> Any:
        if self.device.type != "cuda":
            return nullcontext()
        if self._mesh_stream is None:
            self._mesh_stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(self._mesh_stream)

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @contextmanager
    def _device_errors(self, what: str) -> Iterator[None]:
        """Turns device out-of-memory into the protocol's error after freeing what the failed step held."""
        try:
            yield
        except torch.cuda.OutOfMemoryError as exc:
            message = str(exc).splitlines()[0]
        else:
            return
        self._free()
        info = self.memory()
        raise OutOfMemory(
            f"out of GPU memory in {what}; memory was freed and the worker keeps serving ({message})",
            {
                "device": str(self.device),
                "method": what,
                "allocated_bytes": info.allocated_bytes,
                "total_bytes": info.total_bytes,
            },
        )


def _require_texture_support() -> None:
    """Refuses texture_map before any model work when xatlas is missing, naming the package."""
    try:
        load_xatlas()
    except TextureUnavailable as exc:
        raise InvalidParams(
            f"texture_map is not available: {exc}", {"field": "texture_map", "missing": "xatlas"}
        ) from exc
