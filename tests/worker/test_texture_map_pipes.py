"""texture_map=true over real pipes on the mock worker: the wire, the companion files and their safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpcworker.wire.errors import InvalidParams
from rpcworker.wire.messages import GenerateViewsParams, ImagePath, ReconstructParams, ViewsHandle

pytestmark = pytest.mark.pipe

trimesh = pytest.importorskip("trimesh")


def _views(client, object_png: Path) -> ViewsHandle:
    return ViewsHandle(
        client.generate_views(GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=1)).handle
    )


def test_capability_is_listed_unless_texture_maps_are_unavailable(mock_client) -> None:
    assert "texture_map" in mock_client().info.capabilities
    assert "texture_map" not in mock_client("no_texture").info.capabilities


def test_textured_obj_writes_mtl_and_png_beside_it(mock_client, object_png: Path, tmp_path: Path) -> None:
    client = mock_client("texture_size=32")
    mesh = client.reconstruct(
        ReconstructParams(_views(client, object_png), str(tmp_path / "out" / "cup.obj"), texture_map=True)
    )
    out = tmp_path / "out"
    assert mesh.extra_paths == [str(out / "cup.mtl"), str(out / "cup.png")]
    assert sorted(p.name for p in out.iterdir()) == ["cup.mtl", "cup.obj", "cup.png"]
    lines = (out / "cup.obj").read_text().splitlines()
    assert lines[0] == "mtllib cup.mtl" and "usemtl material_0" in lines
    assert sum(line.startswith("f ") for line in lines) == mesh.num_faces
    assert sum(line.startswith("v ") for line in lines) == mesh.num_vertices
    assert all("/" in line for line in lines if line.startswith("f "))
    assert "map_Kd cup.png" in (out / "cup.mtl").read_text().splitlines()
    loaded = trimesh.load(out / "cup.obj", force="mesh", process=False)
    assert loaded.visual.kind == "texture" and loaded.visual.material.image.size == (32, 32)
    assert loaded.bounds.ravel().tolist() == pytest.approx(sum(mesh.bounds, []), abs=1e-5)


def test_textured_glb_embeds_the_texture_in_one_file(mock_client, object_png: Path, tmp_path: Path) -> None:
    client = mock_client("texture_size=48")
    mesh = client.reconstruct(
        ReconstructParams(_views(client, object_png), str(tmp_path / "cup.glb"), texture_map=True)
    )
    assert mesh.extra_paths == [] and [p.name for p in tmp_path.iterdir() if p.suffix != ".png"] == ["cup.glb"]
    loaded = trimesh.load(tmp_path / "cup.glb", force="mesh", process=False)
    assert len(loaded.faces) == mesh.num_faces
    assert loaded.visual.material.baseColorTexture.size == (48, 48)
    assert loaded.bounds.ravel().tolist() == pytest.approx(sum(mesh.bounds, []), abs=1e-5)


def test_ply_with_a_texture_map_is_refused_before_any_work(mock_client, object_png: Path, tmp_path: Path) -> None:
    client = mock_client()
    with pytest.raises(InvalidParams, match="texture_map needs obj or glb") as info:
        client.reconstruct(ReconstructParams(_views(client, object_png), str(tmp_path / "m.ply"), texture_map=True))
    assert info.value.data["field"] == "texture_map"
    assert [p.name for p in tmp_path.iterdir()] == ["object.png"]


def test_a_worker_without_texture_support_refuses_clearly(mock_client, object_png: Path, tmp_path: Path) -> None:
    client = mock_client("no_texture")
    with pytest.raises(InvalidParams, match="xatlas"):
        client.reconstruct(ReconstructParams(_views(client, object_png), str(tmp_path / "m.obj"), texture_map=True))
    assert not (tmp_path / "m.obj").exists()
    client.reconstruct(ReconstructParams(_views(client, object_png), str(tmp_path / "m.obj")))
