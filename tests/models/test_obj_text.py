"""The vectorised OBJ text against Python's own formatting ('%.6f', i / 255 to four decimals), value by value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instantmesh.export import write_mesh
from instantmesh.obj_text import BLOCK_ROWS, obj_chunks, obj_text


def _parse(text: bytes) -> tuple[list[list[str]], list[list[str]]]:
    lines = text.decode("ascii").splitlines()
    vertices = [line.split()[1:] for line in lines if line.startswith("v ")]
    faces = [line.split()[1:] for line in lines if line.startswith("f ")]
    assert len(vertices) + len(faces) == len(lines)
    return vertices, faces


def _expected_coordinate(value: float) -> float:
    return float(f"{value:.6f}")


def _check(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> list[list[str]]:
    """Every written number equals what Python writes for the same value (read back as a float)."""
    v_tokens, f_tokens = _parse(obj_text(vertices, faces, colors))
    written = np.array([[float(t) for t in row[:3]] for row in v_tokens], dtype=np.float64).reshape(-1, 3)
    expected = np.vectorize(_expected_coordinate)(vertices.astype(np.float64)).reshape(-1, 3)
    np.testing.assert_array_equal(written, expected)
    if colors is not None:
        shades = np.array([[float(t) for t in row[3:]] for row in v_tokens])
        np.testing.assert_array_equal(shades, np.vectorize(lambda c: float(f"{c / 255:.4f}"))(colors))
        np.testing.assert_array_equal(np.rint(shades * 255).astype(np.uint8), colors)
    else:
        assert all(len(row) == 3 for row in v_tokens)
    np.testing.assert_array_equal(np.array(f_tokens, dtype=np.int64).reshape(-1, faces.shape[1]), faces + 1)
    return v_tokens


def test_random_values_of_every_magnitude_match_python_formatting() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    scale = 10.0 ** rng.integers(-8, 10, size=(n, 3))
    vertices = (rng.uniform(-1, 1, (n, 3)) * scale).astype(np.float32)
    colors = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    faces = rng.integers(0, n, (2 * n, 3))
    _check(vertices, faces, colors)
    _check(vertices, faces, None)


def test_ties_round_half_to_even_like_printf() -> None:
    """j / 128 for odd j is a float32 whose six-decimal expansion ends in exactly 5 at the seventh decimal."""
    ties = (np.arange(1, 768, 2, dtype=np.float32) / 128).reshape(-1, 3)
    _check(ties, np.zeros((1, 3), np.int64), None)
    _check(-ties, np.zeros((1, 3), np.int64), None)


def test_rounding_that_carries_into_a_new_integer_digit() -> None:
    vertices = np.array([[0.9999999, -0.9999996, 9.9999996], [0.0000005, 99.9999995, -0.0]], np.float32)
    tokens = _check(vertices, np.array([[0, 1, 1]]), None)
    assert tokens[0][0].endswith("1.000000") and tokens[0][2].endswith("10.000000")


def test_zeros_never_carry_a_minus_sign() -> None:
    vertices = np.array([[-0.0, -4e-7, -1e-30], [0.0, 4e-7, -5e-7]], np.float32)
    text = obj_text(vertices, np.zeros((0, 3), np.int64), None)
    assert b"-" not in text
    _check(vertices, np.zeros((0, 3), np.int64), None)


def test_non_finite_and_huge_values_are_written_by_python() -> None:
    vertices = np.array([[np.nan, np.inf, -np.inf], [3e13, -4e20, 0.5], [1.25, -2.5, 1e-3]], np.float32)
    tokens, _ = _parse(obj_text(vertices, np.zeros((0, 3), np.int64), None))
    assert tokens[0] == ["nan", "inf", "-inf"]
    assert [float(t) for t in tokens[1]] == [float(f"{x:.6f}") for x in vertices[1].tolist()]
    _check(vertices[1:], np.zeros((0, 3), np.int64), None)


@pytest.mark.parametrize("largest", [0, 8, 998, 999, 9_998, 9_999, 99_999_998, 99_999_999, 3_000_000_000])
def test_face_indices_of_every_width(largest: int) -> None:
    """Widths change at 3, 7 and 11 digits (a space and 4-digit groups); indices past int32 too."""
    rng = np.random.default_rng(largest)
    faces = np.concatenate([[[largest, 0, largest // 2]], rng.integers(0, largest + 1, (50, 3))]).astype(np.int64)
    _check(np.zeros((1, 3), np.float32), faces, None)


def test_small_and_empty_meshes() -> None:
    assert obj_text(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), None) == b""
    one = np.array([[1.5, -2.25, 3.0]], np.float32)
    assert (
        obj_text(one, np.zeros((0, 3), np.int64), np.array([[255, 0, 128]]))
        == b"v  1.500000 -2.250000  3.000000 1.0000 0.0000 0.5020\n"
    )
    assert obj_text(one, np.array([[0, 0, 0]]), None) == b"v  1.500000 -2.250000  3.000000\nf   1   1   1\n"
    assert obj_text(one, np.zeros(0, np.int64), None) == b"v  1.500000 -2.250000  3.000000\n"  # faces as shape (0,)
    with pytest.raises(ValueError, match="non-negative"):
        obj_text(one, np.array([[0, -1, 0]]), None)


def test_blocks_join_into_the_text_with_specials_in_later_blocks() -> None:
    """Lines are cut into blocks of BLOCK_ROWS; a NaN past the first block lands in its own line."""
    n = 2 * BLOCK_ROWS + 5
    vertices = np.random.default_rng(2).normal(size=(n, 3)).astype(np.float32)
    vertices[BLOCK_ROWS + 3, 1] = np.nan
    vertices[n - 1, 2] = 5e13
    faces = np.arange(3 * n).reshape(n, 3) % n
    chunks = [bytes(c) for c in obj_chunks(vertices, faces, None)]
    assert len(chunks) == 6 and b"".join(chunks) == obj_text(vertices, faces, None)
    lines = b"".join(chunks).decode().splitlines()
    assert lines[BLOCK_ROWS + 3].split()[2] == "nan" and float(lines[n - 1].split()[3]) == float(
        f"{float(vertices[n - 1, 2]):.6f}"
    )
    written = np.array([[float(t) for t in line.split()[1:]] for line in lines[:n]])
    regular = np.delete(np.arange(n), [BLOCK_ROWS + 3, n - 1])
    np.testing.assert_array_equal(
        written[regular], np.vectorize(_expected_coordinate)(vertices[regular].astype(np.float64))
    )
    np.testing.assert_array_equal(np.array([line.split()[1:] for line in lines[n:]], dtype=np.int64), faces + 1)


def test_trimesh_reads_the_same_arrays(tmp_path: Path) -> None:
    trimesh = pytest.importorskip("trimesh")
    rng = np.random.default_rng(11)
    n = 21_000
    vertices = (rng.normal(size=(n, 3)) * 30).astype(np.float32)
    faces = np.concatenate([np.arange(n).reshape(-1, 3), rng.integers(0, n, (2 * n, 3))])  # every vertex used: kept
    colors = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    write_mesh(str(tmp_path / "m.obj"), "obj", vertices, faces, colors, "raw")
    back = trimesh.load(tmp_path / "m.obj", force="mesh", process=False)
    np.testing.assert_array_equal(back.vertices, np.vectorize(_expected_coordinate)(vertices.astype(np.float64)))
    np.testing.assert_array_equal(back.faces, faces)
    np.testing.assert_array_equal(np.asarray(back.visual.vertex_colors)[:, :3], colors)
