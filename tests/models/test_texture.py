"""Texture maps: the torch UV rasteriser, dilation, baking on the tiny LRM, and the missing-xatlas refusal."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from instantmesh import texture  # noqa: E402
from instantmesh.texture import TexturedMesh, TextureUnavailable, dilate, rasterize_uv  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream]

QUAD_UVS = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]])
QUAD_FACES = torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_a_quad_covers_exactly_the_texel_centres_inside_it() -> None:
    """uv [0.25, 0.75]^2 at 8x8: texel centres (j + 0.5) / 8 inside are columns and rows 2..5; each
    covered texel belongs to one of the two triangles (centres on the diagonal to the lower face id)."""
    raster = rasterize_uv(QUAD_UVS, QUAD_FACES, 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = True
    assert torch.equal(raster.mask, expected)
    assert set(raster.face[expected].tolist()) == {0, 1}
    assert bool((raster.face[~expected] == -1).all()) and bool((raster.bary[~expected] == 0).all())
    rows, cols = torch.nonzero(expected, as_tuple=True)
    on_diagonal = (cols - 2) == (5 - rows)
    assert bool((raster.face[rows[on_diagonal], cols[on_diagonal]] == 0).all())


def test_interpolated_positions_are_linear_in_uv() -> None:
    """Positions equal to the UVs (plus a linear z) come back as the texel centres' own u, v: row 0 is v = 1."""
    positions = torch.cat([QUAD_UVS, (2 * QUAD_UVS[:, :1] - QUAD_UVS[:, 1:])], dim=1)
    raster = rasterize_uv(QUAD_UVS, QUAD_FACES, 8)
    points = raster.interpolate(positions, QUAD_FACES)
    rows, cols = torch.nonzero(raster.mask, as_tuple=True)
    u = (cols.float() + 0.5) / 8
    v = 1.0 - (rows.float() + 0.5) / 8
    torch.testing.assert_close(points, torch.stack([u, v, 2 * u - v], dim=1), atol=1e-6, rtol=0)
    assert bool((raster.bary[raster.mask] >= -1e-6).all())
    torch.testing.assert_close(raster.bary[raster.mask].sum(-1), torch.ones(16), atol=1e-6, rtol=0)


def test_overlaps_go_to_the_deepest_cover_and_degenerate_or_outside_faces_are_skipped() -> None:
    uvs = torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.4, 0.4], [0.6, 0.4], [0.4, 0.6], [2.0, 2.0], [3.0, 2.0], [2.0, 3.0]]
    )
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [0, 0, 1], [6, 7, 8]])
    raster = rasterize_uv(uvs, faces, 16)
    # texel (row 8, col 7): centre u = 0.46875, v = 0.46875, deep inside the small face 1, on the big one's edge
    assert raster.face[8, 7].item() == 1
    assert set(raster.face[raster.mask].tolist()) == {0, 1}


def test_dilation_grows_the_border_with_neighbour_means() -> None:
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[2:4, 2:4] = True
    image = torch.zeros(6, 6, 3)
    image[2:4, 2:4] = torch.tensor([0.2, 0.4, 0.6])
    grown, grown_mask = dilate(image, mask, texels=1)
    assert int(grown_mask.sum()) == 16 and bool(grown_mask[1:5, 1:5].all())
    torch.testing.assert_close(grown[1:5, 1:5], torch.tensor([0.2, 0.4, 0.6]).expand(4, 4, 3))
    assert bool((grown[0] == 0).all())
    torch.testing.assert_close(grown[mask], image[mask])


