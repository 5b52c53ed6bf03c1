"""From eager views to compiled ones, between requests: load the packages the build wrote, check them, switch.

The executor runs this as a job of its own that nothing runs beside (`WorkerSession`), so a request's views are
made wholly eagerly or wholly compiled, never half and half. The compiled views are the packaged start a later
worker makes (`views_compile.views_from_bundle`): loaded and warmed up at each batch size of the stage (the
warm-up captures the CUDA graphs and makes the step's load-time self-check of its two passes side by side), then
checked against the eager views on one short run of the warm-up's white image. Only then do requests run them:
the pipeline requests ran is handed the compiled networks (`switch_to_compiled`, the pipeline's one switch point
``Zero123PlusPipeline.use``), and the eager modules are freed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..wire.messages import DEFAULT_GUIDANCE
from .views_compile import WARMUP_STEPS, views_from_bundle
from .views_loading import ViewsLoad

CHECK_TOLERANCE = 16
"""The most an 8-bit pixel of the compiled check run may differ from eager's (of 255): compiled views stay within
2 of eager's at 75 steps (docs/benchmarks.md, 'One object on the fast path'); a wrong package is far off."""
CHECK_SEED = 0
SWITCH_PHASE = "views_compiled_switch_s"
"""``load_phases``: loading, warming up and checking the compiled views before the switch."""


class CompiledUnusable(RuntimeError):
    """The compiled views cannot be used (no valid bundle, a package that does not run, a check that failed);
    the message is one line saying why. Requests stay eager."""


def load_compiled(load: ViewsLoad, ahead: Any, batch_sizes: Sequence[int]) -> Any:
    """The packaged views for `batch_sizes`, warmed up (their load-time self-check made)."""
    from instantmesh.zero123plus.networks.ahead_of_time import PackageUnavailable

    sized = load.for_batch_sizes(batch_sizes)
    try:
        pipeline = views_from_bundle(
            load.files.zero123plus, load.files.whitebg_unet, ahead, load.dtype, sized.row_counts(), load.phases
        )
        if pipeline is None:
            raise CompiledUnusable("the build left no valid views bundle")
        sized.warm_up(pipeline)
    except (PackageUnavailable, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, CompiledUnusable):
            raise
        raise CompiledUnusable(f"the compiled views do not run: {type(exc).__name__}: {exc}") from exc
    return pipeline


def check_against_eager(eager: Any, compiled: Any, view_size: int) -> int:
    """The largest 8-bit difference between the two on a short run of a white image; raises `CompiledUnusable`
    when it is over `CHECK_TOLERANCE`."""
    from PIL import Image

    white = Image.new("RGB", (view_size, view_size), (255, 255, 255))
    grids = []
    for pipeline in (eager, compiled):
        with torch.inference_mode():
            (grid,) = pipeline.generate_batch(
                [white],
                [torch.Generator("cpu").manual_seed(CHECK_SEED)],
                num_inference_steps=WARMUP_STEPS,
                guidance_scale=DEFAULT_GUIDANCE,
                width=2 * view_size,
                height=3 * view_size,
                output_type="pil",
            )
        if isinstance(grid, BaseException):
            raise CompiledUnusable(f"the check run failed: {type(grid).__name__}: {grid}")
        grids.append(np.asarray(grid, dtype=np.int16))
    difference = int(np.abs(grids[0] - grids[1]).max())
    if difference > CHECK_TOLERANCE:
        raise CompiledUnusable(
            f"the compiled views differ from eager by {difference} of 255 (at most {CHECK_TOLERANCE} allowed)"
        )
    return difference


def switch_to_compiled(pipeline: Any, compiled: Any) -> Any:
    """Requests run on `compiled` (networks) from now on: `pipeline`, the one they ran, uses them
    (``Zero123PlusPipeline.use``); returns the networks it ran until now, for the caller to drop. The one place
    the switch is made; call it between requests only (the session's switch job), never during one."""
    return pipeline.use(compiled)


def compiled_views(
    load: ViewsLoad, ahead: Any, batch_sizes: Sequence[int], eager: Any, synchronize: Callable[[], None]
) -> tuple[Any, int]:
    """The compiled networks for `batch_sizes`, loaded and checked against `eager` (the pipeline requests run), and
    the check's largest difference; raises `CompiledUnusable` with the reason."""
    start = time.perf_counter()
    compiled = load_compiled(load, ahead, batch_sizes)
    difference = check_against_eager(eager, compiled, load.files.view_size)
    synchronize()
    load.phases[SWITCH_PHASE] = time.perf_counter() - start
    return compiled.networks, difference
