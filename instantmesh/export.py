"""Mesh export (OBJ, GLB, PLY) with the orientation InstantMesh's own scripts write.

Needs numpy (and trimesh and pillow for texture maps) only, so the mock backend shares it with the real one.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from rpcworker.wire.messages import MESH_FORMATS, MeshFormat, Orientation

from .mesh_writers import WRITERS
from .obj_text import obj_chunks

TEXTURED_FORMATS: tuple[MeshFormat, ...] = ("obj", "glb")
"""PLY has no standard texture-map reference, so a textured mesh is refused in PLY."""
MATERIAL_NAME = "material_0"


def orient_vertices(vertices: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Upstream's saved meshes flip z; "raw" keeps the model frame."""
    if orientation == "raw":
        return vertices
    if orientation != "instantmesh":
        raise ValueError(f"unknown orientation {orientation!r}")
    return vertices * np.array([1.0, 1.0, -1.0], dtype=vertices.dtype)


def orient_faces(faces: np.ndarray, orientation: Orientation) -> np.ndarray:
    """The winding reversed with the z flip, so faces keep facing out (a view: no copy of a large face array)."""
    return faces if orientation == "raw" else faces[:, ::-1]


def orient(vertices: np.ndarray, faces: np.ndarray, orientation: Orientation) -> tuple[np.ndarray, np.ndarray]:
    oriented = orient_vertices(vertices, orientation)
    return oriented, orient_faces(faces, orientation)


def write_mesh(
    path: str,
    fmt: str,
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray | None,
    orientation: Orientation = "instantmesh",
) -> None:
    """Writes the mesh to ``path`` (the caller makes that atomic)."""
    if fmt not in MESH_FORMATS:
        raise ValueError(f"unknown mesh format {fmt!r}; expected one of {MESH_FORMATS}")
    v, f = orient(np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64), orientation)
    colors = None if vertex_colors is None else np.asarray(vertex_colors, dtype=np.uint8)
    with open(path, "wb") as out:
        out.writelines(WRITERS[fmt](v, f, colors))


def write_obj(path: str, vertices: np.ndarray, faces: np.ndarray, vertex_colors: np.ndarray | None) -> None:
    """OBJ with per-vertex colours as ``v x y z r g b`` (colours in [0, 1], as trimesh and MeshLab read them)."""
    with open(path, "wb") as out:
        out.writelines(obj_chunks(np.asarray(vertices), np.asarray(faces), vertex_colors))


def texture_companions(path: str, fmt: str) -> list[str]:
    """Files a textured mesh writes besides ``path``: NAME.mtl and NAME.png beside an OBJ; none for GLB
    (the texture is embedded)."""
    if fmt != "obj":
        return []
    stem = os.path.splitext(path)[0]
    return [f"{stem}.mtl", f"{stem}.png"]


def write_textured_mesh(
    path: str,
    fmt: str,
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    uv_faces: np.ndarray,
    texture: Any,
    orientation: Orientation = "instantmesh",
    *,
    mtl_path: str | None = None,
    texture_path: str | None = None,
    reference_stem: str | None = None,
) -> None:
    """Writes a UV-textured mesh (the caller makes the files atomic).

    ``vertices``/``faces`` and ``uvs``/``uv_faces`` are indexed separately (as OBJ stores them); ``texture``
    is an RGB image (PIL or uint8 [H, W, 3]) whose first row is v = 1. The orientation moves vertices and
    reverses both index arrays; UVs are untouched. For OBJ the material and texture go to ``mtl_path`` and
    ``texture_path`` (default: beside ``path``), and the OBJ and MTL refer to them as
    ``reference_stem``.mtl/.png (default: the stem of ``path``): the names they will have once in place,
    whatever temporary names they are written under.
    """
    if fmt not in TEXTURED_FORMATS:
        raise ValueError(f"a textured mesh can be written as {' or '.join(TEXTURED_FORMATS)}, not {fmt!r}")
    from PIL import Image

    image = texture if isinstance(texture, Image.Image) else Image.fromarray(np.asarray(texture, dtype=np.uint8), "RGB")
    v, f = orient(np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64), orientation)
    uv_f = orient_faces(np.asarray(uv_faces, dtype=np.int64), orientation)
    uvs = np.asarray(uvs, dtype=np.float32)
    if fmt == "glb":
        import trimesh

        split_v, split_f = split_by_uv(v, f, uv_f, len(uvs))
        visual = trimesh.visual.TextureVisuals(uv=uvs, image=image)
        trimesh.Trimesh(vertices=split_v, faces=split_f, visual=visual, process=False).export(path, file_type="glb")
        return
    default_mtl, default_png = texture_companions(path, "obj")
    stem = reference_stem or os.path.basename(os.path.splitext(path)[0])
    with open(mtl_path or default_mtl, "w", encoding="utf-8") as out:
        out.write(f"newmtl {MATERIAL_NAME}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd {stem}.png\n")
    image.save(texture_path or default_png, format="PNG")
    write_obj_uv(path, v, f, uvs, uv_f, f"{stem}.mtl")


def write_obj_uv(
    path: str, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, uv_faces: np.ndarray, mtllib: str
) -> None:
    """OBJ with ``vt`` coordinates and ``f v/vt`` corners using material ``material_0`` of ``mtllib``."""
    vertex_lines = ("v %.8f %.8f %.8f\n" * len(vertices)) % tuple(vertices.astype(np.float64).ravel().tolist())
    uv_lines = ("vt %.8f %.8f\n" * len(uvs)) % tuple(uvs.astype(np.float64).ravel().tolist())
    corners = np.stack([faces + 1, uv_faces + 1], axis=-1)
    face_lines = ("f %d/%d %d/%d %d/%d\n" * len(faces)) % tuple(corners.ravel().tolist())
    with open(path, "w", encoding="utf-8") as out:
        out.write(f"mtllib {mtllib}\n")
        out.write(vertex_lines)
        out.write(uv_lines)
        out.write(f"usemtl {MATERIAL_NAME}\n")
        out.write(face_lines)


def split_by_uv(
    vertices: np.ndarray, faces: np.ndarray, uv_faces: np.ndarray, num_uvs: int
) -> tuple[np.ndarray, np.ndarray]:
    """One vertex per texture coordinate (what GLB and engines need: a seam vertex becomes several).

    Returns vertices [num_uvs, 3] and the faces into them, which are ``uv_faces``.
    """
    vertex_of_uv = np.zeros(num_uvs, dtype=np.int64)
    vertex_of_uv[uv_faces.ravel()] = faces.ravel()
    return vertices[vertex_of_uv], uv_faces


def mesh_bounds(vertices: np.ndarray, orientation: Orientation) -> list[list[float]]:
    v = orient_vertices(np.asarray(vertices, dtype=np.float32), orientation)
    if len(v) == 0:
        return [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    return [v.min(axis=0).astype(float).tolist(), v.max(axis=0).astype(float).tolist()]
