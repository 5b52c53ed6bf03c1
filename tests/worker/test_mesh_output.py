"""Mesh outputs (rpcworker/mesh_output.py): every rule checked before any work, and the files written as a set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instantmesh.export import mesh_bounds
from rpcworker.backends.base import MeshData
from rpcworker.mesh_output import plan_mesh_outputs, write_mesh_outputs
from rpcworker.outputs import OutputPolicy
from rpcworker.wire.errors import InternalError, InvalidParams
from rpcworker.wire.messages import ReconstructParams, ViewsHandle


def params(path: Path, **options: object) -> ReconstructParams:
    return ReconstructParams(ViewsHandle("h"), str(path), **options)  # type: ignore[arg-type]


def tetrahedron(**texture: object) -> MeshData:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)
    return MeshData(vertices, faces, np.full((4, 3), 200, np.uint8), **texture)  # type: ignore[arg-type]


def test_the_format_comes_from_the_extension_unless_it_is_given(tmp_path: Path) -> None:
    policy = OutputPolicy(str(tmp_path))
    assert plan_mesh_outputs(policy, params(tmp_path / "m.OBJ")).format == "obj"
    assert plan_mesh_outputs(policy, params(tmp_path / "m.mesh", format="ply")).format == "ply"
    with pytest.raises(InvalidParams, match="cannot tell the mesh format") as unknown:
        plan_mesh_outputs(policy, params(tmp_path / "m.mesh"))
    assert unknown.value.data["field"] == "format"


def test_a_texture_map_adds_companions_beside_an_obj_only(tmp_path: Path) -> None:
    policy = OutputPolicy(str(tmp_path))
    obj = plan_mesh_outputs(policy, params(tmp_path / "m.obj", texture_map=True))
    assert obj.companions == [str(tmp_path / "m.mtl"), str(tmp_path / "m.png")]
    assert plan_mesh_outputs(policy, params(tmp_path / "m.glb", texture_map=True)).companions == []
    assert plan_mesh_outputs(policy, params(tmp_path / "m.obj")).companions == []
    with pytest.raises(InvalidParams, match="texture_map needs obj or glb"):
        plan_mesh_outputs(policy, params(tmp_path / "m.ply", texture_map=True))
    with pytest.raises(InvalidParams, match="its own texture"):
        plan_mesh_outputs(policy, params(tmp_path / "m.png", format="obj", texture_map=True))


def test_a_mesh_is_written_in_place_with_its_bounds(tmp_path: Path) -> None:
    request = params(tmp_path / "m.ply")
    bounds = write_mesh_outputs(plan_mesh_outputs(OutputPolicy(str(tmp_path)), request), tetrahedron(), request, None)
    assert bounds == mesh_bounds(tetrahedron().vertices, request.orientation)
    assert [p.name for p in tmp_path.iterdir()] == ["m.ply"]


def test_a_texture_without_uvs_writes_nothing(tmp_path: Path) -> None:
    request = params(tmp_path / "m.obj", texture_map=True)
    targets = plan_mesh_outputs(OutputPolicy(str(tmp_path)), request)
    with pytest.raises(InternalError, match="without UVs"):
        write_mesh_outputs(targets, tetrahedron(texture=Image.new("RGB", (8, 8))), request, None)
    assert list(tmp_path.iterdir()) == []
