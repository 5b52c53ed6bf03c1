"""UV texture maps for LRM meshes: xatlas unwrap, UV-space rasterisation, triplane colour at every texel.

Upstream rasterises the UV layout with nvdiffrast; this module does it in plain torch (CPU or CUDA), so a
texture map needs only the optional `xatlas` package on top of the model's own requirements.

Texture layout: texel (row i, column j) has its centre at u = (j + 0.5) / R, v = 1 - (i + 0.5) / R, so
the array is already in image order (row 0 at the top, v = 1), which is how OBJ `vt`, PNG and glTF (through
trimesh) expect it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F

from .export import split_by_uv

XATLAS_REQUIREMENT = "xatlas>=0.0.9"
TEXTURE_DILATION = 4
"""Texels the colours are grown past each chart's border, so bilinear (and mip) sampling at a seam never
reads the black background."""
CANDIDATE_BUDGET = 1 << 22
"""Texel/triangle pairs tested per rasteriser chunk (bounds memory whatever the mesh)."""
QUERY_CHUNK = 1 << 18
"""Points per colour query: the triplane features of 2^18 points are 250 MB at triplane_dim 80."""


class TextureUnavailable(ImportError):
    """Texture maps were asked for but the `xatlas` package cannot be imported."""


def load_xatlas() -> ModuleType:
    """The xatlas module, or TextureUnavailable naming the package to install."""
    try:
        return importlib.import_module("xatlas")
    except ImportError as exc:
        raise TextureUnavailable(
            "texture maps need the 'xatlas' package, which is not installed in the worker's environment "
            f"(pip install '{XATLAS_REQUIREMENT}')"
        ) from exc


def texture_maps_available() -> bool:
    try:
        load_xatlas()
    except TextureUnavailable:
        return False
    return True


@dataclass
class TexturedMesh:
    """What `InstantMeshLRM.extract_mesh(planes, use_texture_map=True)` returns.

    Positions and texture coordinates are indexed separately, as in an OBJ file: face k has corners
    `vertices[faces[k]]` and texture coordinates `uvs[uv_faces[k]]`.
    """

    vertices: np.ndarray
    """float32 [N, 3], the model's frame (the same vertices as the vertex-colour path)."""
    faces: np.ndarray
    """int64 [F, 3] into vertices."""
    uvs: np.ndarray
    """float32 [T, 2] in [0, 1], v pointing up (OBJ convention)."""
    uv_faces: np.ndarray
    """int64 [F, 3] into uvs."""
    texture: np.ndarray
    """uint8 [R, R, 3] RGB, row 0 at v = 1 (image order)."""

    def split_vertices(self) -> tuple[np.ndarray, np.ndarray]:
        """Vertices [T, 3] with one vertex per texture coordinate, and the faces into them (uv_faces).

        GLB and most engines need one index per corner; a vertex on a UV seam becomes several.
        """
        return split_by_uv(self.vertices, self.faces, self.uv_faces, len(self.uvs))


