"""Lookup tables for FlexiCubes, derived from the 256 sign configurations of a cube.

Nothing here is transcribed: every table is computed from the cube's combinatorics.

Conventions (they fix the meaning of case ids and edge ids, and therefore the output order):

* Corner ``c`` of a cube sits at offset ``(c & 1, (c >> 1) & 1, (c >> 2) & 1)`` in (x, y, z).
* A configuration (case id) has bit ``c`` set when corner ``c`` is inside (sdf < 0).
* The 12 edges are numbered as in :data:`CUBE_EDGES`; edges 0-3 circle the y=0 face, edges 4-7 the y=1
  face and edges 8-11 run along y (listed from the y=1 corner to the y=0 corner).

Surface patches follow marching cubes with one fixed rule for ambiguous faces: on a face whose inside
corners are diagonal, the *inside* corners stay apart and the outside corners connect across the face.
Inside corners connect only along cube edges; the cube interior never connects anything. A crossed edge
joins one inside and one outside component, and each such pair of components is one patch, i.e. one
dual vertex.

That rule is consistent between neighbouring cubes, but when a patch covers all four crossed edges of
an ambiguous face and the neighbour across that face does the same, the two dual vertices would share
four quads (a non-manifold edge). Such configurations (the classes the FlexiCubes paper calls C16 and
C19: five or six inside corners, the two on the ambiguous face joined around the cube) are listed
in the check table with the offset of that neighbour and the complementary configuration, whose
patches resolve the face the other way; the extractor swaps to it when both sides are affected.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CUBE_CORNERS: np.ndarray = np.array([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=np.int64)

CUBE_EDGES: np.ndarray = np.array(
    [[0, 1], [1, 5], [4, 5], [0, 4], [2, 3], [3, 7], [6, 7], [2, 6], [2, 0], [3, 1], [7, 5], [6, 4]],
    dtype=np.int64,
)

MAX_GROUPS = 4
MAX_GROUP_EDGES = 7

_CORNERS = [tuple(int(v) for v in row) for row in CUBE_CORNERS]
_EDGES = [(int(a), int(b)) for a, b in CUBE_EDGES]


def _faces() -> list[tuple[int, int, tuple[int, int], tuple[int, int]]]:
    """The 6 faces as (axis, side, diagonal pair A, diagonal pair B)."""
    faces = []
    for axis in range(3):
        for side in range(2):
            corners = [c for c in range(8) if _CORNERS[c][axis] == side]
            a = corners[0]
            opposite = next(
                c for c in corners if sum(p != q for p, q in zip(_CORNERS[c], _CORNERS[a], strict=False)) == 2
            )
            others = [c for c in corners if c not in (a, opposite)]
            rest = (others[0], others[1])
            faces.append((axis, side, (a, opposite), rest))
    return faces


FACES = _faces()


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _inside(case: int, corner: int) -> bool:
    return bool((case >> corner) & 1)


def ambiguous_faces(case: int) -> list[int]:
    """Indices into FACES of faces whose inside corners are exactly one diagonal."""
    out = []
    for f, (_, _, diag_a, diag_b) in enumerate(FACES):
        a_in = [_inside(case, c) for c in diag_a]
        b_in = [_inside(case, c) for c in diag_b]
        if a_in[0] == a_in[1] and b_in[0] == b_in[1] and a_in[0] != b_in[0]:
            out.append(f)
    return out


def _components(case: int) -> _UnionFind:
    uf = _UnionFind(8)
    for c0, c1 in _EDGES:
        if _inside(case, c0) == _inside(case, c1):
            uf.union(c0, c1)
    for f in ambiguous_faces(case):
        _, _, diag_a, diag_b = FACES[f]
        outside_diag = diag_b if _inside(case, diag_a[0]) else diag_a
        uf.union(*outside_diag)
    return uf


def edge_groups(case: int) -> list[list[int]]:
    """Crossed edges of ``case`` grouped by surface patch.

    Patches are ordered by the lowest corner of their inside component, then of their outside
    component; this is the order the reference implementation emits dual vertices in.
    """
    uf = _components(case)
    groups: dict[tuple[int, int], list[int]] = {}
    for e, (c0, c1) in enumerate(_EDGES):
        if _inside(case, c0) != _inside(case, c1):
            key = (uf.find(c0), uf.find(c1))
            key = key if _inside(case, c0) else key[::-1]
            groups.setdefault(key, []).append(e)
    return [groups[key] for key in sorted(groups)]


def face_edges(face: int) -> list[int]:
    """Edges lying in a face."""
    axis, side, _, _ = FACES[face]
    return [e for e, (c0, c1) in enumerate(_EDGES) if _CORNERS[c0][axis] == side and _CORNERS[c1][axis] == side]


def problem_face(case: int) -> int | None:
    """The ambiguous face whose four crossed edges all belong to one patch, if any."""
    found = []
    patches = [set(g) for g in edge_groups(case)]
    for f in ambiguous_faces(case):
        edges = set(face_edges(f))
        if any(edges <= g for g in patches):
            found.append(f)
    if len(found) > 1:
        raise AssertionError(f"case {case} has {len(found)} single-patch ambiguous faces")
    return found[0] if found else None


@dataclass(frozen=True)
class FlexiCubesTables:
    """``groups`` [256, 4, 7] edge ids padded with -1; ``num_groups`` [256]; ``check`` [256, 5] rows of
    (is_problem, dx, dy, dz, alternative case)."""

    groups: np.ndarray
    num_groups: np.ndarray
    check: np.ndarray


@lru_cache(maxsize=1)
def build_tables() -> FlexiCubesTables:
    """Compute all tables once per process."""
    groups = np.full((256, MAX_GROUPS, MAX_GROUP_EDGES), -1, dtype=np.int64)
    num_groups = np.zeros(256, dtype=np.int64)
    check = np.zeros((256, 5), dtype=np.int64)
    for case in range(256):
        patches = edge_groups(case)
        num_groups[case] = len(patches)
        for g, edges in enumerate(patches):
            groups[case, g, : len(edges)] = edges
        face = problem_face(case)
        if face is not None:
            axis, side, _, _ = FACES[face]
            check[case, 0] = 1
            check[case, 1 + axis] = 1 if side == 1 else -1
            check[case, 4] = 255 - case
    return FlexiCubesTables(groups=groups, num_groups=num_groups, check=check)
