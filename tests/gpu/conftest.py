"""The GPU tests: the CUDA fast path held to its promises on full-size random weights (marker ``gpu``).

Every test here is skipped, with the reason, where torch is missing, where it sees no CUDA device, or where
``INSTANTMESH_GPU_WEIGHTS`` names no folder (a ``python -m benchmarks.make_weights DIR`` folder); collecting them
imports no torch. ``bash benchmarks/gpu_tests.sh`` runs them on the device machine in one call.

What costs minutes is made once per session, in the order the tests run (`RUN_ORDER`): the compiled backend (the
worker's CUDA default at one batch size: on an empty cache its load builds every package, 3 to 7 minutes), its
views, then a worker started through the host on the same cache (the second start). The batch test builds a second
batch size's step and runs last, so that a run stopped by the device's time limit keeps the other results.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .checks import DEVICE, GUIDANCE, SEED, STEPS, compile_files, pixels

WEIGHTS_ENV = "INSTANTMESH_GPU_WEIGHTS"
"""A ``benchmarks.make_weights`` folder: the official layouts, full-size random values."""
CACHE_ENV = "INSTANTMESH_GPU_CACHE"
"""The worker's cache folder for the session (packages, views bundle, weight copies); unset: a new one. The device
script keeps one in /tmp, so that a later call on a machine still warm starts from its packages."""
HERE = Path(__file__).resolve().parent
RUN_ORDER = (
    "test_compiled_matches_eager",
    "test_overlapped_step",
    "test_second_start",
    "test_out_of_memory",
    "test_compile_behind",
    "test_batched_matches_alone",
)
"""Modules in the order they run: the first builds the packages the next four use (the fifth writes the views
bundle again); the last builds more."""
COMPILER_CACHE_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
"""Set in this process by the first start (`instantmesh.compile_cache.use_compile_cache`); a worker a person starts
has neither, so the second start's worker does not inherit them."""
WORKER_START_S = 120.0
"""The second start's handshake (spawn, imports); its models load in a request."""
WORKER_REQUEST_S = 300.0
"""Any request of the second start's worker: a load from the views bundle takes seconds, one that compiles minutes,
which the test of the second start would report anyway."""


@functools.cache
def why_not_here() -> str | None:
    """The reason the GPU tests cannot run in this process, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__})"
    weights = os.environ.get(WEIGHTS_ENV)
    if not weights:
        return f"{WEIGHTS_ENV} is not set (a `python -m benchmarks.make_weights DIR` folder; benchmarks/gpu_tests.sh sets it)"
    if not Path(weights, "zero123plus-v1.2").is_dir():
        return f"{WEIGHTS_ENV}={weights} is not a benchmarks.make_weights folder (no zero123plus-v1.2 in it)"
    return None


def _here(item: pytest.Item) -> bool:
    return HERE in item.path.parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Puts this folder's tests in `RUN_ORDER`, in the places they were collected in."""
    places = [i for i, item in enumerate(items) if _here(item)]
    ours = [items[i] for i in places]
    ours.sort(key=lambda item: RUN_ORDER.index(item.path.stem) if item.path.stem in RUN_ORDER else len(RUN_ORDER))
    for place, item in zip(places, ours, strict=True):
        items[place] = item


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skips before any fixture is made (they import torch and load models)."""
    reason = why_not_here()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def weights() -> Path:
    return Path(os.environ[WEIGHTS_ENV])


@pytest.fixture(scope="session")
def gpu_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cache folder of every backend and worker of the session (``INSTANTMESH_RPC_CACHE``)."""
    from rpcworker.wire.cache import ENV_CACHE

    path = Path(os.environ.get(CACHE_ENV) or tmp_path_factory.mktemp("gpu-cache"))
    path.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_CACHE, str(path))
        yield path


@pytest.fixture(scope="session")
def model_files(weights: Path) -> Any:
    from benchmarks.sessions import official_options
    from rpcworker.backends.model_files import resolve_model_files

    return resolve_model_files(official_options(weights))


@pytest.fixture(scope="session")
def object_pngs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two different objects, RGBA on a transparent background at the views' size (the benchmarks' own)."""
    from benchmarks.common import synthetic_object

    folder = tmp_path_factory.mktemp("objects")
    return [synthetic_object(folder / f"object{index}.png", index) for index in range(2)]


@pytest.fixture(scope="session")
def compiled_backend(model_files: Any, gpu_cache: Path) -> Iterator[Any]:
    """The backend as the worker makes it on CUDA without options (channels_last, every network a package, the step's
    passes side by side), compiled for one object, its views loaded (in-process, ``load`` builds them: at-load)."""
    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.instantmesh import InstantMeshBackend

    backend = InstantMeshBackend(model_files, DEVICE, max_batch=1)
    backend.load(["views"], SilentContext())
    yield backend
    backend.unload(["views"])


@pytest.fixture(scope="session")
def compiled_grid(compiled_backend: Any, object_pngs: list[Path]) -> np.ndarray:
    """The first object's views by the compiled backend, seed 42 at 75 steps: what eager and the second start are
    held to."""
    from PIL import Image

    from rpcworker.backends.base import SilentContext

    with Image.open(object_pngs[0]) as image:
        views = compiled_backend.generate_views(image, SEED, STEPS, GUIDANCE, SilentContext())
    return pixels(views.grid)


@dataclass
class SecondStart:
    """A worker started through the host on the cache the compiled backend filled, both models loaded."""

    worker: Any
    compiled_before: dict[str, tuple[int, int]]
    """The compile folders' files (`compile_files`) before the worker started."""
    load_messages: list[str]
    stderr: list[str]


@pytest.fixture(scope="session")
def second_start(compiled_backend: Any, weights: Path, gpu_cache: Path) -> Iterator[SecondStart]:
    """``python -m rpcworker --device cuda --max-batch 1`` (the compiled backend's batch sizes), as the host starts it."""
    from benchmarks.sessions import official_worker_keywords
    from host import InstantMeshWorker

    compiled_before = compile_files(gpu_cache)
    stderr: list[str] = []
    worker = InstantMeshWorker(
        sys.executable,
        device=DEVICE,
        max_batch=1,
        startup_timeout=WORKER_START_S,
        request_timeout=WORKER_REQUEST_S,
        auto_restart=False,  # a crash is an error here, not a restart
        on_stderr=stderr.append,
        **official_worker_keywords(weights),
    )
    with pytest.MonkeyPatch.context() as patch:
        for name in COMPILER_CACHE_ENV:
            patch.delenv(name, raising=False)
        worker.start()
    try:
        messages: list[str] = []
        worker.load(on_progress=lambda progress: messages.append(progress.message))
        yield SecondStart(worker, compiled_before, messages, stderr)
    finally:
        worker.close()
