"""Draws the example inputs in examples/inputs/: a mug, a ball (RGBA) and a box (RGB + box_mask.png).

Each object is a small numpy mesh rendered by the contact sheet's rasteriser, placed off-centre on a
larger canvas so that the batch's preprocessing (crop, recentre, scale to 85 %) has real work to do. The
box is an RGB photo-like image on a coloured backdrop with its mask beside it, the layout the batch CLI
and the session pick up (``NAME_mask.png``). Deterministic; rerun after changing the drawing:

    .venvs/host/bin/python examples/make_inputs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from host.images.contact_sheet import render_mesh  # noqa: E402

OUT = Path(__file__).resolve().parent / "inputs"


def _join(*parts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vertices, faces, colors, offset = [], [], [], 0
    for v, f, c in parts:
        vertices.append(v)
        faces.append(f + offset)
        colors.append(c)
        offset += len(v)
    return np.concatenate(vertices), np.concatenate(faces), np.concatenate(colors)


def _grid_faces(rows: int, cols: int, wrap: bool) -> np.ndarray:
    """Two triangles per cell of a rows x cols vertex grid (columns wrap around for surfaces of revolution)."""
    faces = []
    for r in range(rows - 1):
        for c in range(cols if wrap else cols - 1):
            a, b = r * cols + c, r * cols + (c + 1) % cols
            faces += [(a, b, a + cols), (b, b + cols, a + cols)]
    return np.asarray(faces, dtype=np.int64)


def revolve(
    profile: list[tuple[float, float]], color: tuple[int, int, int], segments: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A surface of revolution about z from (radius, height) points."""
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    vertices = np.array([(r * np.cos(p), r * np.sin(p), z) for r, z in profile for p in phi])
    return vertices, _grid_faces(len(profile), segments, wrap=True), np.tile(color, (len(vertices), 1))


def mug() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    outer, inner, top, bottom = 0.62, 0.54, 0.65, -0.65
    base = revolve([(0.0, bottom), (outer, bottom)], (38, 120, 150))
    wall = revolve([(outer, bottom), (outer, top)], (38, 120, 150))
    rim = revolve([(outer, top), (inner, top)], (38, 120, 150))
    inside = revolve([(inner, top), (inner, bottom + 0.08)], (236, 232, 222))
    floor = revolve([(inner, bottom + 0.08), (0.0, bottom + 0.08)], (236, 232, 222))
    theta = np.linspace(-np.pi / 2, np.pi / 2, 24)
    tube = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring, r = 0.36, 0.07
    t, u = np.meshgrid(theta, tube, indexing="ij")
    y = outer - 0.04 + (ring + r * np.cos(u)) * np.cos(t)
    z = (ring + r * np.cos(u)) * np.sin(t)
    x = r * np.sin(u)
    handle_v = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    handle = (handle_v, _grid_faces(len(theta), len(tube), wrap=True), np.tile((38, 120, 150), (len(handle_v), 1)))
    return _join(base, wall, rim, inside, floor, handle)


def ball() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rings, segments = 40, 72
    theta = np.linspace(0, np.pi, rings)
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    vertices = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1).reshape(-1, 3) * 0.8
    palette = np.array(
        [(220, 50, 47), (250, 250, 245), (38, 110, 200), (250, 250, 245), (240, 190, 30), (250, 250, 245)]
    )
    sector = ((p.ravel() + 0.3) // (2 * np.pi / 6)).astype(int) % 6
    colors = palette[sector]
    return vertices, _grid_faces(rings, segments, wrap=True), colors


def box() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    half = np.array([0.55, 0.8, 0.45])
    parts = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            u, v = [a for a in range(3) if a != axis]
            corners = np.zeros((4, 3))
            corners[:, axis] = sign * half[axis]
            corners[:, u] = np.array([-1, 1, 1, -1]) * half[u]
            corners[:, v] = np.array([-1, -1, 1, 1]) * half[v]
            color = (214, 170, 110) if axis != 2 else (226, 186, 128)
            parts.append((corners, np.array([[0, 1, 2], [0, 2, 3]]), np.tile(color, (4, 1))))
    tape = np.array([[-0.56, -0.1, 0.451], [0.56, -0.1, 0.451], [0.56, 0.1, 0.451], [-0.56, 0.1, 0.451]])
    parts.append((tape, np.array([[0, 1, 2], [0, 2, 3]]), np.tile((180, 140, 90), (4, 1))))
    return _join(*parts)


def place(render: Image.Image, canvas_size: tuple[int, int], offset: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGBA", canvas_size, (0, 0, 0, 0))
    canvas.paste(render, offset)
    return canvas


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    v, f, c = mug()
    mug_image = render_mesh(
        v, f, c, size=200, azimuth=-20, elevation=25, orientation="raw", supersample=3, transparent=True
    )
    place(mug_image, (320, 256), (80, 30)).save(OUT / "mug.png", optimize=True)

    v, f, c = ball()
    ball_image = render_mesh(
        v, f, c, size=150, azimuth=35, elevation=15, orientation="raw", supersample=3, transparent=True
    )
    place(ball_image, (256, 256), (20, 90)).save(OUT / "ball.png", optimize=True)

    v, f, c = box()
    box_image = place(
        render_mesh(v, f, c, size=180, azimuth=35, elevation=28, orientation="raw", supersample=3, transparent=True),
        (288, 240),
        (70, 40),
    )
    yy, xx = np.mgrid[:240, :288]
    backdrop = np.stack([150 + 40 * yy / 240, 170 + 20 * xx / 288, 160 + 0 * xx], axis=-1).astype(np.uint8)
    photo = Image.alpha_composite(Image.fromarray(backdrop).convert("RGBA"), box_image).convert("RGB")
    photo.save(OUT / "box.png", optimize=True)
    mask = (np.asarray(box_image.getchannel("A")) > 127).astype(np.uint8) * 255
    Image.fromarray(mask).save(OUT / "box_mask.png", optimize=True)
    for path in sorted(OUT.iterdir()):
        print(f"{path.relative_to(OUT.parent.parent)}  {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
