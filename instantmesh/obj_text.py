"""OBJ text built by numpy, block by block: every line of a kind has the same width, so each number lands
at a fixed byte offset and is stored as whole 2-, 4- or 8-byte words from lookup tables.

Coordinates are fixed-point with six decimals, rounded half to even from the exact value (a float32 times
10**6 is exact in float64, so this is what ``'%.6f'`` prints); a zero never carries a minus sign; integer
digits are zero-padded to the widest value's. Colours are ``i / 255`` with four decimals, which keeps every
8-bit value exact. Face indices are 1-based, right-aligned with spaces. NaN, infinities and values too large
for 64-bit fixed point are rare and written by Python (``nan``, ``inf``, ``'%.6f'``) into their fields.
Rows go in blocks of ``BLOCK_ROWS``, each built in one small reused buffer and handed out to be written.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

COORD_DECIMALS = 6
COLOUR_DECIMALS = 4
BLOCK_ROWS = 1 << 14
"""Rows per block: a buffer and temporaries of about 1 MB, which stay in cache (2**13 to 2**16 measured alike)."""
FIXED_POINT_LIMIT = 1e12
"""Coordinates at or above this (and non-finite ones) go through Python formatting: 10**6 times it fits int64."""
INT32_LIMIT = 2**31

_SCALE = 10**COORD_DECIMALS
_NEWLINE = ord("\n")


def _words(texts: list[str], dtype: str) -> np.ndarray:
    return np.frombuffer("".join(texts).encode("ascii"), dtype=dtype)


_ZERO_PADDED = [f"{i:04d}" for i in range(10_000)]
_BLANK_PADDED = [f"{i:4d}" for i in range(10_000)]
_GROUPS = _words(_ZERO_PADDED + _BLANK_PADDED + ["    "] + _BLANK_PADDED[1:], "<u4")
"""Four-digit groups: zero-padded at 0, blank-padded (``"   0"`` for zero) at 10_000, all blank for zero at 20_000."""
_BLANK, _BLANK_OR_EMPTY = 10_000, 20_000
_DOT_GROUPS = _words([f"{i // 100}.{i % 100:02d}" for i in range(1000)], "<u4")
"""``"d.ff"``: the last integer digit, the dot and the first two decimals."""
_SIGNS = _words(["  ", " -"], "<u2")
_COLOURS = _words([f" {i / 255:.{COLOUR_DECIMALS}f} " for i in range(256)], "<u8")
_LAST_COLOURS = _words([f" {i / 255:.{COLOUR_DECIMALS}f}\n" for i in range(256)], "<u8")
"""Colour fields are 7 bytes stored as 8: the eighth is the next field's space, or the line's newline."""


def _digit_count(value: int) -> int:
    return len(str(max(int(value), 0)))


def _coordinate_block(rows: np.ndarray, x: np.ndarray, width: int, int_type: type) -> None:
    """Writes ``" S" + integer digits + "." + decimals`` for the columns of ``x`` [n, K] into ``rows`` [n, line]."""
    magnitude = np.rint(np.multiply(np.abs(x), _SCALE, dtype=np.float64)).astype(int_type)
    negative = np.signbit(x) & (magnitude != 0)
    head = magnitude // 10_000
    tail = magnitude - head * 10_000
    high = None
    if width > 1:
        high = head // 1000
        head -= high * 1000
    field = width + 9
    for k in range(x.shape[1]):
        start = 1 + k * field
        rows[:, start : start + 2].view("<u2")[:, 0] = _SIGNS.take(negative[:, k].view(np.uint8))
        if high is not None:
            rest = high[:, k]
            for d in range(width - 2, -1, -1):
                rest, digit = np.divmod(rest, 10)
                rows[:, start + 2 + d] = digit + ord("0")
        rows[:, start + width + 1 : start + width + 5].view("<u4")[:, 0] = _DOT_GROUPS.take(head[:, k])
        rows[:, start + width + 5 : start + width + 9].view("<u4")[:, 0] = _GROUPS.take(tail[:, k])


def _special(value: float) -> str:
    if np.isnan(value):
        return "nan"
    if np.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{COORD_DECIMALS}f}"


def _vertex_format(vertices: np.ndarray) -> tuple[int, type, np.ndarray, list[str]]:
    """Integer digits, the integer type that holds ``10**6 * |x|``, and the values Python writes (and where)."""
    magnitude = np.abs(vertices)
    regular = magnitude < FIXED_POINT_LIMIT
    largest = float(magnitude.max(initial=0.0, where=regular))
    irregular = np.zeros((0, 2), dtype=np.intp) if regular.all() else np.argwhere(~regular)
    specials = [_special(float(vertices[i, k])) for i, k in irregular]
    scaled = float(np.rint(largest * _SCALE))
    width = max(_digit_count(scaled // _SCALE), *(len(s) - COORD_DECIMALS - 2 for s in specials), 1)
    return width, np.int32 if scaled < INT32_LIMIT else np.int64, irregular, specials


def _vertex_block(rows: np.ndarray, x: np.ndarray, colors: np.ndarray | None, width: int, int_type: type) -> None:
    rows[:, 0] = ord("v")
    _coordinate_block(rows, x, width, int_type)
    if colors is None:
        rows[:, -1] = _NEWLINE
        return
    colours_at = 1 + x.shape[1] * (width + 9)
    for c in range(colors.shape[1]):
        words = _LAST_COLOURS if c == colors.shape[1] - 1 else _COLOURS
        start = colours_at + 7 * c
        rows[:, start : start + 8].view("<u8")[:, 0] = words.take(colors[:, c])


def _face_groups(faces: np.ndarray) -> int:
    """Four-digit groups per index: a field of ``4 * groups`` bytes holds a space and the widest index."""
    if len(faces) and int(faces.min()) < 0:
        raise ValueError("face indices must be non-negative")
    return -(-(_digit_count(int(faces.max(initial=-1)) + 1) + 1) // 4)


def _face_block(rows: np.ndarray, faces: np.ndarray, groups: int, int_type: type) -> None:
    field = 4 * groups
    rest: np.ndarray = faces.astype(int_type)
    rest += 1
    words = []
    for g in range(groups - 1):
        higher = rest // 10_000
        digits = rest - higher * 10_000
        digits[higher == 0] += _BLANK if g == 0 else _BLANK_OR_EMPTY
        words.append(_GROUPS.take(digits))
        rest = higher
    words.append(_GROUPS.take(rest + (_BLANK if groups == 1 else _BLANK_OR_EMPTY)))
    for c in range(faces.shape[1]):  # left to right along each line
        for g in range(groups - 1, -1, -1):
            start = 1 + c * field + field - 4 * (g + 1)
            rows[:, start : start + 4].view("<u4")[:, 0] = words[g][:, c]
    rows[:, 0] = ord("f")
    rows[:, -1] = _NEWLINE


def _patch(rows: np.ndarray, r0: int, width: int, irregular: np.ndarray, specials: list[str]) -> None:
    """Python's text for the values of rows ``r0:r0 + len(rows)`` that fixed point leaves out."""
    first, last = np.searchsorted(irregular[:, 0], [r0, r0 + len(rows)])
    field = width + 8
    for (i, k), special in zip(irregular[first:last], specials[first:last], strict=True):
        start = 2 + k * (width + 9)
        rows[i - r0, start : start + field] = np.frombuffer(special.rjust(field).encode("ascii"), dtype=np.uint8)


