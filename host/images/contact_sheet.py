"""One PNG per object: the input, the six views and the exported mesh seen from three sides.

The previews are drawn by a small numpy rasteriser (z-buffer, interpolated vertex colours, Lambert
shading with smooth normals), so checking a batch needs no GPU, no OpenGL and no viewer: it reads the mesh file the worker
wrote, which also proves the file loads. Needs pillow, numpy and trimesh (the ``images`` extra).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rpcworker.wire.messages import Weights

PREVIEW_AZIMUTHS = (0.0, 120.0, 240.0)
PREVIEW_ELEVATION = 20.0
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
MUTED = (110, 110, 110)
WARNING = (180, 20, 20)
NOT_OFFICIAL: tuple[Weights, ...] = ("tiny", "mock")
"""Weights whose results are noise or fakes: the sheet prints their label in the warning colour."""


class ContactSheetError(ValueError):
    """The sheet could not be drawn; the message names the file that was wrong."""


def load_mesh(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Vertices (float32 Nx3), faces (int64 Fx3) and vertex colours (uint8 Nx3, or None) of a mesh file."""
    import trimesh

    try:
        mesh: Any = trimesh.load(os.fspath(path), force="mesh", process=False)  # force="mesh": a Trimesh
    except (ValueError, OSError, KeyError, IndexError) as exc:
        raise ContactSheetError(f"{path}: cannot read the mesh ({type(exc).__name__}: {exc})") from exc
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    colors = None
    visual = getattr(mesh, "visual", None)
    if visual is not None and getattr(visual, "kind", None) == "vertex":
        colors = np.asarray(visual.vertex_colors)[:, :3].astype(np.uint8)
    return vertices, faces, colors


def _camera_axes(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Rows: camera right, up and backward (towards the viewer), for a z-up world like Zero123++'s."""
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    back = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    return np.stack([right, up, back])


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    size: int = 256,
    azimuth: float = 0.0,
    elevation: float = PREVIEW_ELEVATION,
    orientation: str = "instantmesh",
    supersample: int = 2,
    transparent: bool = False,
) -> Image.Image:
    """An orthographic, shaded view of the mesh, fitted to the frame: RGB on white, or RGBA with
    ``transparent`` (alpha is the antialiased coverage).

    ``orientation="instantmesh"`` undoes the z flip of the worker's default export, so azimuth 0 looks
    from where the input photo was taken (Zero123++'s frame: z up, azimuth from +x towards +y).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    n = size * supersample
    if len(vertices) == 0 or len(faces) == 0:
        return (
            Image.new("RGBA", (size, size), (0, 0, 0, 0)) if transparent else Image.new("RGB", (size, size), BACKGROUND)
        )
    if orientation == "instantmesh":
        vertices = vertices * np.array([1.0, 1.0, -1.0])
    elif orientation != "raw":
        raise ValueError(f"orientation must be 'instantmesh' or 'raw', got {orientation!r}")
    used = vertices[np.unique(faces)]
    centre = (used.min(axis=0) + used.max(axis=0)) / 2
    radius = float(np.linalg.norm(used - centre, axis=1).max()) or 1.0
    camera = (vertices - centre) / radius @ _camera_axes(azimuth, elevation).T
    screen = np.empty_like(camera)
    screen[:, 0] = (camera[:, 0] * 0.92 + 1.0) * 0.5 * n
    screen[:, 1] = (1.0 - (camera[:, 1] * 0.92 + 1.0) * 0.5) * n
    screen[:, 2] = camera[:, 2]
    vertex_rgb = np.full((len(vertices), 3), 180.0) if colors is None else np.asarray(colors, dtype=np.float64)[:, :3]
    pixel, face, bary = _rasterize(screen, faces, n)
    image = np.zeros((n * n, 4), dtype=np.float64)
    image[:, :3] = BACKGROUND
    if len(pixel):
        normal = np.einsum("fk,fkc->fc", bary, _vertex_normals(camera, faces)[faces[face]])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
        normal[normal[:, 2] < 0] *= -1.0
        light = np.array([-0.35, 0.45, 0.82])
        light /= np.linalg.norm(light)
        shade = 0.35 + 0.65 * np.clip(normal @ light, 0.0, 1.0)
        rgb = np.einsum("fk,fkc->fc", bary, vertex_rgb[faces[face]])
        image[pixel, :3] = np.clip(rgb * shade[:, None], 0, 255)
        image[pixel, 3] = 255
    if not transparent:
        image = image[:, :3]
    picture = Image.fromarray(np.round(image).reshape(n, n, -1).astype(np.uint8))
    return picture.resize((size, size), Image.Resampling.LANCZOS) if supersample > 1 else picture


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals, for smooth shading (creases come from duplicated vertices)."""
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    unit: np.ndarray = normals / (np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12)
    return unit