def unwrap(vertices: np.ndarray, faces: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """xatlas charts packed for a `resolution`² texture: uvs float32 [T, 2] in [0, 1] and uv_faces [F, 3].

    xatlas keeps the face order, so uv_faces[k] is faces[k]'s corners in the UV layout. Charts are kept
    `padding` texels apart so that dilation has room before it reaches a neighbouring chart.
    """
    xatlas = load_xatlas()
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(resolution)
    pack.padding = max(1, int(resolution) // 512)
    atlas.generate(pack_options=pack)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas packed the charts into {atlas.atlas_count} atlases; one texture needs one")
    _, uv_faces, uvs = atlas[0]
    return uvs.astype(np.float32), uv_faces.astype(np.int64)


@dataclass
class UVRaster:
    """Which triangle covers each texel centre (-1: none) and the centre's barycentric coordinates there."""

    face: torch.Tensor
    """int64 [R, R]."""
    bary: torch.Tensor
    """float32 [R, R, 3] (zero where face is -1)."""

    @property
    def mask(self) -> torch.Tensor:
        return self.face >= 0

    def interpolate(self, attributes: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Per-vertex `attributes` [N, C] interpolated at the covered texels: [M, C] in row-major texel order.

        `faces` [F, 3] index the attributes and must be in the same order as the faces rasterised (for
        positions: the mesh faces, whose k-th entry matches the k-th UV face).
        """
        mask = self.mask
        corners = faces[self.face[mask]]
        bary = self.bary[mask].to(attributes.dtype)
        return (attributes[corners] * bary.unsqueeze(-1)).sum(dim=1)


def rasterize_uv(uvs: torch.Tensor, uv_faces: torch.Tensor, resolution: int, eps: float = 1e-6) -> UVRaster:
    """Rasterise the UV layout onto a `resolution`² texel grid (see the module docstring for texel centres).

    Each triangle tests the texel centres in its bounding box; a centre is inside when its smallest
    barycentric coordinate is >= -eps. Where several triangles cover a centre (shared edges, overlapping
    charts) the one that covers it most deeply (largest smallest barycentric) wins, ties going to the
    lower face index, so the result is deterministic on any device. Fully vectorised in chunks of about
    CANDIDATE_BUDGET texel/triangle pairs.
    """
    device = uvs.device
    res = int(resolution)
    xy = torch.stack([uvs[:, 0] * res - 0.5, (1.0 - uvs[:, 1]) * res - 0.5], dim=-1).float()
    tri = xy[uv_faces]  # [F, 3, 2]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = _cross(b - a, c - a)
    low = tri.amin(dim=1).ceil().clamp(0, res - 1).long()
    high = tri.amax(dim=1).floor().clamp(-1, res - 1).long()
    span = (high - low + 1).clamp(min=0)
    counts = span[:, 0] * span[:, 1]
    counts = torch.where(area.abs() > 1e-12, counts, torch.zeros_like(counts))

    # Winner key: quantised depth in the high bits, (max id - face id) in the low 32, reduced by amax.
    best = torch.full((res * res,), -1, dtype=torch.int64, device=device)
    id_bits = (1 << 31) - 1
    for faces_chunk in _chunks_by_count(counts, CANDIDATE_BUDGET):
        n = counts[faces_chunk]
        face = torch.repeat_interleave(faces_chunk, n)
        if face.numel() == 0:
            continue
        start = torch.cumsum(n, 0) - n
        local = torch.arange(face.numel(), device=device) - torch.repeat_interleave(start, n)
        width = span[face, 0]
        px = low[face, 0] + local % width
        py = low[face, 1] + local // width
        bary = _barycentric(torch.stack([px, py], dim=-1).float(), a[face], b[face], c[face], area[face])
        depth = bary.amin(dim=-1)
        inside = depth >= -eps
        depth, face, texel = depth[inside], face[inside], (py * res + px)[inside]
        quantised = ((depth.clamp(-1.0, 1.0) + 1.0) * float(1 << 24)).long()
        key = (quantised << 32) | (id_bits - face)
        best.scatter_reduce_(0, texel, key, reduce="amax", include_self=True)

    covered = best >= 0
    face_of_texel = torch.where(covered, id_bits - (best & 0xFFFFFFFF), torch.full_like(best, -1))
    bary = torch.zeros(res * res, 3, dtype=torch.float32, device=device)
    texels = covered.nonzero().squeeze(1)
    if texels.numel():
        f = face_of_texel[texels]
        centres = torch.stack([texels % res, texels // res], dim=-1).float()
        bary[texels] = _barycentric(centres, a[f], b[f], c[f], area[f])
    return UVRaster(face_of_texel.view(res, res), bary.view(res, res, 3))


def dilate(
    image: torch.Tensor, mask: torch.Tensor, texels: int = TEXTURE_DILATION
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow `image` [R, R, C] past `mask` [R, R] by `texels` rings, each new texel the mean of its filled
    8-neighbours. Returns the image and the grown mask."""
    values = (image * mask.unsqueeze(-1)).permute(2, 0, 1).unsqueeze(0).float()
    filled = mask.float().view(1, 1, *mask.shape)
    for _ in range(texels):
        total = F.avg_pool2d(values, 3, stride=1, padding=1, divisor_override=1)
        count = F.avg_pool2d(filled, 3, stride=1, padding=1, divisor_override=1)
        grow = (filled == 0) & (count > 0)
        values = torch.where(grow, total / count.clamp(min=1), values)
        filled = torch.where(grow, torch.ones_like(filled), filled)
    return values[0].permute(1, 2, 0).to(image.dtype), filled[0, 0] > 0


def bake_texture(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    color_at: Callable[[torch.Tensor], torch.Tensor],
    resolution: int,
) -> TexturedMesh:
    """Unwrap the mesh, find the 3D point under every texel and colour it with `color_at` (points [M, 3]
    -> RGB [M, 3] in about [0, 1]). Texels no chart reaches stay black, as upstream leaves them."""
    device = vertices.device
    v_np = vertices.detach().float().cpu().numpy()
    f_np = faces.detach().long().cpu().numpy()
    uvs, uv_faces = unwrap(v_np, f_np, resolution)
    raster = rasterize_uv(torch.from_numpy(uvs).to(device), torch.from_numpy(uv_faces).to(device), resolution)
    points = raster.interpolate(vertices.float(), faces.long())
    rgb = torch.cat([color_at(chunk).float() for chunk in points.split(QUERY_CHUNK)]) if len(points) else points
    image = torch.zeros(resolution, resolution, 3, dtype=torch.float32, device=device)
    image[raster.mask] = rgb.clamp(0, 1)
    image, _ = dilate(image, raster.mask)
    texture = (image * 255).to(torch.uint8)
    return TexturedMesh(v_np.astype(np.float32), f_np, uvs, uv_faces, texture.cpu().numpy())


def _cross(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]


def _barycentric(
    p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, area: torch.Tensor
) -> torch.Tensor:
    """Barycentric coordinates [M, 3] of points p [M, 2] in triangles (a, b, c) of signed doubled `area`."""
    wa = _cross(b - p, c - p) / area
    wb = _cross(c - p, a - p) / area
    return torch.stack([wa, wb, 1.0 - wa - wb], dim=-1)


def _chunks_by_count(counts: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Consecutive face-index ranges whose counts sum to about `budget` (a single larger face is its own chunk)."""
    total = torch.cumsum(counts, 0).cpu()
    chunks: list[torch.Tensor] = []
    start = 0
    n = len(counts)
    while start < n:
        base = int(total[start - 1]) if start else 0
        end = int(torch.searchsorted(total, torch.tensor(base + budget), right=True))
        end = max(end, start + 1)
        chunks.append(torch.arange(start, min(end, n), device=counts.device))
        start = end
    return chunks
