"""The pool against a worker whose bound on queued inline images is low: busy refusals are waited out, never failures."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from host.api.inputs import png_bytes

pytestmark = pytest.mark.pool

CALLERS = 12
"""Threads calling the pool's generate_views at once, on one worker."""
SIDE = 320
"""Noise images of this side: about 300 KiB of PNG each, so the worker's 1 MiB bound holds three."""


def test_many_threads_sending_inline_images_to_one_pool_worker_all_get_their_views(
    worker_python: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Twelve threads call generate_views with inline images on a one-worker pool that queues three: the worker
    refuses some busy, the pool sends them again as its other requests end, and every call gets its views."""
    from host.scale.pool import WorkerPool

    rng = np.random.default_rng(3)
    images = [png_bytes(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)) for _ in range(CALLERS)]
    with (
        caplog.at_level(logging.DEBUG, logger="host.scale.pool"),
        WorkerPool(
            str(worker_python),
            backend="mock",
            workers=1,
            prepare=False,
            startup_timeout=60,
            worker_args=["--mock", "view_size=32,step_delay=0.05", "--max-queued-inline-mib", "1"],
        ) as pool,
    ):
        with ThreadPoolExecutor(CALLERS) as callers:
            views = list(callers.map(lambda image: pool.generate_views(image, num_inference_steps=3), images))
        (status,) = pool.status()
    assert len(views) == CALLERS and all(v.handle for v in views)
    assert status.requests_lost == 0 and status.requests_done == CALLERS
    assert any("refused" in r.getMessage() for r in caplog.records), "the worker refused nothing: no bound reached"