def _rasterize(screen: np.ndarray, faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nearest fragment per covered pixel: pixel index, face index and barycentric weights.

    Faces are grouped by the (power-of-two) size of their pixel box and tested against every pixel
    centre in it at once, so the work is numpy-vectorised whatever the triangle sizes.
    """
    tri = screen[faces].astype(np.float32)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    x0 = np.clip(np.ceil(x.min(axis=1) - 0.5), 0, n).astype(np.int64)
    x1 = np.clip(np.floor(x.max(axis=1) - 0.5), -1, n - 1).astype(np.int64)
    y0 = np.clip(np.ceil(y.min(axis=1) - 0.5), 0, n).astype(np.int64)
    y1 = np.clip(np.floor(y.max(axis=1) - 0.5), -1, n - 1).astype(np.int64)
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    visible = (x1 >= x0) & (y1 >= y0) & (np.abs(area) > 1e-9)
    level_x = np.ceil(np.log2(np.maximum(x1 - x0 + 1, 1))).astype(np.int64)
    level_y = np.ceil(np.log2(np.maximum(y1 - y0 + 1, 1))).astype(np.int64)
    key = np.where(visible, level_x * 64 + level_y, -1)
    pixels, faces_hit, weights, depths = [], [], [], []
    for bucket in np.unique(key[visible]):
        kx, ky = 1 << int(bucket // 64), 1 << int(bucket % 64)
        members = np.flatnonzero(key == bucket)
        dy, dx = np.divmod(np.arange(kx * ky), kx)
        for chunk in np.array_split(members, len(members) * kx * ky // 500_000 + 1):
            px = x0[chunk, None] + dx[None, :]
            py = y0[chunk, None] + dy[None, :]
            cx, cy = px.astype(np.float32) + 0.5, py.astype(np.float32) + 0.5
            tx, ty, ta = x[chunk], y[chunk], area[chunk, None]
            w0 = ((tx[:, 1, None] - cx) * (ty[:, 2, None] - cy) - (tx[:, 2, None] - cx) * (ty[:, 1, None] - cy)) / ta
            w1 = ((tx[:, 2, None] - cx) * (ty[:, 0, None] - cy) - (tx[:, 0, None] - cx) * (ty[:, 2, None] - cy)) / ta
            w2 = 1.0 - w0 - w1
            hit = (px <= x1[chunk, None]) & (py <= y1[chunk, None]) & (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6)
            rows, cols = np.nonzero(hit)
            if rows.size == 0:
                continue
            f = chunk[rows]
            b = np.stack([w0[rows, cols], w1[rows, cols], w2[rows, cols]], axis=1)
            pixels.append(py[rows, cols] * n + px[rows, cols])
            faces_hit.append(f)
            weights.append(b)
            depths.append((b * z[f]).sum(axis=1))
    if not pixels:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 3))
    pixel = np.concatenate(pixels)
    depth = np.concatenate(depths)
    order = np.lexsort((-depth, pixel))
    first = np.ones(len(order), dtype=bool)
    first[1:] = pixel[order][1:] != pixel[order][:-1]
    nearest = order[first]
    return pixel[nearest], np.concatenate(faces_hit)[nearest], np.concatenate(weights)[nearest].astype(np.float64)


def split_grid(grid: Image.Image) -> list[Image.Image]:
    """The six views of a 3-row x 2-column grid, in reading order (upstream's layout)."""
    width, height = grid.size
    side = width // 2
    if side == 0 or height != 3 * side:
        raise ContactSheetError(f"the views grid is {width}x{height}; expected 2 views wide and 3 high")
    return [grid.crop((c * side, r * side, (c + 1) * side, (r + 1) * side)) for r in range(3) for c in range(2)]


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _on_white(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _fit(image: Image.Image, side: int) -> Image.Image:
    """Scaled to fit a ``side`` square (nearest for small images, so tiny views stay crisp), centred."""
    image = _on_white(image)
    scale = side / max(image.size)
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
    resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    tile = Image.new("RGB", (side, side), BACKGROUND)
    tile.paste(resized, ((side - resized.width) // 2, (side - resized.height) // 2))
    return tile


def _open(path: str | os.PathLike[str], what: str) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.load()
            copied: Image.Image = opened.copy()
            return copied
    except (OSError, ValueError, SyntaxError) as exc:
        raise ContactSheetError(f"{path}: cannot read the {what} ({exc})") from exc


def make_contact_sheet(
    *,
    title: str,
    input_image: Image.Image | str | os.PathLike[str] | None,
    views_grid: Image.Image | str | os.PathLike[str] | None,
    mesh_path: str | os.PathLike[str] | None,
    notes: Sequence[str] = (),
    model_label: str = "",
    weights: Weights | None = None,
    orientation: str = "instantmesh",
    tile: int = 160,
) -> Image.Image:
    """Row 1: the input and the six views; row 2: the mesh from three azimuths; a header with the labels."""
    header = 58
    width = 5 * tile + 6 * 8
    render_side = (width - 4 * 8) // 3
    label_h = 18
    height = header + 2 * tile + 8 + label_h + render_side + label_h + 8
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 6), title, fill=INK, font=_font(18))
    if model_label:
        colour = WARNING if weights in NOT_OFFICIAL else MUTED
        draw.text((8, 30), f"model: {model_label}", fill=colour, font=_font(12))
    if notes:
        draw.text((8, 44), "   ".join(notes), fill=MUTED, font=_font(11))
    small = _font(11)
    top = header
    if input_image is not None:
        picture = _open(input_image, "input image") if not isinstance(input_image, Image.Image) else input_image
        sheet.paste(_fit(picture, 2 * tile), (8, top))
        draw.text((8, top + 2 * tile + 3), "input", fill=MUTED, font=small)
    if views_grid is not None:
        grid = _open(views_grid, "views grid") if not isinstance(views_grid, Image.Image) else views_grid
        for i, view in enumerate(split_grid(grid)):
            row, col = divmod(i, 3)
            sheet.paste(_fit(view, tile - 4), (2 * tile + 16 + col * (tile + 8), top + row * tile))
        draw.text(
            (2 * tile + 16, top + 2 * tile + 3), "six views (Zero123++ layout, row by row)", fill=MUTED, font=small
        )
    top += 2 * tile + label_h + 8
    if mesh_path is not None:
        vertices, faces, colors = load_mesh(mesh_path)
        for i, azimuth in enumerate(PREVIEW_AZIMUTHS):
            render = render_mesh(vertices, faces, colors, size=render_side, azimuth=azimuth, orientation=orientation)
            left = 8 + i * (render_side + 8)
            sheet.paste(render, (left, top))
            draw.rectangle((left, top, left + render_side - 1, top + render_side - 1), outline=(225, 225, 225))
            draw.text((left, top + render_side + 3), f"mesh, azimuth {azimuth:.0f}°", fill=MUTED, font=small)
    return sheet


def _output_mode(beside: Any) -> int:
    """The mode of the worker's mesh beside the sheet, so every output of an object has the same permissions
    (mkstemp alone would give 0600)."""
    try:
        return os.stat(beside).st_mode & 0o777
    except (OSError, TypeError):
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def write_contact_sheet(path: str | os.PathLike[str], **parts: Any) -> Path:
    """Draws the sheet (see make_contact_sheet) and writes it atomically: a failure never leaves half a PNG."""
    target = Path(path)
    sheet = make_contact_sheet(**parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A short fixed prefix: a temporary name built on a NAME near the file system's limit would not fit. mkstemp
    # makes the file new (O_EXCL), so a symlink planted under its name is never followed; the rename replaces one
    # planted at the target's name instead of writing through it.
    handle, temporary = tempfile.mkstemp(prefix=".sheet-", suffix=".png", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            sheet.save(out, format="PNG", optimize=False)
        os.chmod(temporary, _output_mode(parts.get("mesh_path")))
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    return target
