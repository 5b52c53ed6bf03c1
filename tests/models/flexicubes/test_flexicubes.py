"""FlexiCubes grid and extraction: golden comparison with upstream, analytic sphere, random fields."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from instantmesh.flexicubes import FlexiCubesGeometry  # noqa: E402
from instantmesh.flexicubes import extract as extract_module  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream]

GOLDEN = Path(os.environ.get("INSTANTMESH_GOLDEN", "/work/shared/golden")) / "tiny_lrm" / "outputs.npz"
needs_golden = pytest.mark.skipif(not GOLDEN.is_file(), reason=f"golden data not found at {GOLDEN}")
VERTEX_ATOL = 1e-4


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


def edge_use(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of each undirected edge and of each directed edge."""
    directed = torch.cat((faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]))
    _, undirected_counts = torch.unique(torch.sort(directed, dim=1).values, dim=0, return_counts=True)
    _, directed_counts = torch.unique(directed, dim=0, return_counts=True)
    return undirected_counts, directed_counts


def assert_closed_oriented_manifold(faces: torch.Tensor) -> None:
    undirected, directed = edge_use(faces)
    assert (undirected == 2).all(), f"{int((undirected != 2).sum())} edges not shared by exactly two faces"
    assert (directed == 1).all(), "neighbouring faces disagree on winding"


def signed_volume(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    a, b, c = (vertices[faces[:, i]].double() for i in range(3))
    return float((a * torch.cross(b, c, dim=-1)).sum() / 6)


@needs_golden
def test_grid_equals_golden(golden):
    geo = FlexiCubesGeometry(32, 2.1, "cpu")
    assert geo.verts.dtype == torch.float32 and geo.indices.dtype == torch.int64
    assert torch.equal(geo.verts, torch.from_numpy(golden["grid_verts"]))
    assert torch.equal(geo.indices, torch.from_numpy(golden["grid_cube_indices"]))


@needs_golden
def test_extract_matches_golden(golden):
    geo = FlexiCubesGeometry(32, 2.1, "cpu")
    vertices, faces = geo.extract(
        torch.from_numpy(golden["sdf"][0, :, 0]),
        torch.from_numpy(golden["deformation"][0]),
        torch.from_numpy(golden["flexicubes_weight"][0]),
    )
    ref_v, ref_f = golden["vertices"], golden["faces"]
    assert vertices.dtype == torch.float32 and faces.dtype == torch.int64
    assert vertices.shape == ref_v.shape and faces.shape == ref_f.shape
    err = float(np.abs(vertices.numpy() - ref_v).max())
    print(f"[golden] flexicubes vertices {vertices.shape[0]} faces {faces.shape[0]} max abs err {err:.3e}")
    assert err <= VERTEX_ATOL
    # Same order as upstream: faces index the same vertices, so they must be identical.
    assert np.array_equal(faces.numpy(), ref_f)


@needs_golden
def test_golden_mesh_is_oriented_manifold(golden):
    """The random golden surface reaches the grid boundary; inside the grid every edge is manifold."""
    undirected, directed = edge_use(torch.from_numpy(golden["faces"]))
    assert undirected.max() == 2
    assert (directed == 1).all()


def sphere_mesh(res: int, radius: float) -> tuple[FlexiCubesGeometry, torch.Tensor, torch.Tensor]:
    geo = FlexiCubesGeometry(res, 2.1, "cpu")
    sdf = geo.verts.norm(dim=-1) - radius
    vertices, faces = geo.extract(sdf, torch.zeros_like(geo.verts), torch.zeros(res**3, 21))
    return geo, vertices, faces


def test_sphere_is_closed_outward_and_close():
    radius = 0.6
    _, vertices, faces = sphere_mesh(16, radius)
    assert faces.shape[0] > 0
    assert_closed_oriented_manifold(faces)
    assert vertices.shape[0] - faces.shape[0] * 3 // 2 + faces.shape[0] == 2, "Euler characteristic of a sphere"
    assert torch.unique(faces).numel() == vertices.shape[0], "no unreferenced vertices"
    cell = 2.1 / 16
    assert float((vertices.norm(dim=-1) - radius).abs().max()) < 0.1 * cell
    volume = signed_volume(vertices, faces)
    assert 0.9 * (4 / 3) * np.pi * radius**3 < volume < 1.02 * (4 / 3) * np.pi * radius**3, volume
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    normals = torch.cross(b - a, c - a, dim=-1)
    assert ((normals * (a + b + c)).sum(-1) > 0).all(), "every face points away from the centre"


def test_deformation_moves_vertices_and_weights_change_geometry_not_topology():
    res, radius = 8, 0.6
    geo, vertices, faces = sphere_mesh(res, radius)
    sdf = geo.verts.norm(dim=-1) - radius
    shift = torch.tensor([0.01, -0.02, 0.005])
    moved_v, moved_f = geo.extract(sdf, shift.expand_as(geo.verts), torch.zeros(res**3, 21))
    assert torch.equal(moved_f, faces)
    torch.testing.assert_close(moved_v, vertices + shift, atol=1e-6, rtol=0)
    weights = torch.randn(res**3, 21, generator=torch.Generator().manual_seed(3))
    weighted_v, weighted_f = geo.extract(sdf, torch.zeros_like(geo.verts), weights)
    assert weighted_v.shape == vertices.shape
    assert not torch.allclose(weighted_v, vertices)
    assert_closed_oriented_manifold(weighted_f)


@pytest.mark.parametrize("seed", range(4))
def test_random_field_is_closed_manifold(seed):
    """White-noise sdf hits every configuration, including the ambiguous ones the check table fixes."""
    res = 10
    g = torch.Generator().manual_seed(seed)
    geo = FlexiCubesGeometry(res, 2.0, "cpu")
    sdf = torch.randn(res + 1, res + 1, res + 1, generator=g)
    sdf[[0, -1]] = 1.0
    sdf[:, [0, -1]] = 1.0
    sdf[:, :, [0, -1]] = 1.0
    weights = torch.randn(res**3, 21, generator=g)
    vertices, faces = geo.extract(sdf.reshape(-1), torch.zeros_like(geo.verts), weights)
    assert faces.shape[0] > 0
    assert_closed_oriented_manifold(faces)
    assert torch.unique(faces).numel() == vertices.shape[0]


def test_ambiguity_fix_is_needed(monkeypatch):
    """Without swapping the problem configurations the same fields give non-manifold edges."""
    res = 10
    g = torch.Generator().manual_seed(0)
    geo = FlexiCubesGeometry(res, 2.0, "cpu")
    sdf = torch.randn(res + 1, res + 1, res + 1, generator=g)
    sdf[[0, -1]] = 1.0
    sdf[:, [0, -1]] = 1.0
    sdf[:, :, [0, -1]] = 1.0
    monkeypatch.setattr(extract_module, "_resolve_ambiguous_cases", lambda case_ids, *args: case_ids)
    _, faces = geo.extract(sdf.reshape(-1), torch.zeros_like(geo.verts), torch.zeros(res**3, 21))
    undirected, _ = edge_use(faces)
    assert (undirected > 2).any()


def test_no_surface_gives_empty_mesh():
    geo = FlexiCubesGeometry(4, 2.0, "cpu")
    for value in (1.0, -1.0):
        vertices, faces = geo.extract(torch.full((125,), value), torch.zeros(125, 3), torch.zeros(64, 21))
        assert vertices.shape == (0, 3) and faces.shape == (0, 3)
        assert faces.dtype == torch.int64
