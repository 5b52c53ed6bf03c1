"""Serve at once, compile behind, on the real tiny backend over pipes (CPU, packages without CUDA graphs, through the
tests' switch INSTANTMESH_RPC_PACKAGES_ON_CPU): a worker with nothing built answers eagerly while its build process
waits for the machine's build lock or builds; a killed build leaves it eager with one line saying why; two builds
on one cache compile each package once; the switch comes between requests; after ``prepare`` a start finds all built;
a start that finds one object's packages alone runs them at once.

The test holds the machine's build lock itself to keep a build from starting (what it would find if another
process built), so what a worker does before its build ends is seen without racing it. One real build (five
packages, minutes on two cores) serves the whole module."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from host import InstantMeshWorker
from host.api.build_ahead import build_compiled_views
from instantmesh.zero123plus.networks.ahead_of_time import ahead_of_time_available
from rpcworker.backends.compile_build import packages_per_stage
from rpcworker.backends.views_behind import BEHIND_NICENESS
from rpcworker.backends.views_compile import ENV_PACKAGES_ON_CPU
from rpcworker.wire.cache import ENV_CACHE
from rpcworker.wire.messages import CompileStatus
from tests.build_lock import build_lock_held
from tests.conftest import MODELS_PYTHON

pytestmark = [
    pytest.mark.models,
    pytest.mark.upstream,
    pytest.mark.skipif(not ahead_of_time_available(), reason="this torch has no AOTInductor packages"),
]
COMPILE = "channels_last,compile"
STEPS = 2
SEED = 5
BUILD_DEADLINE_S = 1800.0
"""A build of the tiny preset's five packages takes minutes on two busy cores."""
POLL_S = 0.2
MAX_NICENESS = 19


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache of this module's own (nothing built in it yet), with the packages allowed on the CPU."""
    root = tmp_path_factory.mktemp("compile-behind-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_CACHE, str(root))
        patch.setenv(ENV_PACKAGES_ON_CPU, "1")
        yield root


def tiny_worker(*extra: str, max_batch: int = 1) -> InstantMeshWorker:
    return InstantMeshWorker(
        str(MODELS_PYTHON),
        preset="tiny",
        device="cpu",
        max_batch=max_batch,
        worker_args=["--optimize", COMPILE, *extra],
        prepare=False,
        startup_timeout=120,
    )


def compile_status(worker: InstantMeshWorker) -> CompileStatus:
    status = worker.status().compile
    assert status is not None
    return status


def wait_for_status(
    worker: InstantMeshWorker, accept: Callable[[CompileStatus], bool], deadline_s: float = BUILD_DEADLINE_S
) -> CompileStatus:
    """Polls status until `accept` takes the compiled views' status (a condition, not a guess of time)."""
    end = time.monotonic() + deadline_s
    while not accept(status := compile_status(worker)):
        assert time.monotonic() < end, f"still {status} after {deadline_s:g} s"
        threading.Event().wait(POLL_S)
    return status


def wait_for_state(worker: InstantMeshWorker, *states: str, deadline_s: float = BUILD_DEADLINE_S) -> CompileStatus:
    return wait_for_status(worker, lambda status: status.state in states, deadline_s)


GRIDS = itertools.count()


def views(worker: InstantMeshWorker, image: Path) -> tuple[bool, np.ndarray]:
    """Whether the request ran compiled, and its grid (saved beside the input)."""
    grid = image.parent / f"grid-{next(GRIDS)}.png"
    result = worker.generate_views(image, seed=SEED, num_inference_steps=STEPS, save_grid=grid)
    with Image.open(grid) as saved:
        pixels = np.asarray(saved.convert("RGB"), dtype=np.int16)
    grid.unlink()
    return result.timings["compiled"] == 1.0, pixels


def build_process(worker: InstantMeshWorker) -> int:
    """The worker's one child process: its build."""
    pid = worker.info.pid
    children = [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]
    assert len(children) == 1, children
    return children[0]


def test_a_worker_answers_eagerly_at_once_and_a_killed_build_leaves_it_eager(cache: Path, object_png: Path) -> None:
    """...and its build runs at a lower CPU priority than the requests."""
    with build_lock_held(), tiny_worker() as worker:
        worker.load(["views"])
        assert compile_status(worker).state == "waiting"  # the lock is ours: no build can have ended
        wait_for_status(worker, lambda status: status.message.startswith("another process builds"), deadline_s=120)
        niceness = [os.getpriority(os.PRIO_PROCESS, pid) for pid in (worker.info.pid, build_process(worker))]
        assert niceness[1] == min(niceness[0] + BEHIND_NICENESS, MAX_NICENESS), niceness  # it yields the cores
        compiled, first = views(worker, object_png)
        assert not compiled and compile_status(worker).state == "waiting"
        os.kill(build_process(worker), signal.SIGKILL)
        failed = wait_for_state(worker, "failed", deadline_s=60)
        assert failed.message == "the build process was killed by SIGKILL before it finished"
        assert failed.batch_sizes == [] and "\n" not in failed.message
        compiled, again = views(worker, object_png)
        assert not compiled and np.array_equal(again, first) and compile_status(worker).state == "failed"


def test_one_build_per_machine_switched_to_between_requests_and_found_by_the_next_start(
    cache: Path, object_png: Path
) -> None:
    """A serving worker and ``prepare`` start their builds while the lock is held; once it is free one builds every
    package and the other loads them (built 0). The worker, kept busy meanwhile, answers eagerly until a request
    ends and then compiled: no request is half of each, and eager answers are all the same views."""
    prepared: list[CompileStatus | BaseException] = []

    def prepare() -> None:
        try:
            prepared.append(
                build_compiled_views(
                    str(MODELS_PYTHON), device="cpu", max_batch=1, preset="tiny", optimize=COMPILE, startup_timeout=120
                )
            )
        except BaseException as exc:  # handed to the test's thread
            prepared.append(exc)

    with tiny_worker() as worker:
        with build_lock_held() as release:
            worker.load(["views"])
            compiled, eager = views(worker, object_png)
            assert not compiled and compile_status(worker).state == "waiting"
            preparing = threading.Thread(target=prepare)
            preparing.start()
            release()
            answers = []
            while compile_status(worker).state not in ("ready", "failed"):
                answers.append(views(worker, object_png))
                assert len(answers) < 100_000
            answers.append(views(worker, object_png))
        preparing.join(BUILD_DEADLINE_S)
        status = compile_status(worker)
        assert status.state == "ready" and status.batch_sizes == [1], status
        flags = [ran_compiled for ran_compiled, _ in answers]
        assert flags == sorted(flags) and flags[-1], flags  # eager, then compiled from one request on
        assert all(np.array_equal(grid, eager) for ran_compiled, grid in answers if not ran_compiled)
        assert all(np.abs(grid - eager).max() <= 1 for _, grid in answers)
    (other,) = prepared
    assert isinstance(other, CompileStatus), other
    assert other.state == "ready" and other.batch_sizes == [1]
    assert sorted([status.built, other.built]) == [0, packages_per_stage([1])]  # each package compiled once
    with tiny_worker() as later:
        later.load(["views"])
        found = compile_status(later)
        assert found.state == "ready" and found.built == 0 and found.batch_sizes == [1]
        compiled, grid = views(later, object_png)
        assert compiled and np.abs(grid - eager).max() <= 1


def test_a_start_finding_one_objects_packages_alone_runs_them_at_once_and_builds_the_rest(
    cache: Path, object_png: Path
) -> None:
    """The machine holds the compiled views for one object alone (an earlier build ended between its stages): a
    worker of max batch 2 starts from them, compiled at once, while its build waits for the full batch's turn."""
    prepared = build_compiled_views(
        str(MODELS_PYTHON), device="cpu", max_batch=1, preset="tiny", optimize=COMPILE, startup_timeout=120
    )
    assert prepared.state == "ready" and prepared.batch_sizes == [1]
    with build_lock_held(), tiny_worker(max_batch=2) as worker:
        worker.load(["views"])
        status = compile_status(worker)
        assert status.state == "waiting" and status.batch_sizes == [1], status
        compiled, _ = views(worker, object_png)
        assert compiled and compile_status(worker).batch_sizes == [1]


def test_at_load_without_compile_is_refused_at_start(cache: Path) -> None:
    from host import WorkerStartError

    worker = InstantMeshWorker(
        str(MODELS_PYTHON), preset="tiny", device="cpu", worker_args=["--compile-build", "at-load"], prepare=False
    )
    with pytest.raises(WorkerStartError, match="needs the optimization 'compile'"):
        worker.start()
    worker.close()
