"""The 3-row x 2-column grid of six views that Zero123++ produces, as arrays (row-major view order)."""

from __future__ import annotations

from typing import Any

import numpy as np


def split_grid(grid: Any) -> tuple[np.ndarray, int]:
    """uint8 views [6, S, S, 3] and S, from a grid image (PIL or HxWx3 array) of 3 rows x 2 columns."""
    arr = np.asarray(grid.convert("RGB") if hasattr(grid, "convert") else grid, dtype=np.uint8)
    size = arr.shape[1] // 2
    return arr.reshape(3, size, 2, size, 3).transpose(0, 2, 1, 3, 4).reshape(6, size, size, 3), size


def join_views(views: np.ndarray) -> np.ndarray:
    """The inverse of split_grid: [6, S, S, 3] -> [3S, 2S, 3]."""
    size = views.shape[1]
    return views.reshape(3, 2, size, size, 3).transpose(0, 2, 1, 3, 4).reshape(3 * size, 2 * size, 3)
