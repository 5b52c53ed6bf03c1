"""Triplane field decoding: sample the three feature planes at 3D points and decode geometry and colour.

The geometry heads give, per grid vertex, an SDF value and a deformation, and per grid cube the 21
FlexiCubes weights (12 edge, 8 corner, 1 cube). The colour head gives RGB at arbitrary points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Which world axes span each plane, as (grid_sample x, grid_sample y): xy, xz and zy.
PLANE_AXES = ((0, 1), (0, 2), (2, 1))
BOX_WARP = 2.0
DEFORMATION_MULTIPLIER = 4.0
FLEXICUBES_WEIGHT_SCALE = 0.1
POINTS_PER_CHUNK = 262144
"""Points whose plane features (3 x 80 float32 each for the large model: 250 MB) are decoded at once."""
CUBES_PER_CHUNK = 32768
"""Cubes whose corner features (8 points each: 250 MB) are decoded into FlexiCubes weights at once."""


def sample_from_planes(planes: torch.Tensor, points: torch.Tensor, box_warp: float = BOX_WARP) -> torch.Tensor:
    """Bilinear features of `points` [B,M,3] on `planes` [B,3,C,H,W], concatenated per point: [B,M,3C].

    Points are in [-box_warp/2, box_warp/2]^3; outside the box the features are zero.
    """
    batch, n_planes, channels, height, width = planes.shape
    coords = points * (2.0 / box_warp)
    grid = torch.stack([coords[..., list(axes)] for axes in PLANE_AXES], dim=1)
    grid = grid.reshape(batch * n_planes, 1, -1, 2).to(planes.dtype)
    sampled = F.grid_sample(
        planes.reshape(batch * n_planes, channels, height, width),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    # [B*3, C, 1, M] -> [B, M, 3, C] -> [B, M, 3C]
    sampled = sampled.view(batch, n_planes, channels, -1).permute(0, 3, 1, 2)
    return sampled.reshape(batch, -1, n_planes * channels)


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.ReLU()]
    for _ in range(num_layers - 2):
        layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


class TriplaneDecoder(nn.Module):
    """EG3D-style small MLP heads (ReLU) on concatenated triplane features."""

    def __init__(self, n_features: int, hidden_dim: int = 64, num_layers: int = 4) -> None:
        super().__init__()
        point_dim = 3 * n_features
        self.net_sdf = _mlp(point_dim, hidden_dim, 1, num_layers)
        self.net_rgb = _mlp(point_dim, hidden_dim, 3, num_layers)
        self.net_deformation = _mlp(point_dim, hidden_dim, 3, num_layers)
        self.net_weight = _mlp(8 * point_dim, hidden_dim, 21, num_layers)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def cube_weights(
        self, planes: torch.Tensor, grid_verts: torch.Tensor, cube_indices: torch.Tensor, chunk_size: int
    ) -> torch.Tensor:
        """FlexiCubes weights [B,F,21] from the features of each cube's 8 corners, a chunk of cubes at a time.

        Each chunk samples the planes at its own corners rather than gathering from every vertex's features
        (the same values, bilinear sampling being per point): the vertex features alone are 2 GB at grid_res
        128, the gathered corners 16 GB.
        """
        outputs = []
        for corners in cube_indices.split(chunk_size):
            points = grid_verts[corners.reshape(-1)].unsqueeze(0).expand(planes.shape[0], -1, -1)
            features = sample_from_planes(planes, points)
            outputs.append(self.net_weight(features.reshape(features.shape[0], corners.shape[0], -1)))
        return torch.cat(outputs, dim=1) * FLEXICUBES_WEIGHT_SCALE

    def rgb(self, point_features: torch.Tensor) -> torch.Tensor:
        """Colour in [-0.001, 1.001] (MipNeRF's widened sigmoid)."""
        return torch.sigmoid(self.net_rgb(point_features)) * (1 + 2 * 0.001) - 0.001


def center_and_boundary_indices(
    grid_res: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the grid's near-centre vertex and of its two outermost vertex shells.

    Used to force a surface when a prediction has none; the vertex grid is (res+1)^3 in row-major order.
    """
    side = grid_res + 1
    mark = torch.zeros(side, side, side, dtype=torch.bool, device=device)
    c = grid_res // 2 + 1
    center = torch.tensor([(c * side + c) * side + c], device=device)
    mark[:2] = True
    mark[-2:] = True
    mark[:, :2] = True
    mark[:, -2:] = True
    mark[:, :, :2] = True
    mark[:, :, -2:] = True
    return center, mark.reshape(-1).nonzero().squeeze(1)


def fix_empty_surfaces(sdf: torch.Tensor, grid_res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Give samples whose SDF has one sign over the whole grid interior a surface to extract.

    For such a sample, the centre vertex is set to `1 - min(sdf)` and the two outer vertex shells to
    `-1 - max(sdf)` (min/max over the whole batch), the rest is untouched and the result is detached.
    Returns the SDF and the [B] mask of samples that were fixed; others are returned unchanged.
    """
    batch = sdf.shape[0]
    side = grid_res + 1
    interior = sdf.reshape(batch, side, side, side)[:, 1:-1, 1:-1, 1:-1].reshape(batch, -1)
    empty = ((interior > 0).sum(-1) == 0) | ((interior < 0).sum(-1) == 0)
    if not bool(empty.any()):
        return sdf, empty
    center, boundary = center_and_boundary_indices(grid_res, sdf.device)
    update = torch.zeros_like(sdf[:1])
    update[:, center] += 1.0 - sdf.min()
    update[:, boundary] += -1.0 - sdf.max()
    empty_b = empty.view(batch, 1, 1)
    new_sdf = update * empty_b.to(sdf.dtype)
    # vertices whose planted value happens to be exactly 0 keep their prediction, as upstream does
    keep = (new_sdf == 0).to(sdf.dtype)
    fixed = sdf * keep + new_sdf * (1 - keep)
    return torch.where(empty_b, fixed.detach(), sdf), empty


class TriplaneSynthesizer(nn.Module):
    """Decodes triplanes into FlexiCubes inputs (geometry) and vertex colours (texture)."""

    def __init__(
        self,
        triplane_dim: int,
        samples_per_ray: int,
        weight_chunk_size: int = CUBES_PER_CHUNK,
        point_chunk_size: int = POINTS_PER_CHUNK,
    ) -> None:
        super().__init__()
        self.triplane_dim = triplane_dim
        self.samples_per_ray = samples_per_ray
        self.weight_chunk_size = weight_chunk_size
        self.point_chunk_size = point_chunk_size
        self.decoder = TriplaneDecoder(n_features=triplane_dim)

    def get_sdf_deformation_prediction(
        self,
        planes: torch.Tensor,
        grid_verts: torch.Tensor,
        cube_indices: torch.Tensor,
        grid_res: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SDF [B,N,1], deformation [B,N,3] and FlexiCubes weights [B,F,21] on the FlexiCubes grid.

        `grid_verts` [N,3] are the undeformed vertices (already scaled), `cube_indices` [F,8] their cubes.
        The deformation is bounded to a quarter cell (`tanh / (grid_res * 4)`); an SDF without a zero
        crossing inside the grid gets upstream's fix-up (`fix_empty_surfaces`).
        """
        batch = planes.shape[0]
        grid_verts = grid_verts.to(device=planes.device, dtype=planes.dtype)
        sdf_parts, deformation_parts = [], []
        for chunk in grid_verts.split(self.point_chunk_size):
            features = sample_from_planes(planes, chunk.unsqueeze(0).expand(batch, -1, -1))
            sdf_parts.append(self.decoder.net_sdf(features))
            deformation_parts.append(self.decoder.net_deformation(features))
        sdf, deformation = torch.cat(sdf_parts, dim=1), torch.cat(deformation_parts, dim=1)
        weight = self.decoder.cube_weights(planes, grid_verts, cube_indices.to(planes.device), self.weight_chunk_size)
        deformation = torch.tanh(deformation) / (grid_res * DEFORMATION_MULTIPLIER)
        sdf, empty = fix_empty_surfaces(sdf, grid_res)
        deformation = torch.where(empty.view(-1, 1, 1), deformation.detach(), deformation)
        return sdf, deformation, weight

    def get_texture_prediction(self, planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """RGB [B,M,3] (roughly [0,1], not clamped) at `points` [B,M,3], a chunk of points at a time."""
        points = points.to(planes.dtype)
        chunks = points.split(self.point_chunk_size, dim=1)
        return torch.cat([self.decoder.rgb(sample_from_planes(planes, chunk)) for chunk in chunks], dim=1)
