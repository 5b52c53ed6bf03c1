"""Unit tests of the triplane synthesizer: plane sampling layout and the empty-surface SDF fix-up."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from instantmesh.lrm.synthesizer import (  # noqa: E402
    TriplaneSynthesizer,
    center_and_boundary_indices,
    fix_empty_surfaces,
    sample_from_planes,
)

pytestmark = [pytest.mark.models, pytest.mark.upstream]


def _grid(res: int) -> torch.Tensor:
    axis = torch.linspace(-1.0, 1.0, res + 1)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


@pytest.mark.needs("torch", (2, 2), "the test uses torch.unravel_index (torch 2.2+)")
def test_center_and_boundary_indices() -> None:
    res = 6
    center, boundary = center_and_boundary_indices(res)
    side = res + 1
    c = res // 2 + 1
    assert center.tolist() == [(c * side + c) * side + c]
    inner = side - 4
    assert boundary.numel() == side**3 - inner**3
    coords = torch.stack(torch.unravel_index(boundary, (side, side, side)), dim=-1)
    on_shell = ((coords < 2) | (coords >= side - 2)).any(dim=-1)
    assert bool(on_shell.all())


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_fix_up_plants_a_surface_in_an_empty_sample(sign: float) -> None:
    res = 6
    torch.manual_seed(0)
    n = (res + 1) ** 3
    empty = sign * (torch.rand(1, n, 1) + 0.5)
    crossing = torch.randn(1, n, 1)
    sdf = torch.cat([empty, crossing], dim=0).requires_grad_(True)

    fixed, was_empty = fix_empty_surfaces(sdf, res)
    assert was_empty.tolist() == [True, False]
    center, boundary = center_and_boundary_indices(res)
    lo, hi = sdf.min().item(), sdf.max().item()
    assert torch.allclose(fixed[0, center, 0], torch.tensor(1.0 - lo))
    assert torch.allclose(fixed[0, boundary, 0], torch.full((boundary.numel(),), -1.0 - hi))
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[center] = False
    untouched[boundary] = False
    assert torch.equal(fixed[0, untouched], sdf[0, untouched])
    assert torch.equal(fixed[1], sdf[1])
    # the planted value is positive at the centre and negative on the shell: a surface exists
    assert fixed[0, center, 0].item() > 0 and bool((fixed[0, boundary, 0] < 0).all())
    fixed.sum().backward()
    assert bool((sdf.grad[0] == 0).all()), "a fixed sample must be detached"
    assert bool((sdf.grad[1] == 1).all())


def test_fix_up_ignores_samples_with_a_surface() -> None:
    res = 4
    sdf = torch.randn(2, (res + 1) ** 3, 1)
    fixed, was_empty = fix_empty_surfaces(sdf, res)
    assert fixed is sdf
    assert not bool(was_empty.any())


def test_fix_up_inside_get_sdf_deformation_prediction() -> None:
    torch.manual_seed(0)
    res = 4
    synth = TriplaneSynthesizer(triplane_dim=4, samples_per_ray=8)
    with torch.no_grad():
        synth.decoder.net_sdf[-1].bias.fill_(100.0)
    planes = torch.randn(1, 3, 4, 8, 8) * 0.1
    grid = _grid(res)
    side = res + 1
    ijk = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    offsets = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]])
    corners = ijk[:, None, :] + offsets[None]
    cubes = (corners[..., 0] * side + corners[..., 1]) * side + corners[..., 2]
    with torch.no_grad():
        sdf, deformation, weight = synth.get_sdf_deformation_prediction(planes, grid, cubes, res)
    assert sdf.shape == (1, side**3, 1) and deformation.shape == (1, side**3, 3) and weight.shape == (1, res**3, 21)
    assert bool((sdf > 0).any()) and bool((sdf < 0).any())
    assert float(deformation.abs().max()) <= 1.0 / (res * 4)


def test_chunked_decoding_equals_one_chunk() -> None:
    """Chunks of points and cubes (the bounded-memory path) give what one chunk of everything gives."""
    torch.manual_seed(1)
    res = 4
    side = res + 1
    grid = _grid(res)
    ijk = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    offsets = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]])
    cubes = ((ijk[:, None, :] + offsets[None]) @ torch.tensor([side * side, side, 1])).long()
    planes = torch.randn(1, 3, 4, 8, 8)
    whole = TriplaneSynthesizer(triplane_dim=4, samples_per_ray=8, weight_chunk_size=10**6, point_chunk_size=10**6)
    chunked = TriplaneSynthesizer(triplane_dim=4, samples_per_ray=8, weight_chunk_size=7, point_chunk_size=13)
    chunked.load_state_dict(whole.state_dict())
    with torch.no_grad():
        for ours, theirs in zip(
            chunked.get_sdf_deformation_prediction(planes, grid, cubes, res),
            whole.get_sdf_deformation_prediction(planes, grid, cubes, res),
            strict=True,
        ):
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
        points = torch.rand(1, 50, 3) * 2 - 1
        torch.testing.assert_close(
            chunked.get_texture_prediction(planes, points), whole.get_texture_prediction(planes, points)
        )


def test_sample_from_planes_layout() -> None:
    # plane p holds the constant value p+1 in channel 0, and the plane's x coordinate in channel 1
    res = 8
    planes = torch.zeros(1, 3, 2, res, res)
    xs = (torch.arange(res) + 0.5) / res * 2 - 1
    for p in range(3):
        planes[0, p, 0] = p + 1
        planes[0, p, 1] = xs.view(1, res)
    point = torch.tensor([[[xs[1].item(), xs[3].item(), xs[6].item()]]])
    features = sample_from_planes(planes, point)
    assert features.shape == (1, 1, 6)
    assert features[0, 0, 0::2].tolist() == [1.0, 2.0, 3.0]
    # grid_sample's x of planes xy, xz, zy is the world x, x, z
    assert torch.allclose(features[0, 0, 1::2], torch.stack([xs[1], xs[1], xs[6]]))
    outside = sample_from_planes(planes, torch.full((1, 1, 3), 3.0))
    assert bool((outside == 0).all())
