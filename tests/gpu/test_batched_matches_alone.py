"""Objects diffused together, at a batch size the worker compiles, each come out as they do alone: within 2 of
0..255 at every pixel, at 75 steps.

A worker with ``--max-batch 2`` compiles the step for one object and for two (a batch runs at a compiled size, never
compiling in a request); alone, an object runs through the one-object step. Building the two-object step takes
minutes on a cache without it, so this test runs last and ``-k "not batch"`` leaves it out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

BATCH = 2


@pytest.fixture(scope="module")
def batching_backend(model_files: Any, gpu_cache: Path) -> Iterator[Any]:
    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.instantmesh import InstantMeshBackend

    backend = InstantMeshBackend(model_files, DEVICE, max_batch=BATCH)
    backend.load(["views"], SilentContext())
    yield backend
    backend.unload(["views"])


def test_a_batch_of_two_is_within_2_lsb_of_each_object_alone(
    batching_backend: Any, object_pngs: list[Path], record_property: Any
) -> None:
    from PIL import Image

    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.views_compile import ROWS_PER_OBJECT

    pipeline = batching_backend._pipeline
    assert_every_network_packaged(pipeline)
    assert pipeline.networks.batched.row_counts == [ROWS_PER_OBJECT, ROWS_PER_OBJECT * BATCH]
    images = [Image.open(path) for path in object_pngs[:BATCH]]
    seeds = [SEED + index for index in range(BATCH)]
    together = batching_backend.generate_views_batch(images, seeds, STEPS, GUIDANCE, [SilentContext()] * BATCH)
    for index, (image, seed, batched) in enumerate(zip(images, seeds, together, strict=True)):
        assert not isinstance(batched, BaseException), f"object {index} left the batch: {batched!r}"
        alone = pixels(batching_backend.generate_views(image, seed, STEPS, GUIDANCE, SilentContext()).grid)
        got = pixels(batched.grid)
        record_property(f"max_abs_diff_object_{index}", max_abs_diff(got, alone))
        assert max_abs_diff(got, alone) <= MAX_LSB, f"object {index}: {differences(got, alone)}"
