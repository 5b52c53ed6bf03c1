"""The FlexiCubes grid used by the InstantMesh LRM, and its mesh extraction entry point."""

from __future__ import annotations

import torch

from .extract import flexicubes_extract
from .tables import CUBE_CORNERS

# InstantMesh narrows the FlexiCubes weight ranges with this scale.
WEIGHT_SCALE = 0.5


def build_grid(grid_res: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices [(res+1)^3, 3] in [-0.5, 0.5] and cube corners [res^3, 8].

    Vertex ``(i, j, k)`` has row ``(i * (res+1) + j) * (res+1) + k``; coordinates are rounded to 1e-5
    so they equal the reference grid bit for bit.
    """
    ticks = torch.arange(grid_res + 1, dtype=torch.float32, device=device) / grid_res
    ticks = torch.round(ticks * 10**5) / 10**5 - 0.5
    verts = torch.stack(torch.meshgrid(ticks, ticks, ticks, indexing="ij"), dim=-1).reshape(-1, 3)
    n = grid_res + 1
    axis = torch.arange(grid_res, device=device)
    i, j, k = torch.meshgrid(axis, axis, axis, indexing="ij")
    base = ((i * n + j) * n + k).reshape(-1, 1)
    corners = torch.as_tensor(CUBE_CORNERS, device=device)
    offsets = (corners[:, 0] * n + corners[:, 1]) * n + corners[:, 2]
    return verts, base + offsets.unsqueeze(0)


class FlexiCubesGeometry:
    """Regular FlexiCubes grid scaled to ``[-scale/2, scale/2]^3`` with per-vertex deformation."""

    def __init__(self, grid_res: int, scale: float, device: torch.device | str = "cpu") -> None:
        self.grid_res = grid_res
        self.scale = scale
        self.device = torch.device(device)
        verts, self.indices = build_grid(grid_res, self.device)
        self.verts = verts * scale

    def extract(
        self, sdf: torch.Tensor, deformation: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mesh of the zero level set of ``sdf`` [N] on the grid moved by ``deformation`` [N, 3].

        ``weight`` [res^3, 21] holds the raw FlexiCubes weights: beta (12 per cube edge), alpha
        (8 per corner), gamma (1 per cube), in that order. Returns float vertices [V, 3] and int64
        faces [F, 3]. Extraction runs in float32 whatever the predictions' dtype: the crossings are
        interpolations that half precision would visibly move.
        """
        sdf, deformation, weight = sdf.float(), deformation.float(), weight.float()
        v_deformed = self.verts + deformation
        return flexicubes_extract(
            v_deformed,
            sdf,
            self.indices,
            self.grid_res,
            beta=weight[:, :12],
            alpha=weight[:, 12:20],
            gamma=weight[:, 20],
            weight_scale=WEIGHT_SCALE,
        )
