"""FlexiCubes surface extraction (inference path: triangle mesh, no regularisers).

Follows "Flexible Isosurface Extraction for Gradient-Based Mesh Optimization" (Shen et al. 2023): a
Dual Marching Cubes mesh whose dual vertices are beta-weighted means of alpha-shifted edge crossings,
and whose quads are split into triangles along the diagonal with the larger gamma product.

The output order is deterministic and matches the reference ordering: dual vertices sorted by the number
of patches in their cube, then by cube, then by patch; quads sorted by grid edge, those whose edge starts
at a positive sdf first.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .tables import CUBE_EDGES, build_tables

# Quad corner orders that make triangles face the outside (positive sdf), chosen by the sign of the
# first end of the shared grid edge; the four cubes around an edge come in cube-index order.
_QUAD_ORDER_FIRST_POSITIVE = (0, 1, 3, 2)
_QUAD_ORDER_FIRST_NOT_POSITIVE = (2, 3, 1, 0)
# Two triangles per quad, cut along diagonal 0-2 or diagonal 1-3.
_SPLIT_02 = (0, 1, 2, 0, 2, 3)
_SPLIT_13 = (0, 1, 3, 3, 1, 2)


@lru_cache(maxsize=8)
def _device_tables(device: torch.device) -> dict[str, torch.Tensor]:
    t = build_tables()
    return {
        "groups": torch.as_tensor(t.groups, device=device),
        "num_groups": torch.as_tensor(t.num_groups, device=device),
        "check": torch.as_tensor(t.check, device=device),
        "edges": torch.as_tensor(CUBE_EDGES, device=device),
        "bits": torch.pow(2, torch.arange(8, device=device)),
    }


def normalize_weights(
    beta: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor, weight_scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map raw network weights to positive ranges: beta, alpha in 1 ± scale, gamma in (0.5 ± scale/2)."""
    beta = torch.tanh(beta) * weight_scale + 1
    alpha = torch.tanh(alpha) * weight_scale + 1
    gamma = torch.sigmoid(gamma) * weight_scale + (1 - weight_scale) / 2
    return beta, alpha, gamma


