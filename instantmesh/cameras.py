"""Input cameras of the six Zero123++ v1.2 views, in the 16-number layout the LRM is conditioned on."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

ZERO123PLUS_AZIMUTHS = (30.0, 90.0, 150.0, 210.0, 270.0, 330.0)
ZERO123PLUS_ELEVATIONS = (20.0, -10.0, 20.0, -10.0, 20.0, -10.0)
ZERO123PLUS_CAMERA_RADIUS = 4.0
"""Distance of the six view cameras from the object's centre, in the LRM's world units."""
ZERO123PLUS_FOV_DEG = 30.0
"""Field of view of the six view cameras (and of the LRM's FlexiCubes geometry), in degrees."""


def look_at_origin_c2w(positions: torch.Tensor) -> torch.Tensor:
    """OpenGL-style camera-to-world matrices [M,4,4] for cameras at `positions` [M,3] looking at the origin.

    The camera's +z points away from the target (it looks down -z), world up is +z, x = up × z, y = z × x.
    """
    positions = positions.float()
    up = torch.tensor([0.0, 0.0, 1.0]).expand_as(positions)
    z_axis = F.normalize(positions, dim=-1)
    x_axis = F.normalize(torch.linalg.cross(up, z_axis, dim=-1), dim=-1)
    y_axis = F.normalize(torch.linalg.cross(z_axis, x_axis, dim=-1), dim=-1)
    c2w = torch.zeros(positions.shape[0], 4, 4)
    c2w[:, :3, 0] = x_axis
    c2w[:, :3, 1] = y_axis
    c2w[:, :3, 2] = z_axis
    c2w[:, :3, 3] = positions
    c2w[:, 3, 3] = 1.0
    return c2w


def spherical_positions(azimuths_deg: Sequence[float], elevations_deg: Sequence[float], radius: float) -> torch.Tensor:
    """Points on a sphere around the origin (z up, azimuth measured from +x towards +y), float32 [M,3]."""
    azimuths = np.deg2rad(np.asarray(azimuths_deg, dtype=np.float64))
    elevations = np.deg2rad(np.asarray(elevations_deg, dtype=np.float64))
    xyz = np.stack(
        [
            radius * np.cos(elevations) * np.cos(azimuths),
            radius * np.cos(elevations) * np.sin(azimuths),
            radius * np.sin(elevations),
        ],
        axis=-1,
    )
    return torch.from_numpy(xyz).float()


def normalized_focal(fov_deg: float) -> float:
    """Focal length in units of the image size for a field of view in degrees."""
    return 0.5 / math.tan(math.radians(fov_deg) * 0.5)


def zero123plus_input_cameras(
    batch_size: int = 1, radius: float = ZERO123PLUS_CAMERA_RADIUS, fov_deg: float = ZERO123PLUS_FOV_DEG
) -> torch.Tensor:
    """Cameras [B,6,16]: the first 12 numbers of each flattened 4×4 c2w, then fx, fy, cx, cy (normalised)."""
    c2w = look_at_origin_c2w(spherical_positions(ZERO123PLUS_AZIMUTHS, ZERO123PLUS_ELEVATIONS, radius))
    focal = normalized_focal(fov_deg)
    intrinsics = torch.tensor([focal, focal, 0.5, 0.5], dtype=torch.float32).expand(c2w.shape[0], 4)
    cameras = torch.cat([c2w.flatten(1)[:, :12], intrinsics], dim=-1)
    return cameras.unsqueeze(0).repeat(batch_size, 1, 1)
