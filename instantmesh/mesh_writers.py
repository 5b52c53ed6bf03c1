"""Vectorised OBJ, PLY and GLB writers: the bytes are built by numpy, never per vertex in Python.

OBJ numbers are fixed-point text assembled from 3-digit lookup tables (six decimals for coordinates, four
for colours, which keeps every 8-bit colour exact); PLY is binary little-endian with one structured array per
element; GLB is a glTF 2.0 binary with float32 positions, normalised RGBA8 colours and uint32 indices.
"""

from __future__ import annotations

import json
import struct

import numpy as np

COORD_DECIMALS = 6
_TRIPLES = np.frombuffer("".join(f"{i:03d}" for i in range(1000)).encode(), dtype=np.uint8).reshape(1000, 3)
_COLOUR_TEXT = np.frombuffer("".join(f" {i / 255:.4f}" for i in range(256)).encode(), dtype=np.uint8).reshape(256, 7)
SPACE, MINUS, DOT, ZERO = ord(" "), ord("-"), ord("."), ord("0")


def _digits(values: np.ndarray, groups: int) -> np.ndarray:
    """Non-negative integers [..] -> zero-padded ASCII digits [.., 3 * groups]."""
    out = np.empty((*values.shape, groups, 3), dtype=np.uint8)
    rest = values
    for g in range(groups - 1, -1, -1):
        rest, low = np.divmod(rest, 1000)
        out[..., g, :] = _TRIPLES[low]
    return out.reshape(*values.shape, 3 * groups)


def fixed_point_text(values: np.ndarray) -> np.ndarray:
    """Floats [N, K] -> ASCII [N, K * W]: each value as " -ddd.dddddd" (leading zeros kept, valid for any reader)."""
    scale = 10**COORD_DECIMALS
    magnitude = np.rint(np.abs(values.astype(np.float64)) * scale).astype(np.int64)
    largest = int(magnitude.max()) // scale if magnitude.size else 0
    int_groups = max(1, -(-len(str(largest)) // 3))
    whole, frac = np.divmod(magnitude, scale)
    int_text = _digits(whole, int_groups)
    frac_text = _digits(frac, 2)
    n, k = values.shape
    field = np.empty((n, k, 2 + int_text.shape[-1] + 1 + frac_text.shape[-1]), dtype=np.uint8)
    field[..., 0] = SPACE
    field[..., 1] = np.where((values < 0) & (magnitude > 0), MINUS, SPACE)
    field[..., 2 : 2 + int_text.shape[-1]] = int_text
    field[..., 2 + int_text.shape[-1]] = DOT
    field[..., 3 + int_text.shape[-1] :] = frac_text
    return field.reshape(n, -1)


def integer_text(values: np.ndarray) -> np.ndarray:
    """Non-negative integers [N, K] -> ASCII [N, K * W], each " ddd" right-aligned with leading zeros as spaces."""
    largest = int(values.max()) if values.size else 0
    groups = max(1, -(-len(str(largest)) // 3))
    text = _digits(values.astype(np.int64), groups)
    leading = np.logical_not(np.maximum.accumulate(text != ZERO, axis=-1))
    leading[..., -1] = False
    text[leading] = SPACE
    n, k = values.shape
    field = np.empty((n, k, 1 + text.shape[-1]), dtype=np.uint8)
    field[..., 0] = SPACE
    field[..., 1:] = text
    return field.reshape(n, -1)


def _lines(prefix: bytes, *columns: np.ndarray) -> bytes:
    n = columns[0].shape[0]
    head = np.broadcast_to(np.frombuffer(prefix, dtype=np.uint8), (n, len(prefix)))
    newline = np.full((n, 1), ord("\n"), dtype=np.uint8)
    return np.concatenate([head, *columns, newline], axis=1).tobytes()


def obj_bytes(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> bytes:
    """``v x y z [r g b]`` (colours in [0, 1]) and ``f a b c`` (1-based) lines."""
    if not len(vertices):
        return b""
    columns = [fixed_point_text(vertices)]
    if colors is not None:
        columns.append(_COLOUR_TEXT[colors.astype(np.uint8)].reshape(len(colors), -1))
    v = _lines(b"v", *columns)
    f = _lines(b"f", integer_text(faces + 1)) if len(faces) else b""
    return v + f


def ply_bytes(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> bytes:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}",
              "property float x", "property float y", "property float z"]
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
        {"bufferView": 1, "componentType": 5126, "count": len(positions), "type": "VEC3",
         "min": positions.min(axis=0).tolist() if len(positions) else [0, 0, 0],
         "max": positions.max(axis=0).tolist() if len(positions) else [0, 0, 0]},
    ]
    if colors is not None:
        rgba = np.empty((len(colors), 4), dtype=np.uint8)
        rgba[:, :3] = colors
        rgba[:, 3] = 255
        parts.append(rgba.tobytes())
        attributes["COLOR_0"] = 2
        accessors.append({"bufferView": 2, "componentType": 5121, "normalized": True, "count": len(rgba), "type": "VEC4"})
    views, offset = [], 0
    for i, part in enumerate(parts):
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(part), "target": 34963 if i == 0 else 34962}
        views.append(view)
        offset += len(part) + (-len(part) % 4)
    binary = b"".join(_pad(p, b"\0") for p in parts)
    gltf = {
        "asset": {"version": "2.0", "generator": "instantmesh-rpc"}, "scene": 0, "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}], "meshes": [{"primitives": [{"attributes": attributes, "indices": 0, "mode": 4}]}],
        "accessors": accessors, "bufferViews": views, "buffers": [{"byteLength": len(binary)}],
    }
    text = _pad(json.dumps(gltf, separators=(",", ":")).encode(), b" ")
    total = 12 + 8 + len(text) + 8 + len(binary)
    return (struct.pack("<III", 0x46546C67, 2, total) + struct.pack("<II", len(text), 0x4E4F534A) + text
            + struct.pack("<II", len(binary), 0x004E4942) + binary)


WRITERS = {"obj": obj_bytes, "ply": ply_bytes, "glb": glb_bytes}
