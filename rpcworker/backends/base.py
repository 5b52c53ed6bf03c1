"""The backend interface: what the method handlers need from a model implementation.

Backends receive decoded images and return arrays; reading inputs, writing outputs, handles and the wire
stay in the handlers and the session, so a backend is only the models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..wire.messages import MESH_FORMATS, CompileStatus, MemoryInfo, Weights

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


CAPABILITIES = ("generate_views", "reconstruct", "progress", "cancel", f"formats:{','.join(MESH_FORMATS)}")
"""What every backend offers; a backend adds ``texture_map`` when it can unwrap meshes."""


class WorkContext(Protocol):
    """Given to every model call: report progress, and stop early when the request is cancelled."""

    def progress(self, stage: str, step: int, total: int, message: str = "") -> None: ...

    def check_cancelled(self) -> None:
        """Raises errors.Cancelled once the request has been cancelled."""


@dataclass
class GeneratedViews:
    grid: Image.Image
    """The 3x2 grid of views as an RGB image (what upstream saves)."""
    views: Any
    """The views in the backend's own form, kept behind a handle for reconstruct."""
    view_size: int
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class MeshData:
    vertices: np.ndarray
    """float32 [N, 3] in the model's frame (before the export orientation)."""
    faces: np.ndarray
    """int64 [F, 3]."""
    vertex_colors: np.ndarray | None
    """uint8 [N, 3] or None."""
    timings: dict[str, float] = field(default_factory=dict)
    texture: Image.Image | None = None
    """An RGB texture map (first row at v = 1), or None for vertex colours."""
    uvs: np.ndarray | None = None
    """float32 [T, 2] texture coordinates in [0, 1], with ``texture``."""
    uv_faces: np.ndarray | None = None
    """int64 [F, 3] into ``uvs``, face by face with ``faces`` (positions and UVs are indexed apart, as in OBJ)."""

    @property
    def textured(self) -> bool:
        return self.texture is not None


@dataclass
class BackendInfo:
    name: str
    model_label: str
    """Shown to people in every result: says which weights produced it (e.g. tiny random weights)."""
    weights: Weights
    """The same, for programs: official, tiny or mock."""
    device: str
    torch: str | None
    cuda: str | None
    capabilities: list[str]


class Backend(Protocol):
    def info(self) -> BackendInfo: ...

    def loaded(self) -> list[str]: ...

    def load(self, models: list[str], ctx: WorkContext) -> dict[str, float]:
        """Loads the named models that are not loaded yet; returns seconds per model loaded now."""

    def unload(self, models: list[str]) -> list[str]:
        """Frees the named models (and their device memory); returns those that were loaded."""

    def memory(self) -> MemoryInfo | None: ...

    def generate_views(
        self, image: Image.Image, seed: int, num_inference_steps: int, guidance_scale: float, ctx: WorkContext
    ) -> GeneratedViews: ...

    def views_from_grid(self, grid: Image.Image) -> tuple[Any, int]:
        """Views (in the backend's form) and the view size, from a 3x2 grid image."""

    def reconstruct(self, views: Any, texture_map: bool, ctx: WorkContext) -> MeshData: ...


@runtime_checkable
class BatchingBackend(Protocol):
    """A backend that runs several objects' views through one diffusion batch (``--max-batch`` above 1)."""

    def generate_views_batch(
        self,
        images: list[Image.Image],
        seeds: list[int],
        num_inference_steps: int,
        guidance_scale: float,
        ctxs: list[WorkContext],
    ) -> list[GeneratedViews | BaseException]:
        """One result per object, each the same as ``generate_views`` alone would give with its seed.

        An object whose context is cancelled leaves the batch with the Cancelled error; the others go on.
        """


@runtime_checkable
class CompilingBackend(Protocol):
    """A backend whose views may switch to compiled networks while it serves (protocol.md, status ``compile``)."""

    def compile_status(self) -> CompileStatus: ...

    def watch_compile(self, listener: Callable[[CompileStatus], None], switch_wanted: Callable[[], None]) -> None:
        """`listener` hears every change of the status; `switch_wanted` is called (on any thread) when compiled
        views wait for `switch_compiled`."""

    def switch_compiled(self) -> None:
        """Switches to the compiled views that wait, if any; called with no request running."""


BackendFactory = Callable[..., Backend]


class SilentContext:
    """A WorkContext for calling a backend in-process (benchmarks, notebooks): no progress, never cancelled."""

    def progress(self, stage: str, step: int, total: int, message: str = "") -> None:
        pass

    def check_cancelled(self) -> None:
        pass
