"""Our vectorised writers against trimesh: the same vertices, faces and colours read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instantmesh.export import MESH_FORMATS, orient, write_mesh

trimesh = pytest.importorskip("trimesh")


def _mesh(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vertices = rng.uniform(-1.5, 1.5, (n, 3)).astype(np.float32)
    vertices[0] = [-1234.5678, 0.0, 1e-7]  # several integer digits, an exact zero, a value below the precision
    faces = rng.integers(0, n, (2 * n, 3))
    faces[:n, 0] = np.arange(n)  # every vertex used: OBJ readers drop unused ones
    return vertices, faces, rng.integers(0, 256, (n, 3)).astype(np.uint8)


@pytest.mark.parametrize("fmt", MESH_FORMATS)
def test_written_mesh_reads_back_as_written_in_the_export_orientation(tmp_path: Path, fmt: str) -> None:
    vertices, faces, colors = _mesh()
    path = tmp_path / f"m.{fmt}"
    write_mesh(str(path), fmt, vertices, faces, colors)
    loaded = trimesh.load(str(path), process=False, force="mesh")
    expected_vertices, expected_faces = orient(vertices, faces, "instantmesh")
    np.testing.assert_allclose(loaded.vertices, expected_vertices, atol=6e-7 if fmt == "obj" else 0, rtol=1e-6)
    np.testing.assert_array_equal(loaded.faces, expected_faces)
    np.testing.assert_array_equal(np.asarray(loaded.visual.vertex_colors)[:, :3], colors)


def test_obj_numbers_are_plain_text(tmp_path: Path) -> None:
    vertices = np.array([[0.5, -0.25, 12.0], [-0.0000004, 3.0, -7.125]], np.float32)
    write_mesh(str(tmp_path / "m.obj"), "obj", vertices, np.array([[0, 1, 0]]), None, "raw")
    lines = (tmp_path / "m.obj").read_text().splitlines()
    assert [float(x) for x in lines[0].split()[1:]] == [0.5, -0.25, 12.0]
    assert lines[1].split()[1] == "00.000000"  # rounds to zero: no "-0"; integer digits padded to the widest (12)
    assert lines[2].split() == ["f", "1", "2", "1"]
