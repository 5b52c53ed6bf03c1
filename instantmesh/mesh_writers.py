"""Vectorised OBJ, PLY and GLB writers: the bytes are built by numpy, never per vertex in Python.

OBJ text comes from ``obj_text.obj_chunks`` (fixed-width lines, six decimals for coordinates, four for colours, which
keeps every 8-bit colour exact) in blocks; PLY is binary little-endian with one structured array per element;
GLB is a glTF 2.0 binary with float32 positions, normalised RGBA8 colours and uint32 indices.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable

import numpy as np

from .obj_text import obj_chunks


def ply_bytes(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> bytes:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = [
        "ply",
        "format binary_little_endian 1.0",
        f"element vertex {len(vertices)}",
        "property float x",
        "property float y",
        "property float z",
    ]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue", "property uchar alpha"]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    vertex = np.empty(len(vertices), dtype=fields)
    for i, axis in enumerate("xyz"):
        vertex[axis] = vertices[:, i]
    if colors is not None:
        for i, channel in enumerate(("red", "green", "blue")):
            vertex[channel] = colors[:, i]
        vertex["alpha"] = 255
    face = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"] = 3
    face["i"] = faces
    return ("\n".join(header) + "\n").encode("ascii") + vertex.tobytes() + face.tobytes()


def _pad(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


def glb_bytes(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> bytes:
    """One mesh, one primitive (triangles), no material: the layout trimesh and viewers read."""
    positions = np.ascontiguousarray(vertices, dtype="<f4")
    indices = np.ascontiguousarray(faces, dtype="<u4").ravel()
    parts = [indices.tobytes(), positions.tobytes()]
    attributes = {"POSITION": 1}
    accessors = [
        {"bufferView": 0, "componentType": 5125, "count": int(indices.size), "type": "SCALAR"},
        {
            "bufferView": 1,
            "componentType": 5126,
            "count": len(positions),
            "type": "VEC3",
            "min": positions.min(axis=0).tolist() if len(positions) else [0, 0, 0],
            "max": positions.max(axis=0).tolist() if len(positions) else [0, 0, 0],
        },
    ]
    if colors is not None:
        rgba = np.empty((len(colors), 4), dtype=np.uint8)
        rgba[:, :3] = colors
        rgba[:, 3] = 255
        parts.append(rgba.tobytes())
        attributes["COLOR_0"] = 2
        accessors.append(
            {"bufferView": 2, "componentType": 5121, "normalized": True, "count": len(rgba), "type": "VEC4"}
        )
    views, offset = [], 0
    for i, part in enumerate(parts):
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(part), "target": 34963 if i == 0 else 34962}
        views.append(view)
        offset += len(part) + (-len(part) % 4)
    binary = b"".join(_pad(p, b"\0") for p in parts)
    gltf = {
        "asset": {"version": "2.0", "generator": "instantmesh-rpc"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": 0, "mode": 4}]}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(binary)}],
    }
    text = _pad(json.dumps(gltf, separators=(",", ":")).encode(), b" ")
    total = 12 + 8 + len(text) + 8 + len(binary)
    return (
        struct.pack("<III", 0x46546C67, 2, total)
        + struct.pack("<II", len(text), 0x4E4F534A)
        + text
        + struct.pack("<II", len(binary), 0x004E4942)
        + binary
    )


MeshWriter = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], "Iterable[bytes | memoryview]"]
"""Returns the file's bytes in parts, to be written in order as they come (``writelines``)."""


def _whole(writer: Callable[[np.ndarray, np.ndarray, np.ndarray | None], bytes]) -> MeshWriter:
    return lambda vertices, faces, colors: (writer(vertices, faces, colors),)


WRITERS: dict[str, MeshWriter] = {"obj": obj_chunks, "ply": _whole(ply_bytes), "glb": _whole(glb_bytes)}
