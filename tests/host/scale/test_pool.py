"""WorkerPool over three mock workers on real pipes: parallelism, handle affinity, a worker killed mid-request,
shutdown without orphans, split mode, and the refusals of impossible configurations."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from host.scale.object_steps import PoolViews
from host.scale.pool import WorkerPool
from host.worker.cancellation import Cancellation
from rpcworker.wire.errors import Cancelled, InputNotFound
from rpcworker.wire.messages import ProgressParams
from tests.faults.conftest import process_alive, wait_gone

pytestmark = pytest.mark.pool

STEPS = 10
STEP_DELAY = 0.1
VIEWS_SECONDS = STEPS * STEP_DELAY
"""Seconds each mock generate_views sleeps: a lower bound no scheduling can shrink."""


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_map_runs_objects_on_every_worker_at_once(make_pool, object_png: Path, tmp_path: Path) -> None:
    """Nine objects over three workers finish in less wall time than their views alone sleep end to end
    (9 x 1 s), which only overlap can do, and every worker took objects."""
    pool = make_pool(f"step_delay={STEP_DELAY}", workers=3)
    began = time.monotonic()
    outcomes = list(pool.map([object_png] * 9, tmp_path / "out", num_inference_steps=STEPS))
    wall = time.monotonic() - began
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert sorted(o.index for o in outcomes) == list(range(9))
    assert {o.worker for o in outcomes} == {"0", "1", "2"}
    assert wall < 9 * VIEWS_SECONDS, f"no overlap: {wall:.1f} s for {9 * VIEWS_SECONDS:.0f} s of serial sleeping"
    assert sorted(p.name for p in (tmp_path / "out").iterdir())[:3] == [
        "object-2.obj",
        "object-2_views.png",
        "object-3.obj",
    ]
    assert sum(s.requests_done for s in pool.status()) == 18


def test_views_go_back_to_the_worker_that_made_them(make_pool, object_png: Path, tmp_path: Path) -> None:
    """Views made concurrently land on different workers; reconstruct(views) of each succeeds, which it could
    not on any other worker (handles are per worker: another would answer handle_expired)."""
    pool = make_pool(f"step_delay={STEP_DELAY}", workers=3)
    views: list[PoolViews] = []
    lock = threading.Lock()

    def make() -> None:
        made = pool.generate_views(object_png, num_inference_steps=STEPS)
        with lock:
            views.append(made)

    threads = [threading.Thread(target=make) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(v.worker for v in views) == [0, 0, 1, 1, 2, 2]
    assert all(v.grid_path is None for v in views)
    for n, made in enumerate(reversed(views)):
        mesh = pool.reconstruct(made, tmp_path / f"m{n}.ply")
        assert mesh.num_faces > 0
    served = {s.index: s.requests_done for s in pool.status()}
    assert served == {0: 4, 1: 4, 2: 4}  # two views and two meshes each


def test_a_worker_killed_mid_request_costs_one_retry_elsewhere(make_pool, object_png: Path, tmp_path: Path) -> None:
    """SIGKILL of worker 1 while it makes views: that object is redone once on another worker, every other
    object is unaffected, worker 1 comes back with a new pid and takes work again."""
    pool = make_pool(f"step_delay={STEP_DELAY}", workers=3)
    first_pid = pool.status()[1].pid
    assert first_pid is not None
    results = []
    runner = threading.Thread(
        target=lambda: results.extend(pool.map([object_png] * 6, tmp_path / "out", num_inference_steps=STEPS))
    )
    runner.start()
    wait_until(
        lambda: pool.status()[1].worker is not None and pool.status()[1].worker.busy == "generate_views",
        30,
        "worker 1 busy",
    )
    os.kill(first_pid, signal.SIGKILL)
    runner.join(120)
    assert not runner.is_alive()
    assert all(o.ok for o in results), [o.error for o in results]
    retried = [o for o in results if o.attempts == 2]
    assert len(retried) == 1 and retried[0].worker != "1", results
    assert [o.attempts for o in results].count(1) == 5
    wait_until(lambda: pool.status()[1].pid is not None, 60, "worker 1 restarted")
    status = pool.status()[1]
    assert status.pid != first_pid and status.restarts == 1 and status.requests_lost == 1
    assert not process_alive(first_pid)
    again = pool.generate_views(object_png, num_inference_steps=1)
    assert again.handle


def test_object_errors_are_reported_not_retried(make_pool, object_png: Path, tmp_path: Path) -> None:
    """A missing input fails alone with its protocol code in the outcome; image_to_mesh raises it."""
    pool = make_pool(workers=2)
    missing = tmp_path / "nowhere.png"
    outcomes = sorted(
        pool.map([object_png, missing, object_png], tmp_path / "out", num_inference_steps=1), key=lambda o: o.index
    )
    assert [o.ok for o in outcomes] == [True, False, True]
    assert (
        outcomes[1].error_code == "input_not_found"
        and outcomes[1].attempts == 1
        and "nowhere.png" in (outcomes[1].error or "")
    )
    with pytest.raises(InputNotFound):
        pool.image_to_mesh(missing, tmp_path / "x.obj")
    assert sum(s.requests_lost for s in pool.status()) == 0


def test_close_during_a_map_stops_every_worker(make_pool, object_png: Path, tmp_path: Path) -> None:
    """Leaving a map early and closing the pool while requests run stops all workers (no orphan; the
    autouse check also looks for any tagged process)."""
    pool = make_pool(f"step_delay={STEP_DELAY}", workers=3)
    pids = [s.pid for s in pool.status()]
    for outcome in pool.map([object_png] * 12, tmp_path / "out", num_inference_steps=STEPS):
        assert outcome.ok
        break
    pool.close()
    for pid in pids:
        assert pid is not None and wait_gone(pid, 5.0), f"worker {pid} outlived the pool"
    assert all(s.pid is None for s in pool.status())


def test_split_mode_views_on_one_worker_meshes_on_another(make_pool, object_png: Path, tmp_path: Path) -> None:
    """split: views only on worker 0, meshes only on worker 1, the grid passed as a shared-memory file that
    is gone afterwards; diffusion of one object overlaps the mesh of the previous one (wall time below the
    serial sum of the mock's delays)."""
    pool = make_pool(
        f"step_delay={STEP_DELAY},reconstruct_delay={VIEWS_SECONDS}", split={"views": "cpu", "mesh": "cpu"}
    )
    pool.load()
    transfer_dir = Path(pool.transfer_dir or "")
    began = time.monotonic()
    outcomes = list(pool.map([object_png] * 6, tmp_path / "out", num_inference_steps=STEPS, save_grids=False))
    wall = time.monotonic() - began
    assert all(o.ok for o in outcomes) and {o.worker for o in outcomes} == {"0+1"}
    assert wall < 6 * 2 * VIEWS_SECONDS, f"no overlap: {wall:.1f} s"
    assert list(transfer_dir.iterdir()) == []
    views_worker, mesh_worker = pool.status()
    assert (views_worker.role, views_worker.worker.loaded) == ("views", ["views"])
    assert (mesh_worker.role, mesh_worker.worker.loaded) == ("mesh", ["mesh"])
    kept = pool.image_to_mesh(
        object_png, tmp_path / "kept.obj", save_grid=tmp_path / "kept_views.png", num_inference_steps=1
    )
    assert kept.num_faces > 0 and (tmp_path / "kept_views.png").is_file()
    pool.close()
    assert not transfer_dir.exists()


def test_impossible_configurations_are_refused_at_construction(
    worker_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clear one-line refusals before any worker starts."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="no GPU is visible"):
        WorkerPool(str(worker_python), backend="mock")
    with pytest.raises(ValueError, match="not devices and workers"):
        WorkerPool(str(worker_python), devices=["cuda:0"], workers=2)
    with pytest.raises(ValueError, match=r"missing required field `mesh` - at `\$.split`"):
        WorkerPool(str(worker_python), split={"views": "cuda:0"})
    with pytest.raises(ValueError, match=r"\$.devices\[0\]` \(a device is cpu, cuda or cuda:N\)"):
        WorkerPool(str(worker_python), devices=["gpu0"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with pytest.raises(ValueError, match="cuda:2 does not exist: 2 GPU"):
        WorkerPool(str(worker_python), devices=["cuda:2"])
    pinned = WorkerPool(str(worker_python), backend="mock")
    assert [s.worker.client.command.env["CUDA_VISIBLE_DEVICES"] for s in pinned._slots] == ["3", "5"]
    for slot in pinned._slots:
        args = slot.worker.client.worker_args
        assert args[args.index("--device") + 1] == "cuda"


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"workers": 2.5}, "got `float` - at `$.workers`"),
        ({"workers": 0}, "`int` >= 1 - at `$.workers`"),
        ({"workers": -3}, "`int` >= 1 - at `$.workers`"),
        ({"workers": True}, "got `bool` - at `$.workers`"),
        ({"devices": []}, "length >= 1 - at `$.devices`"),
        ({"devices": "cpu"}, "got `str` - at `$.devices`"),
        ({"split": {"views": [], "mesh": "cpu"}}, "length >= 1 - at `$.split.views`"),
        ({"split": {"views": "cpu", "mesh": "cpu", "extra": "cpu"}}, "unknown field `extra` - at `$.split`"),
        ({"workers": 2, "device": "cuda0"}, "at `$.device` (a device is cpu, cuda or cuda:N)"),
        ({"devices": ["cpu"], "cancel_grace": -1}, "`float` >= 0.0 - at `$.cancel_grace`"),
        ({"devices": ["cuda:7"]}, "device cuda:7 does not exist: 2 GPU(s) visible (0, 1)"),
        ({"split": {"views": "cuda:1", "mesh": ["cuda:0", "cuda:2"]}}, "device cuda:2 does not exist"),
    ],
)
def test_a_bad_pool_argument_is_one_line_at_construction(
    arguments: dict, named: str, worker_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused by the constructor, naming the argument (or the device), with no worker started."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ValueError) as refused:
        WorkerPool(str(worker_python), backend="mock", **arguments)
    assert named in str(refused.value) and "\n" not in str(refused.value), refused.value


def test_a_gpu_index_is_refused_when_no_gpu_is_visible(worker_python: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda:N with nothing visible used to start a worker pinned to a GPU that is not there."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match=r"^device cuda:0 does not exist: no GPU is visible"):
        WorkerPool(str(worker_python), backend="mock", devices=["cpu", "cuda:0"])


def test_a_cancelled_pool_call_writes_nothing_and_the_pool_goes_on(make_pool, object_png: Path, tmp_path: Path) -> None:
    """``cancellation=`` reaches the worker the call runs on; the pool's other worker serves the next call."""
    pool = make_pool(f"step_delay={STEP_DELAY}", workers=2)
    cancellation = Cancellation()

    def cancel_at_first_step(progress: ProgressParams) -> None:
        if progress.stage == "diffusion":
            cancellation.cancel()

    with pytest.raises(Cancelled):
        pool.image_to_mesh(
            object_png,
            tmp_path / "out" / "m.obj",
            num_inference_steps=STEPS,
            on_progress=cancel_at_first_step,
            cancellation=cancellation,
        )
    assert not (tmp_path / "out").exists()
    assert pool.image_to_mesh(object_png, tmp_path / "out" / "m.obj", num_inference_steps=2).num_faces > 0
