"""The switch to compiled views behind eager serving, on the GPU: a worker that finds no views bundle answers its
first request eagerly while its build process waits (the test holds the machine's build lock, as another build
would), then, with the lock free, builds nothing (the packages are the compiled backend's), writes the bundle and
switches between requests: eager answers are all the same views, within 2 of the compiled ones, and from one
request on every answer is the compiled backend's views bit for bit."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .checks import DEVICE, GUIDANCE, MAX_LSB, SEED, STEPS, differences, pixels
from .conftest import WORKER_REQUEST_S, WORKER_START_S

pytestmark = pytest.mark.gpu

SWITCH_DEADLINE_S = 240.0
"""From the lock's release to the switch: the build process loads the modules and the packages (nothing to
compile) and writes the bundle; the worker loads it and checks it between two requests."""


def test_the_views_switch_to_compiled_between_requests(
    compiled_backend: Any,
    compiled_grid: np.ndarray,
    object_pngs: list[Path],
    gpu_cache: Path,
    weights: Path,
    tmp_path: Path,
) -> None:
    from benchmarks.sessions import official_worker_keywords
    from host import InstantMeshWorker
    from instantmesh.zero123plus.networks.bundle import MANIFEST_NAME
    from rpcworker.backends.views_compile import build_lock_path

    manifests = list(gpu_cache.glob(f"compile-*/packages/{MANIFEST_NAME}"))
    assert manifests, "the compiled backend left no views bundle"
    for manifest in manifests:  # the packages stay: the build only loads them and writes the bundle again
        manifest.unlink()
    lock = os.open(build_lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    stderr: list[str] = []
    worker = InstantMeshWorker(
        sys.executable,
        device=DEVICE,
        max_batch=1,
        startup_timeout=WORKER_START_S,
        request_timeout=WORKER_REQUEST_S,
        auto_restart=False,
        on_stderr=stderr.append,
        **official_worker_keywords(weights),
    )
    answers: list[tuple[bool, np.ndarray]] = []

    def views() -> None:
        grid = tmp_path / f"grid{len(answers)}.png"
        result = worker.generate_views(
            object_pngs[0],
            seed=SEED,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            save_grid=grid,
            prepare=False,  # the compiled backend got the file's pixels as they are
        )
        answers.append((result.timings["compiled"] == 1.0, pixels(grid)))

    try:
        worker.start()
        worker.load()
        status = worker.status().compile
        assert status is not None and status.state == "waiting", status
        views()
        assert not answers[0][0], "the first answer ran compiled while the build could not have ended"
        os.close(lock)
        lock = -1
        end = time.monotonic() + SWITCH_DEADLINE_S
        while (status := worker.status().compile) is not None and status.state not in ("ready", "failed"):
            assert time.monotonic() < end, f"no switch after {SWITCH_DEADLINE_S:g} s: {status}"
            views()
        views()
        log = "\n".join(stderr[-40:])
        assert status is not None and status.state == "ready" and status.built == 0, f"{status}\n{log}"
    finally:
        if lock >= 0:
            os.close(lock)
        worker.close()
    flags = [compiled for compiled, _ in answers]
    assert flags == sorted(flags) and flags[-1], flags
    eager = [grid for compiled, grid in answers if not compiled]
    assert all(np.array_equal(grid, eager[0]) for grid in eager)
    assert np.abs(eager[0] - compiled_grid).max() <= MAX_LSB, differences(eager[0], compiled_grid)
    for compiled, grid in answers:
        if compiled:
            assert np.array_equal(grid, compiled_grid), differences(grid, compiled_grid)