def obj_chunks(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> Iterator[memoryview]:
    """The OBJ text, block by block, each a view on one reused buffer: write each before asking for the next.

    A small buffer reused beats one buffer for the whole text: no 100 MB of fresh memory to fault in (most
    of a first export's time), and the block is still in cache when it is written.
    """
    if not len(vertices):
        return
    colors = None if colors is None else np.asarray(colors, dtype=np.uint8)
    width, int_type, irregular, specials = _vertex_format(vertices)
    groups = _face_groups(faces)
    finite = np.where(np.abs(vertices) < FIXED_POINT_LIMIT, vertices, 0) if specials else vertices
    v_line = 2 + vertices.shape[1] * (width + 9) + (7 * colors.shape[1] if colors is not None else 0)
    f_line = 2 + faces.shape[-1] * 4 * groups  # shape[-1]: an empty face list may come as shape (0,)
    buffer = np.empty(BLOCK_ROWS * max(v_line, f_line), dtype=np.uint8)
    for r0 in range(0, len(vertices), BLOCK_ROWS):
        x = finite[r0 : r0 + BLOCK_ROWS]
        rows = buffer[: len(x) * v_line].reshape(len(x), v_line)
        _vertex_block(rows, x, None if colors is None else colors[r0 : r0 + BLOCK_ROWS], width, int_type)
        if specials:
            _patch(rows, r0, width, irregular, specials)
        yield rows.data
    face_type = np.int32 if int(faces.max(initial=0)) + 1 < INT32_LIMIT else np.int64
    for r0 in range(0, len(faces), BLOCK_ROWS):
        block = faces[r0 : r0 + BLOCK_ROWS]
        rows = buffer[: len(block) * f_line].reshape(len(block), f_line)
        _face_block(rows, block, groups, face_type)
        yield rows.data


def obj_text(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> bytes:
    """The whole OBJ text in memory (tests, small meshes); files are written from ``obj_chunks``."""
    return b"".join([bytes(chunk) for chunk in obj_chunks(vertices, faces, colors)])