def test_the_rasteriser_is_fast_on_a_large_layout() -> None:
    """A 100k-triangle layout on a 1024^2 texture rasterises in well under the few seconds budgeted."""
    import time

    n = 224  # 2 * 224^2 = 100,352 triangles tiling [0, 1]^2
    grid = torch.stack(
        torch.meshgrid(torch.linspace(0, 1, n + 1), torch.linspace(0, 1, n + 1), indexing="xy"), -1
    ).reshape(-1, 2)
    idx = torch.arange((n + 1) * (n + 1)).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1), idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    faces = torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, c], 1)])
    start = time.perf_counter()
    raster = rasterize_uv(grid, faces, 1024)
    elapsed = time.perf_counter() - start
    assert bool(raster.mask.all()), "a tiling of the unit square covers every texel centre"
    assert elapsed < 5.0


def test_missing_xatlas_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xatlas", None)  # makes `import xatlas` raise ImportError
    with pytest.raises(TextureUnavailable, match="'xatlas'"):
        texture.load_xatlas()
    assert not texture.texture_maps_available()


@pytest.fixture(scope="module")
def tiny_lrm(tiny_cache: Path):
    from instantmesh.cameras import zero123plus_input_cameras
    from instantmesh.lrm.config import load_config
    from instantmesh.lrm.model import load_instantmesh_lrm
    from instantmesh.tiny import ensure_tiny_weights

    tiny = ensure_tiny_weights()
    config = load_config(tiny.config)
    lrm = load_instantmesh_lrm(config, tiny.paths.lrm)
    lrm.init_flexicubes_geometry("cpu")
    # Grey views give the random-weight model a fairly smooth surface (~37k faces): xatlas takes ~3 s on it.
    planes = lrm.forward_planes(torch.full((1, 6, 3, 64, 64), 0.5), zero123plus_input_cameras(batch_size=1, radius=4.0))
    return lrm, planes, config.infer.texture_resolution


def test_extract_mesh_with_a_texture_map_on_the_tiny_preset(tiny_lrm) -> None:
    lrm, planes, resolution = tiny_lrm
    vertices, faces, colors = lrm.extract_mesh(planes)
    textured = lrm.extract_mesh(planes, use_texture_map=True, texture_resolution=resolution)
    assert isinstance(textured, TexturedMesh) and resolution == 64
    np.testing.assert_array_equal(textured.vertices, vertices)
    np.testing.assert_array_equal(textured.faces, faces)
    assert textured.texture.shape == (64, 64, 3) and textured.texture.dtype == np.uint8
    assert textured.uv_faces.shape == faces.shape and textured.uvs.min() >= 0 and textured.uvs.max() <= 1
    split_v, split_f = textured.split_vertices()
    np.testing.assert_array_equal(split_v[split_f], vertices[faces])
    # A texel's colour is the colour field at its surface point: compare with the vertex colours where
    # a texel centre sits at a UV vertex's texel, within the field's variation over one texel.
    corner = textured.uvs[textured.uv_faces[:, 0]]
    rows = np.clip(((1 - corner[:, 1]) * 64).astype(int), 0, 63)
    cols = np.clip((corner[:, 0] * 64).astype(int), 0, 63)
    diff = np.abs(textured.texture[rows, cols].astype(int) - colors[faces[:, 0]].astype(int))
    assert np.median(diff) <= 8


def test_extract_mesh_refuses_texture_maps_without_xatlas(tiny_lrm, monkeypatch: pytest.MonkeyPatch) -> None:
    lrm, planes, _ = tiny_lrm
    monkeypatch.setitem(sys.modules, "xatlas", None)
    with pytest.raises(TextureUnavailable, match="pip install"):
        lrm.extract_mesh(planes, use_texture_map=True)


def test_backend_refuses_texture_maps_without_xatlas(monkeypatch: pytest.MonkeyPatch) -> None:
    from rpcworker.backends.instantmesh import _require_texture_support
    from rpcworker.wire.errors import InvalidParams

    monkeypatch.setitem(sys.modules, "xatlas", None)
    with pytest.raises(InvalidParams, match="xatlas") as info:
        _require_texture_support()
    assert info.value.data == {"field": "texture_map", "missing": "xatlas"}