def _resolve_ambiguous_cases(
    case_ids: torch.Tensor, surf_cube_ids: torch.Tensor, res: int, check: torch.Tensor
) -> torch.Tensor:
    """Swap a problem configuration to its complement's patches when the neighbour across its
    single-patch ambiguous face is a problem configuration too (both sides then split the face)."""
    rows = check[case_ids]
    is_problem = rows[:, 0] == 1
    if not bool(is_problem.any()):
        return case_ids
    flag = torch.zeros(res**3, dtype=torch.bool, device=case_ids.device)
    flag[surf_cube_ids[is_problem]] = True
    cube = surf_cube_ids[is_problem]
    coords = torch.stack((cube // (res * res), (cube // res) % res, cube % res), dim=-1)
    adj = coords + rows[is_problem, 1:4]
    inside = ((adj >= 0) & (adj < res)).all(dim=-1)
    adj_id = (adj[:, 0] * res + adj[:, 1]) * res + adj[:, 2]
    swap = inside & flag[adj_id.clamp(0, res**3 - 1)]
    positions = torch.nonzero(is_problem).squeeze(-1)[swap]
    case_ids = case_ids.clone()
    case_ids[positions] = rows[is_problem, 4][swap]
    return case_ids


def _crossings(x0: torch.Tensor, x1: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """Zero of the linear function taking w0 at x0 and w1 at x1."""
    return (x0 * w1 - x1 * w0) / (w1 - w0)


def flexicubes_extract(
    x: torch.Tensor,
    sdf: torch.Tensor,
    cubes: torch.Tensor,
    res: int,
    beta: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    weight_scale: float = 0.99,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Extract a triangle mesh from a (deformed) cubic grid.

    Args:
        x: [N, 3] grid vertex positions. sdf: [N]; negative is inside.
        cubes: [res**3, 8] corner vertex ids, cube ``(i, j, k)`` at row ``(i * res + j) * res + k``.
        beta: [res**3, 12], alpha: [res**3, 8], gamma: [res**3]: raw (pre-activation) weights.
    Returns:
        vertices [V, 3] (dtype of ``x``) and faces [F, 3] int64, wound to face positive sdf.

    Each stage is its own function, so its intermediates (per surface cube and edge: hundreds of MB on
    a noisy surface at grid 128) are freed before the next stage allocates its own.
    """
    device = x.device
    tab = _device_tables(device)
    occ = sdf < 0
    surf_cube_ids, case_ids = _surface_cubes(occ, cubes, res, tab)
    if surf_cube_ids.numel() == 0:
        return x.new_zeros((0, 3)), torch.zeros((0, 3), dtype=torch.long, device=device)
    beta, alpha, gamma = normalize_weights(
        beta[surf_cube_ids], alpha[surf_cube_ids], gamma[surf_cube_ids], weight_scale
    )
    surf_cubes = cubes[surf_cube_ids]
    del surf_cube_ids
    edges = _surface_edges(surf_cubes, occ, tab["edges"])
    entries = _dual_entries(case_ids, tab)
    vertices = _dual_vertices(x, sdf, surf_cubes, alpha, beta, entries, tab["edges"])
    del alpha, beta
    faces = _faces(sdf, gamma, surf_cubes.shape[0], edges, entries)
    return vertices, faces


def _surface_cubes(
    occ: torch.Tensor, cubes: torch.Tensor, res: int, tab: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids of the cubes the surface crosses, and their (disambiguated) marching-cubes case ids."""
    occ8 = occ[cubes]
    n_inside = occ8.sum(dim=-1)
    surf_cube_ids = torch.nonzero((n_inside > 0) & (n_inside < 8)).squeeze(-1)
    del n_inside
    case_ids = (occ8[surf_cube_ids].long() * tab["bits"]).sum(dim=-1)
    return surf_cube_ids, _resolve_ambiguous_cases(case_ids, surf_cube_ids, res, tab["check"])


@dataclass
class _Edges:
    """The grid edges of the surface cubes, deduplicated; keys sort like (first end, second end)."""

    first_end: torch.Tensor
    of_slot: torch.Tensor
    """[S * 12]: the unique edge at each (cube, cube edge) slot."""
    quad_slot: torch.Tensor
    """[S * 12] bool: the slot's edge is crossed by the surface and shared by four surface cubes (one quad)."""


def _surface_edges(surf_cubes: torch.Tensor, occ: torch.Tensor, cube_edges: torch.Tensor) -> _Edges:
    n_verts = occ.shape[0]
    keys = (surf_cubes[:, cube_edges[:, 0]] * n_verts + surf_cubes[:, cube_edges[:, 1]]).reshape(-1)
    unique_keys, of_slot, share_count = torch.unique(keys, return_inverse=True, return_counts=True)
    del keys
    first_end = unique_keys // n_verts
    crossed = occ[first_end] != occ[unique_keys % n_verts]
    return _Edges(first_end, of_slot, (share_count[of_slot] == 4) & crossed[of_slot])


@dataclass
class _Entries:
    """One entry per (dual vertex, surface edge it averages): dual vertices ordered by the patch count of
    their cube, then cube, then patch; entries in vertex order."""

    cube: torch.Tensor
    edge: torch.Tensor
    """The cube edge (0..11) of each entry."""
    vertex: torch.Tensor
    n_dual: int
    cube_order: torch.Tensor
    num_groups: torch.Tensor


def _dual_entries(case_ids: torch.Tensor, tab: dict[str, torch.Tensor]) -> _Entries:
    num_groups = tab["num_groups"][case_ids]
    cube_order = torch.argsort(num_groups, stable=True)
    first_vertex = torch.empty_like(num_groups)
    first_vertex[cube_order] = torch.cumsum(num_groups[cube_order], dim=0) - num_groups[cube_order]
    groups = tab["groups"][case_ids]  # [S, 4, 7]
    cube_idx, group_idx, slot_idx = torch.nonzero(groups >= 0, as_tuple=True)
    edge_idx = groups[cube_idx, group_idx, slot_idx]
    del groups, slot_idx
    vertex_of_entry = first_vertex[cube_idx] + group_idx
    del group_idx, first_vertex
    entry_order = torch.argsort(vertex_of_entry, stable=True)
    return _Entries(
        cube_idx[entry_order],
        edge_idx[entry_order],
        vertex_of_entry[entry_order],
        int(num_groups.sum()),
        cube_order,
        num_groups,
    )


def _dual_vertices(
    x: torch.Tensor,
    sdf: torch.Tensor,
    surf_cubes: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    entries: _Entries,
    cube_edges: torch.Tensor,
) -> torch.Tensor:
    """Each dual vertex: the beta-weighted mean of its edges' alpha-shifted crossings."""
    cube_idx = entries.cube
    corner0 = cube_edges[entries.edge, 0]
    corner1 = cube_edges[entries.edge, 1]
    v0 = surf_cubes[cube_idx, corner0]
    v1 = surf_cubes[cube_idx, corner1]
    w0 = (sdf[v0] * alpha[cube_idx, corner0]).unsqueeze(-1)
    w1 = (sdf[v1] * alpha[cube_idx, corner1]).unsqueeze(-1)
    del corner0, corner1
    crossing = _crossings(x[v0], x[v1], w0, w1)
    del v0, v1, w0, w1
    edge_beta = beta[cube_idx, entries.edge].unsqueeze(-1)
    beta_sum = torch.zeros((entries.n_dual, 1), dtype=x.dtype, device=x.device).index_add_(0, entries.vertex, edge_beta)
    weighted = torch.zeros((entries.n_dual, 3), dtype=x.dtype, device=x.device).index_add_(
        0, entries.vertex, crossing * edge_beta
    )
    return weighted / beta_sum


def _faces(sdf: torch.Tensor, gamma: torch.Tensor, n_surf: int, edges: _Edges, entries: _Entries) -> torch.Tensor:
    """Quads (one per crossed grid edge shared by four surface cubes), each cut into two triangles along the
    diagonal with the larger gamma product."""
    vertex_of_slot = torch.full((n_surf * 12,), -1, dtype=torch.long, device=sdf.device)
    vertex_of_slot[entries.cube * 12 + entries.edge] = entries.vertex
    slot_edges = edges.of_slot[edges.quad_slot]
    quad_edges, by_edge = torch.sort(slot_edges, stable=True)
    quads = vertex_of_slot[edges.quad_slot][by_edge].reshape(-1, 4)
    del vertex_of_slot, slot_edges, by_edge
    first_end_positive = sdf[edges.first_end[quad_edges.reshape(-1, 4)[:, 0]]] > 0
    quads = torch.cat(
        (
            quads[first_end_positive][:, list(_QUAD_ORDER_FIRST_POSITIVE)],
            quads[~first_end_positive][:, list(_QUAD_ORDER_FIRST_NOT_POSITIVE)],
        )
    )
    vertex_gamma = torch.repeat_interleave(gamma[entries.cube_order], entries.num_groups[entries.cube_order])
    quad_gamma = vertex_gamma[quads]
    use_02 = quad_gamma[:, 0] * quad_gamma[:, 2] > quad_gamma[:, 1] * quad_gamma[:, 3]
    return torch.where(use_02.unsqueeze(-1), quads[:, list(_SPLIT_02)], quads[:, list(_SPLIT_13)]).reshape(-1, 3)
