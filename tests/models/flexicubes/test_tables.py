"""Invariants of the generated FlexiCubes tables (patch grouping, patch counts, ambiguity checks)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("torch")

from instantmesh.flexicubes.tables import (  # noqa: E402
    CUBE_CORNERS,
    CUBE_EDGES,
    ambiguous_faces,
    build_tables,
    face_edges,
)

pytestmark = [pytest.mark.models, pytest.mark.upstream]

TABLES = build_tables()


def inside(case: int, corner: int) -> bool:
    return bool((case >> corner) & 1)


def crossed_edges(case: int) -> set[int]:
    return {e for e, (a, b) in enumerate(CUBE_EDGES) if inside(case, a) != inside(case, b)}


def partition(case: int) -> list[list[int]]:
    rows = TABLES.groups[case][: TABLES.num_groups[case]]
    return [[int(e) for e in row if e >= 0] for row in rows]


def as_sets(groups: list[list[int]]) -> set[frozenset[int]]:
    return {frozenset(g) for g in groups}


def cube_symmetries() -> list[tuple[list[int], list[int], np.ndarray]]:
    """The 48 symmetries of the cube as (corner map, edge map, 3x3 signed permutation matrix)."""
    pos = {tuple(int(v) for v in p): c for c, p in enumerate(CUBE_CORNERS)}
    edge_of = {frozenset((int(a), int(b))): e for e, (a, b) in enumerate(CUBE_EDGES)}
    out = []
    for perm in itertools.permutations(range(3)):
        for flips in itertools.product((0, 1), repeat=3):
            matrix = np.zeros((3, 3), dtype=np.int64)
            for axis in range(3):
                matrix[axis, perm[axis]] = -1 if flips[axis] else 1
            corner_map = []
            for p in CUBE_CORNERS:
                q = tuple(int(p[perm[axis]]) ^ flips[axis] for axis in range(3))
                corner_map.append(pos[q])
            edge_map = [edge_of[frozenset((corner_map[a], corner_map[b]))] for a, b in CUBE_EDGES]
            out.append((corner_map, edge_map, matrix))
    return out


SYMMETRIES = cube_symmetries()


def map_case(case: int, corner_map: list[int]) -> int:
    return sum(1 << corner_map[c] for c in range(8) if inside(case, c))


def test_shapes_and_padding():
    assert TABLES.groups.shape == (256, 4, 7)
    assert TABLES.num_groups.shape == (256,)
    assert TABLES.check.shape == (256, 5)
    for case in range(256):
        n = int(TABLES.num_groups[case])
        rows = TABLES.groups[case]
        assert (rows[n:] == -1).all()
        for row in rows[:n]:
            used = row[row >= 0]
            assert len(used) >= 3
            assert (row[: len(used)] >= 0).all(), "padding only at the end"


def test_every_crossed_edge_in_exactly_one_group():
    for case in range(256):
        flat = [e for g in partition(case) for e in g]
        assert len(flat) == len(set(flat))
        assert set(flat) == crossed_edges(case)


def test_counts():
    counts = np.bincount(TABLES.num_groups, minlength=5)
    assert counts.tolist() == [2, 162, 82, 8, 2]
    assert TABLES.num_groups[0] == TABLES.num_groups[255] == 0
    for corner in range(8):
        (group,) = partition(1 << corner)
        touching = {e for e, (a, b) in enumerate(CUBE_EDGES) if corner in (a, b)}
        assert set(group) == touching
        assert as_sets(partition(255 - (1 << corner))) == {frozenset(touching)}
    assert max(len(g) for c in range(256) for g in partition(c)) == 7


def test_groups_are_closed_loops_around_patches():
    """Each group's edges form one cycle of the patch boundary: its edges pair up on cube faces."""
    for case in range(256):
        for group in partition(case):
            per_face = {}
            for f in range(6):
                on_face = [e for e in group if e in face_edges(f)]
                if on_face:
                    per_face[f] = on_face
            assert all(len(v) in (2, 4) for v in per_face.values()), (case, group)


def test_symmetric_under_cube_symmetries():
    for corner_map, edge_map, matrix in SYMMETRIES:
        for case in range(256):
            image = map_case(case, corner_map)
            mapped = {frozenset(edge_map[e] for e in g) for g in partition(case)}
            assert mapped == as_sets(partition(image))
            assert TABLES.check[image, 0] == TABLES.check[case, 0]
            if TABLES.check[case, 0]:
                assert (matrix @ TABLES.check[case, 1:4] == TABLES.check[image, 1:4]).all()


def test_complement_symmetry_without_ambiguous_faces():
    for case in range(256):
        if not ambiguous_faces(case):
            assert as_sets(partition(case)) == as_sets(partition(255 - case))


def test_ambiguous_faces_keep_inside_corners_apart():
    # Two inside corners on a face diagonal: two patches; the complement joins them into one.
    for case in (0b00001001, 0b00000110, 0b00010100, 0b01000001):
        assert ambiguous_faces(case)
        assert TABLES.num_groups[case] == 2
        assert TABLES.num_groups[255 - case] == 1


def test_check_table():
    problem = [c for c in range(256) if TABLES.check[c, 0] == 1]
    assert len(problem) == 36
    assert (TABLES.check[TABLES.check[:, 0] == 0] == 0).all()
    by_inside_count = np.bincount([bin(c).count("1") for c in problem], minlength=9)
    assert by_inside_count[5] == 24 and by_inside_count[6] == 12
    for case in problem:
        (face,) = ambiguous_faces(case)
        direction = TABLES.check[case, 1:4]
        assert np.abs(direction).sum() == 1
        axis = int(np.argmax(np.abs(direction)))
        side = 1 if direction[axis] > 0 else 0
        assert set(face_edges(face)) == {
            e for e, (a, b) in enumerate(CUBE_EDGES) if CUBE_CORNERS[a, axis] == CUBE_CORNERS[b, axis] == side
        }
        alternative = int(TABLES.check[case, 4])
        assert alternative == 255 - case
        assert any(set(face_edges(face)) & crossed_edges(case) <= set(g) for g in partition(case))
        split = [set(g) & set(face_edges(face)) for g in partition(alternative)]
        assert sorted(len(s) for s in split if s) == [2, 2]
