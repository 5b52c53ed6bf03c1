"""A second start on the same cache builds nothing: the worker, started as the host starts it, loads the views from
the bundle the first start wrote (no module, no compiler), leaves every file of the compile folder as it was, and
makes the first start's views bit for bit (the same packages on the same weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rpcworker.wire.messages import VIEWS_COMPILING, VIEWS_FROM_PACKAGES

from .checks import GUIDANCE, SEED, STEPS, changes, compile_files, differences, max_abs_diff, pixels
from .conftest import SecondStart

pytestmark = pytest.mark.gpu

LOG_LINES = 40
"""The worker's last stderr lines quoted when the start was not the packaged one."""


def test_a_second_start_builds_nothing_and_makes_the_first_starts_views(
    second_start: SecondStart,
    compiled_grid: np.ndarray,
    object_pngs: list[Path],
    gpu_cache: Path,
    tmp_path: Path,
    record_property: Any,
) -> None:
    log = "\n".join(second_start.stderr[-LOG_LINES:])
    messages = second_start.load_messages
    assert second_start.compiled_before, "the first start left no compiled files"
    assert VIEWS_FROM_PACKAGES in messages and not any(m.startswith(VIEWS_COMPILING) for m in messages), (
        f"load messages {messages}; the worker's log:\n{log}"
    )
    views = second_start.worker.generate_views(
        object_pngs[0],
        seed=SEED,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        save_grid=tmp_path / "grid.png",
        prepare=False,  # the backend got the file's pixels as they are; the API would crop and centre them
    )
    after = compile_files(gpu_cache)
    assert after == second_start.compiled_before, changes(second_start.compiled_before, after)
    assert views.grid_path is not None
    grid = pixels(views.grid_path)
    record_property("max_abs_diff", max_abs_diff(grid, compiled_grid))
    assert np.array_equal(grid, compiled_grid), differences(grid, compiled_grid)
