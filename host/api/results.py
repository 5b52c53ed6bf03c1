"""What the API hands back for one object: the views held by the worker, and the written mesh."""

from __future__ import annotations

from dataclasses import dataclass, field

from rpcworker.wire.messages import MeshResult, ViewsResult, Weights


@dataclass(frozen=True)
class Views:
    """Six views held by the worker (``handle``), and the saved grid image when one was asked for."""

    handle: str
    grid_path: str | None
    grid_size: tuple[int, int]
    view_size: int
    seed: int
    num_inference_steps: int
    model_label: str
    timings: dict[str, float]
    worker_generation: int
    weights: Weights | None = None
    """official, tiny or mock (None from a worker before protocol 1.5)."""

    @classmethod
    def from_result(cls, result: ViewsResult, worker_generation: int) -> Views:
        """The views of a generate_views result from the worker's ``worker_generation``-th start."""
        return cls(
            handle=result.handle,
            grid_path=result.grid_path,
            grid_size=(result.grid_width, result.grid_height),
            view_size=result.view_size,
            seed=result.seed,
            num_inference_steps=result.num_inference_steps,
            model_label=result.model_label,
            timings=result.timings,
            worker_generation=worker_generation,
            weights=result.weights,
        )


@dataclass(frozen=True)
class Mesh:
    path: str
    format: str
    num_vertices: int
    num_faces: int
    bounds: list[list[float]]
    model_label: str
    timings: dict[str, float]
    extra_paths: list[str] = field(default_factory=list)
    """Files written with the mesh: a textured OBJ's NAME.mtl and NAME.png."""
    weights: Weights | None = None
    """official, tiny or mock (None from a worker before protocol 1.5)."""

    @classmethod
    def from_result(cls, result: MeshResult) -> Mesh:
        return cls(
            path=result.mesh_path,
            format=result.format,
            num_vertices=result.num_vertices,
            num_faces=result.num_faces,
            bounds=result.bounds,
            model_label=result.model_label,
            timings=result.timings,
            extra_paths=list(result.extra_paths),
            weights=result.weights,
        )
