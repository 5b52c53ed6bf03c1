"""Mesh export (OBJ, GLB, PLY) with the orientation InstantMesh's own scripts write.

Needs numpy and trimesh only, so the mock backend shares it with the real one.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

MESH_FORMATS = ("obj", "glb", "ply")
Orientation = Literal["instantmesh", "raw"]


def orient(vertices: np.ndarray, faces: np.ndarray, orientation: Orientation) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's saved meshes flip z and reverse the winding; "raw" keeps the model frame."""
    if orientation == "raw":
        return vertices, faces
    if orientation != "instantmesh":
        raise ValueError(f"unknown orientation {orientation!r}")
    return vertices * np.array([1.0, 1.0, -1.0], dtype=vertices.dtype), faces[:, [2, 1, 0]]


def write_mesh(
    path: str,
    fmt: str,
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray | None,
    orientation: Orientation = "instantmesh",
) -> None:
    """Writes the mesh to ``path`` (the caller makes that atomic)."""
    import trimesh

    if fmt not in MESH_FORMATS:
        raise ValueError(f"unknown mesh format {fmt!r}; expected one of {MESH_FORMATS}")
    v, f = orient(np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64), orientation)
    colors = None if vertex_colors is None else np.asarray(vertex_colors, dtype=np.uint8)
    mesh = trimesh.Trimesh(vertices=v, faces=f, vertex_colors=colors, process=False)
    if fmt == "obj":
        data = trimesh.exchange.obj.export_obj(mesh, include_normals=False, include_color=colors is not None)
        with open(path, "w", encoding="utf-8") as out:
            out.write(data)
    else:
        mesh.export(path, file_type=fmt)


def mesh_bounds(vertices: np.ndarray, faces: np.ndarray, orientation: Orientation) -> list[list[float]]:
    v, _ = orient(np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64), orientation)
    if len(v) == 0:
        return [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    return [v.min(axis=0).astype(float).tolist(), v.max(axis=0).astype(float).tolist()]
