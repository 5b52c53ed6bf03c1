"""Mesh export: our OBJ writer against trimesh's reader, every format, and the export orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instantmesh.export import MESH_FORMATS, mesh_bounds, orient, write_mesh

trimesh = pytest.importorskip("trimesh")


def _mesh(n: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    vertices = rng.normal(size=(n, 3)).astype(np.float32)
    faces = rng.integers(0, n, size=(2 * n, 3)).astype(np.int64)
    colors = rng.integers(0, 256, size=(n, 3)).astype(np.uint8)
    return vertices, faces, colors


@pytest.mark.parametrize("fmt", MESH_FORMATS)
def test_every_format_reads_back_with_the_instantmesh_orientation(tmp_path: Path, fmt: str) -> None:
    vertices, faces, colors = _mesh()
    path = tmp_path / f"m.{fmt}"
    write_mesh(str(path), fmt, vertices, faces, colors)
    back = trimesh.load(path, force="mesh", process=False)
    expected_v, expected_f = orient(vertices, faces, "instantmesh")
    np.testing.assert_allclose(back.vertices, expected_v, atol=1e-6)
    np.testing.assert_array_equal(back.faces, expected_f)
    np.testing.assert_array_equal(np.asarray(back.visual.vertex_colors)[:, :3], colors)


def test_orientation_flips_z_and_reverses_winding() -> None:
    vertices, faces, _ = _mesh(4)
    v, f = orient(vertices, faces, "instantmesh")
    np.testing.assert_array_equal(v[:, :2], vertices[:, :2])
    np.testing.assert_array_equal(v[:, 2], -vertices[:, 2])
    np.testing.assert_array_equal(f, faces[:, ::-1])
    assert orient(vertices, faces, "raw")[0] is vertices
    with pytest.raises(ValueError, match="orientation"):
        orient(vertices, faces, "upside-down")  # type: ignore[arg-type]


def test_obj_without_colours_and_empty_meshes(tmp_path: Path) -> None:
    vertices, faces, _ = _mesh()
    write_mesh(str(tmp_path / "plain.obj"), "obj", vertices, faces, None, "raw")
    assert (tmp_path / "plain.obj").read_text().splitlines()[0].count(" ") == 3
    empty = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    write_mesh(str(tmp_path / "empty.obj"), "obj", *empty, None)
    assert (tmp_path / "empty.obj").read_text() == ""
    assert mesh_bounds(*empty, "raw") == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="format"):
        write_mesh(str(tmp_path / "m.stl"), "stl", vertices, faces, None)
