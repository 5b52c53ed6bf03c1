"""The CUDA default's views against eager float16 on the same weights, seed and input: within 2 of 0..255 at every
pixel of the grid, at the production 75 steps (a difference that grows along the steps shows there).

The default is channels_last convolutions and every network an AOTInductor package run as a CUDA graph, the step as
its two passes side by side (docs/benchmarks.md, 'One object on the fast path'); eager is the same backend with no
option, as `benchmarks.fast_path` compares them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .checks import (
    DEVICE,
    GUIDANCE,
    MAX_LSB,
    SEED,
    STEPS,
    assert_every_network_packaged,
    differences,
    max_abs_diff,
    pixels,
)

pytestmark = pytest.mark.gpu

DISTINCT_VALUES = 16
"""Fewer distinct values than this in a grid: blank views, which any two paths would agree on."""


@pytest.fixture(scope="module")
def eager_backend(model_files: Any, gpu_cache: Path) -> Iterator[Any]:
    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.instantmesh import InstantMeshBackend

    backend = InstantMeshBackend(model_files, DEVICE, optimizations=())
    backend.load(["views"], SilentContext())
    yield backend
    backend.unload(["views"])


def test_the_compiled_views_are_within_2_lsb_of_eager(
    compiled_backend: Any, compiled_grid: np.ndarray, eager_backend: Any, object_pngs: list[Path], record_property: Any
) -> None:
    from PIL import Image

    from instantmesh.zero123plus.networks.eager import EagerNetworks
    from rpcworker.backends.base import SilentContext

    assert_every_network_packaged(compiled_backend._pipeline)
    assert isinstance(eager_backend._pipeline.networks, EagerNetworks) and eager_backend.optimizations == ()
    with Image.open(object_pngs[0]) as image:
        eager = pixels(eager_backend.generate_views(image, SEED, STEPS, GUIDANCE, SilentContext()).grid)
    assert len(np.unique(eager)) >= DISTINCT_VALUES, "eager made blank views"
    record_property("max_abs_diff", max_abs_diff(compiled_grid, eager))
    assert max_abs_diff(compiled_grid, eager) <= MAX_LSB, differences(compiled_grid, eager)
