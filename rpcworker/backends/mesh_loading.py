"""Loading the mesh model: the LRM from its checked safetensors copy straight onto the device, then FlexiCubes.

When one ``load`` asks for the views and then the mesh, the mesh loads in a thread beside the views
(`MeshBeside`): both mostly wait on reads and copies that release the GIL, so the second start reads both
models' weights at once. The views wait for it before their packages run or their CUDA graphs are captured, so
no CUDA work of the mesh's runs beside a capture.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..wire.cache import cache_root
from ..wire.errors import ModelNotLoaded
from .model_files import ModelFiles


@dataclass(frozen=True)
class MeshModel:
    """The loaded LRM and what reconstruct needs beside it."""

    lrm: Any
    cameras: torch.Tensor
    """The six Zero123++ views' input cameras, on the device."""
    input_size: int
    """The LRM's input view size (views of another size are resized)."""
    texture_resolution: int


def load_mesh(
    files: ModelFiles, device: torch.device, phases: dict[str, float], synchronize: Callable[[], None]
) -> MeshModel:
    """The mesh model on `device`; ``mesh_read_s`` (checkpoint onto the device) and ``mesh_geometry_s`` (FlexiCubes
    grid, cameras) go into `phases`."""
    from instantmesh.cameras import ZERO123PLUS_FOV_DEG, zero123plus_input_cameras
    from instantmesh.lrm.config import load_config
    from instantmesh.lrm.model import load_instantmesh_lrm

    start = time.perf_counter()
    try:
        config = load_config(files.lrm_config)
        lrm = load_instantmesh_lrm(config, files.lrm, device=device, cache=cache_root() / "safetensors")
        synchronize()
        phases["mesh_read_s"] = time.perf_counter() - start
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelNotLoaded(
            f"cannot load the LRM from {files.lrm}: {exc}",
            {"model": "mesh", "searched": [str(files.lrm), str(files.lrm_config)]},
        ) from exc
    lrm.init_flexicubes_geometry(device, fovy=ZERO123PLUS_FOV_DEG)
    cameras = zero123plus_input_cameras(batch_size=1).to(device)
    synchronize()
    phases["mesh_geometry_s"] = time.perf_counter() - start - phases["mesh_read_s"]
    return MeshModel(lrm, cameras, config.infer.input_size, config.infer.texture_resolution)


class MeshBeside:
    """`load` (a `load_mesh`) running in a thread of its own from construction; `seconds` is its own duration."""

    def __init__(self, load: Callable[[], MeshModel]) -> None:
        self.seconds = 0.0
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mesh-load")
        self._future = pool.submit(self._timed, load)
        pool.shutdown(wait=False)  # its one thread ends with the load

    def _timed(self, load: Callable[[], MeshModel]) -> MeshModel:
        start = time.perf_counter()
        model = load()
        self.seconds = time.perf_counter() - start
        return model

    def wait(self) -> None:
        """Until the load has ended, well or not (its error comes from `result`)."""
        concurrent.futures.wait([self._future])

    def result(self) -> MeshModel:
        """The model, or the load's error raised here."""
        return self._future.result()

    def loaded(self) -> MeshModel | None:
        """After waiting: the model if it loaded, else None (for a load whose views failed)."""
        self.wait()
        return None if self._future.exception() is not None else self._future.result()
