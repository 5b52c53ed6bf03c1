"""The switch to compiled views behind eager serving, on the GPU: a worker that finds no views bundle answers its
first request eagerly while its build process waits (the test holds the machine's build lock, as another build
would), then, with the lock free, builds nothing (the packages are the compiled backend's), writes the bundle and
switches between requests: eager answers are all the same views, within 2 of the compiled ones, and from one
request on every answer is the compiled backend's views bit for bit. A worker of a larger max batch that finds that
one-object bundle (a build that ended between its stages) serves compiled from its first request."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.build_lock import build_lock_held

from .checks import DEVICE, GUIDANCE, MAX_LSB, SEED, STEPS, differences, pixels
from .conftest import WORKER_REQUEST_S, WORKER_START_S

pytestmark = pytest.mark.gpu

SWITCH_DEADLINE_S = 240.0
"""From the lock's release to the switch: the build process loads the modules and the packages (nothing to
compile) and writes the bundle; the worker loads it and checks it between two requests."""


def official_worker(weights: Path, max_batch: int, stderr: list[str]) -> Any:
    """A worker on the official weights, as the host starts it on CUDA, not yet started."""
    from benchmarks.sessions import official_worker_keywords
    from host import InstantMeshWorker

    return InstantMeshWorker(
        sys.executable,
        device=DEVICE,
        max_batch=max_batch,
        startup_timeout=WORKER_START_S,
        request_timeout=WORKER_REQUEST_S,
        auto_restart=False,
        on_stderr=stderr.append,
        **official_worker_keywords(weights),
    )


def views(worker: Any, image: Path, grid: Path) -> tuple[bool, np.ndarray]:
    """One object's views at the compiled backend's settings: whether they ran compiled, and their pixels."""
    result = worker.generate_views(
        image,
        seed=SEED,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        save_grid=grid,
        prepare=False,  # the compiled backend got the file's pixels as they are
    )
    return result.timings["compiled"] == 1.0, pixels(grid)


def test_the_views_switch_to_compiled_between_requests(
    compiled_backend: Any,
    compiled_grid: np.ndarray,
    object_pngs: list[Path],
    gpu_cache: Path,
    weights: Path,
    tmp_path: Path,
) -> None:
    from instantmesh.zero123plus.networks.bundle import MANIFEST_NAME

    manifests = list(gpu_cache.glob(f"compile-*/packages/{MANIFEST_NAME}"))
    assert manifests, "the compiled backend left no views bundle"
    for manifest in manifests:  # the packages stay: the build only loads them and writes the bundle again
        manifest.unlink()
    stderr: list[str] = []
    worker = official_worker(weights, 1, stderr)
    answers: list[tuple[bool, np.ndarray]] = []

    def answer() -> None:
        answers.append(views(worker, object_pngs[0], tmp_path / f"grid{len(answers)}.png"))

    try:
        with build_lock_held() as release:
            worker.start()
            worker.load()
            status = worker.status().compile
            assert status is not None and status.state == "waiting", status
            answer()
            assert not answers[0][0], "the first answer ran compiled while the build could not have ended"
            release()
            end = time.monotonic() + SWITCH_DEADLINE_S
            while (status := worker.status().compile) is not None and status.state not in ("ready", "failed"):
                assert time.monotonic() < end, f"no switch after {SWITCH_DEADLINE_S:g} s: {status}"
                answer()
        answer()
        log = "\n".join(stderr[-40:])
        assert status is not None and status.state == "ready" and status.built == 0, f"{status}\n{log}"
    finally:
        worker.close()
    flags = [compiled for compiled, _ in answers]
    assert flags == sorted(flags) and flags[-1], flags
    eager = [grid for compiled, grid in answers if not compiled]
    assert all(np.array_equal(grid, eager[0]) for grid in eager)
    assert np.abs(eager[0] - compiled_grid).max() <= MAX_LSB, differences(eager[0], compiled_grid)
    for compiled, grid in answers:
        if compiled:
            assert np.array_equal(grid, compiled_grid), differences(grid, compiled_grid)


def test_a_larger_max_batch_serves_one_object_compiled_from_its_bundle_at_once(
    compiled_grid: np.ndarray, object_pngs: list[Path], weights: Path, tmp_path: Path
) -> None:
    """The one-object bundle the switch wrote, found by a worker of max batch 2: its first answer is compiled and
    the compiled backend's views bit for bit, while the two-object step's build waits for the lock (the test closes
    the worker before it builds: the batch test builds that step in-process)."""
    stderr: list[str] = []
    worker = official_worker(weights, 2, stderr)
    with build_lock_held():  # held until the worker is closed: its build never starts
        try:
            worker.start()
            worker.load()
            status = worker.status().compile
            log = "\n".join(stderr[-40:])
            assert status is not None and status.state == "waiting" and status.batch_sizes == [1], f"{status}\n{log}"
            compiled, grid = views(worker, object_pngs[0], tmp_path / "grid.png")
        finally:
            worker.close()
    assert compiled, "a request of one object ran eagerly beside the one-object bundle"
    assert np.array_equal(grid, compiled_grid), differences(grid, compiled_grid)
