"""Mesh outputs: which files a reconstruct writes (checked before any work) and writing them atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .backends.base import MeshData
from .outputs import OutputPolicy, atomic_outputs
from .wire.errors import InternalError, InvalidParams
from .wire.messages import ReconstructParams


@dataclass(frozen=True)
class MeshTargets:
    mesh_path: str
    format: str
    companions: list[str]
    """A textured OBJ's .mtl and .png (in that order), else empty."""
    root: str | None = None
    """The worker's output root, enforced again when the files are written."""


def plan_mesh_outputs(policy: OutputPolicy, params: ReconstructParams) -> MeshTargets:
    """The resolved targets, or the error naming the rule broken; nothing is written here."""
    from instantmesh.export import MESH_FORMATS, TEXTURED_FORMATS, texture_companions

    fmt = params.format or os.path.splitext(params.output_path)[1].lstrip(".").lower()
    if fmt not in MESH_FORMATS:
        raise InvalidParams(
            f"cannot tell the mesh format of {params.output_path!r}; use .obj, .glb or .ply or set format",
            {"field": "format", "path": params.output_path},
        )
    if params.texture_map and fmt not in TEXTURED_FORMATS:
        raise InvalidParams(
            f"texture_map needs obj or glb output; {fmt} has no standard way to reference a texture "
            "(use texture_map=false for vertex colours in PLY)",
            {"field": "texture_map", "value": fmt},
        )
    out = policy.check(params.output_path, "output_path", params.overwrite)
    companions = texture_companions(out, fmt) if params.texture_map else []
    companions = [policy.check(path, "output_path", params.overwrite) for path in companions]
    if out in companions:
        raise InvalidParams(
            f"output_path {params.output_path} is also the name of its own texture or material file; use the .obj extension",
            {"field": "output_path", "path": params.output_path},
        )
    return MeshTargets(out, fmt, companions, policy.root)


def write_mesh_outputs(
    targets: MeshTargets, mesh: MeshData, params: ReconstructParams, before_commit: Callable[[str], None] | None
) -> list[list[float]]:
    """Writes the mesh (companions first, mesh last: once it is in place, they are too); returns its bounds."""
    from instantmesh.export import mesh_bounds, write_mesh, write_textured_mesh

    companions = targets.companions
    with atomic_outputs([*companions, targets.mesh_path], params.overwrite, before_commit, targets.root) as tmps:
        if mesh.textured:
            if mesh.uvs is None or mesh.uv_faces is None or mesh.texture is None:
                raise InternalError("the backend returned a texture without UVs", {"type": "BackendError"})
            write_textured_mesh(
                tmps[-1],
                targets.format,
                mesh.vertices,
                mesh.faces,
                mesh.uvs,
                mesh.uv_faces,
                mesh.texture,
                params.orientation,
                mtl_path=tmps[0] if companions else None,
                texture_path=tmps[1] if companions else None,
                reference_stem=os.path.splitext(os.path.basename(targets.mesh_path))[0],
            )
        else:
            write_mesh(tmps[-1], targets.format, mesh.vertices, mesh.faces, mesh.vertex_colors, params.orientation)
    return mesh_bounds(mesh.vertices, params.orientation)
