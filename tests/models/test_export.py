"""Mesh export: the orientation, colourless, empty and textured meshes (formats read back: test_mesh_writers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instantmesh.export import mesh_bounds, orient, write_mesh

trimesh = pytest.importorskip("trimesh")


def _mesh(n: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    vertices = rng.normal(size=(n, 3)).astype(np.float32)
    faces = rng.integers(0, n, size=(2 * n, 3)).astype(np.int64)
    colors = rng.integers(0, 256, size=(n, 3)).astype(np.uint8)
    return vertices, faces, colors


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
    assert len((tmp_path / "plain.obj").read_text().splitlines()[0].split()) == 4
    empty = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    write_mesh(str(tmp_path / "empty.obj"), "obj", *empty, None)
    assert (tmp_path / "empty.obj").read_text() == ""
    assert mesh_bounds(empty[0], "raw") == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="format"):
        write_mesh(str(tmp_path / "m.stl"), "stl", vertices, faces, None)


def _textured(n: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    vertices, faces, _ = _mesh(n)
    uvs = rng.random((2 * n, 2)).astype(np.float32)
    uv_faces = rng.integers(0, 2 * n, size=faces.shape).astype(np.int64)
    texture = rng.integers(0, 256, size=(16, 16, 3)).astype(np.uint8)
    return vertices, faces, uvs, uv_faces, texture


def test_textured_obj_keeps_positions_and_uvs_paired_through_the_orientation(tmp_path: Path) -> None:
    from instantmesh.export import texture_companions, write_textured_mesh

    vertices, faces, uvs, uv_faces, texture = _textured()
    path = tmp_path / "t.obj"
    tmp = [str(tmp_path / ".t.partial.obj"), str(tmp_path / ".t.partial.mtl"), str(tmp_path / ".t.partial.png")]
    write_textured_mesh(
        tmp[0], "obj", vertices, faces, uvs, uv_faces, texture, mtl_path=tmp[1], texture_path=tmp[2], reference_stem="t"
    )
    for written, final in zip(tmp, [str(path), *texture_companions(str(path), "obj")], strict=False):
        Path(written).rename(final)
    lines = path.read_text().splitlines()
    v = np.array([line.split()[1:] for line in lines if line.startswith("v ")], dtype=np.float32)
    vt = np.array([line.split()[1:] for line in lines if line.startswith("vt ")], dtype=np.float32)
    corners = (
        np.array([[c.split("/") for c in line.split()[1:]] for line in lines if line.startswith("f ")], dtype=np.int64)
        - 1
    )
    expected_v, expected_f = orient(vertices, faces, "instantmesh")
    np.testing.assert_allclose(v[corners[..., 0]], expected_v[expected_f], atol=1e-6)
    np.testing.assert_allclose(vt[corners[..., 1]], uvs[uv_faces[:, ::-1]], atol=1e-6)
    assert "map_Kd t.png" in (tmp_path / "t.mtl").read_text()
    loaded = trimesh.load(path, force="mesh", process=False)
    np.testing.assert_array_equal(np.asarray(loaded.visual.material.image), texture)


def test_textured_glb_splits_seam_vertices_and_keeps_uvs(tmp_path: Path) -> None:
    from instantmesh.export import write_textured_mesh

    vertices, faces, uvs, uv_faces, texture = _textured()
    uv_faces = np.arange(faces.size).reshape(faces.shape)  # every corner its own uv: maximal splitting
    uvs = np.random.default_rng(1).random((faces.size, 2)).astype(np.float32)
    write_textured_mesh(str(tmp_path / "t.glb"), "glb", vertices, faces, uvs, uv_faces, texture, "raw")
    loaded = trimesh.load(tmp_path / "t.glb", force="mesh", process=False)
    np.testing.assert_allclose(loaded.vertices[loaded.faces], vertices[faces], atol=1e-6)
    np.testing.assert_allclose(loaded.visual.uv[loaded.faces], uvs[uv_faces], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(loaded.visual.material.baseColorTexture.convert("RGB")), texture)
    with pytest.raises(ValueError, match="obj or glb"):
        write_textured_mesh(str(tmp_path / "t.ply"), "ply", vertices, faces, uvs, uv_faces, texture)
