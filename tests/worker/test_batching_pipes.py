"""Dynamic batching of queued generate_views requests, over real pipes with the mock worker under Python 3.10.

Requests are made to queue up behind a long "blocker" request (other steps, so it cannot join them);
cancelling the blocker lets the queued ones start together. That they ran together is read from the
worker itself (``status().batch`` while they run, ``timings["batch_size"]`` in each result), never from
wall-clock thresholds.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from host import InstantMeshWorker
from host.api.facade import Views
from host.worker.client import WorkerClient
from host.worker.errors import WorkerStartError
from host.worker.process import WorkerCommand
from rpcworker.wire.errors import Cancelled, InputNotFound
from rpcworker.wire.messages import STEPS_RANGE, GenerateViewsParams, ImagePath
from tests.worker.in_flight import most_in_flight

pytestmark = pytest.mark.pipe

BATCH_ARGS = ("--max-batch", "4", "--batch-wait-ms", "0")
BLOCKER_STEPS = STEPS_RANGE[1]
DELAY = "step_delay=0.02"
"""Every test's mock steps take a while, so the blocker is still running when the others are sent."""
STEPS = 4


def views_params(image: Path, **kw) -> GenerateViewsParams:
    return GenerateViewsParams(ImagePath(str(image)), num_inference_steps=kw.pop("num_inference_steps", STEPS), **kw)


def _queue_behind_blocker(client: WorkerClient, object_png: Path, params: list[GenerateViewsParams], on_progress=None):
    """Sends ``params`` while a blocker runs, checks they are all queued, then cancels the blocker."""
    started = threading.Event()
    blocker = client.request(
        "generate_views",
        views_params(object_png, num_inference_steps=BLOCKER_STEPS),
        on_progress=lambda p: started.set() if p.stage == "diffusion" else None,
    )
    assert started.wait(30), "the blocker never started"
    pending = [client.request("generate_views", p, on_progress=on_progress) for p in params]
    # status is read after the requests above (one pipe, read in order), so they are queued by now.
    assert client.status().queued == len(params)
    blocker.cancel()
    with pytest.raises(Cancelled):
        blocker.result(30)
    return pending


def _grid(path: str) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_queued_compatible_requests_run_as_one_batch_with_the_results_they_get_alone(
    mock_client, object_png: Path, tmp_path: Path
) -> None:
    client = mock_client(DELAY, extra=BATCH_ARGS)
    alone = client.generate_views(views_params(object_png, seed=7, output_path=str(tmp_path / "alone.png")))
    assert alone.timings["batch_size"] == 1
    seeds = [3, 5, 7]  # the object of the alone run sits last in the batch
    pending = _queue_behind_blocker(
        client, object_png, [views_params(object_png, seed=s, output_path=str(tmp_path / f"b{s}.png")) for s in seeds]
    )
    results = [p.result(30) for p in pending]
    assert [r.timings["batch_size"] for r in results] == [3, 3, 3]
    assert [r.seed for r in results] == seeds
    assert np.array_equal(_grid(results[2].grid_path), _grid(alone.grid_path))
    assert not np.array_equal(_grid(results[0].grid_path), _grid(results[2].grid_path)), "each object has its own noise"
    assert len({r.handle for r in results}) == 3


def test_status_reports_the_running_batch_and_progress_comes_per_request(mock_client, object_png: Path) -> None:
    client = mock_client(DELAY, extra=BATCH_ARGS)
    steps = 50
    progress: dict[object, list[int]] = {}
    first_step = threading.Event()
    status_seen: list[object] = []

    def on_progress(p) -> None:
        if p.stage == "diffusion":
            progress.setdefault(p.id, []).append(p.step)
            first_step.set()

    pending = _queue_behind_blocker(
        client, object_png, [views_params(object_png, seed=s, num_inference_steps=steps) for s in range(3)], on_progress
    )
    assert first_step.wait(30)
    status = client.status()
    status_seen.extend(status.batch)
    for p in pending:
        p.result(30)
    assert status.max_batch == 4 and status.busy == "generate_views"
    assert sorted(status_seen, key=str) == sorted((p.id for p in pending), key=str)
    assert dict(progress.items()) == {p.id: list(range(1, steps + 1)) for p in pending}
    assert client.status().batch == []


def test_incompatible_requests_do_not_join_and_replies_keep_their_order(mock_client, object_png: Path) -> None:
    client = mock_client(DELAY, extra=BATCH_ARGS)
    params = [
        views_params(object_png, seed=1),
        views_params(object_png, seed=2),
        views_params(object_png, seed=3, guidance_scale=2.0),
        views_params(object_png, seed=4),
    ]
    pending = _queue_behind_blocker(client, object_png, params)
    results = []
    for p in pending:
        results.append(p.result(30))
    assert [r.timings["batch_size"] for r in results] == [2, 2, 1, 1]
    assert [r.seed for r in results] == [1, 2, 3, 4]


def test_one_bad_input_fails_alone_before_the_batch_starts(mock_client, object_png: Path, tmp_path: Path) -> None:
    client = mock_client(DELAY, extra=BATCH_ARGS)
    missing = tmp_path / "missing.png"
    pending = _queue_behind_blocker(
        client,
        object_png,
        [views_params(object_png, seed=1), views_params(missing, seed=2), views_params(object_png, seed=3)],
    )
    first, bad, last = pending
    with pytest.raises(InputNotFound):
        bad.result(30)
    assert [first.result(30).timings["batch_size"], last.result(30).timings["batch_size"]] == [2, 2]
    assert client.ping().pong and client.process.alive


def test_cancelling_one_object_leaves_the_others_in_the_batch(mock_client, object_png: Path) -> None:
    client = mock_client(DELAY, extra=BATCH_ARGS)
    steps = 60
    stepping = threading.Event()
    progress: dict[object, list[int]] = {}

    def on_progress(p) -> None:
        if p.stage == "diffusion":
            progress.setdefault(p.id, []).append(p.step)
            if p.step >= 2:
                stepping.set()

    pending = _queue_behind_blocker(
        client, object_png, [views_params(object_png, seed=s, num_inference_steps=steps) for s in range(3)], on_progress
    )
    assert stepping.wait(30), "the batch never started stepping"
    assert len(client.status().batch) == 3
    pending[1].cancel()
    with pytest.raises(Cancelled):
        pending[1].result(30)
    kept = [pending[0].result(30), pending[2].result(30)]
    assert [r.timings["batch_size"] for r in kept] == [3, 3]
    assert progress[pending[0].id] == list(range(1, steps + 1)) == progress[pending[2].id]
    assert progress[pending[1].id][-1] < steps


def test_one_at_a_time_by_default(mock_client, object_png: Path) -> None:
    client = mock_client(DELAY)
    pending = _queue_behind_blocker(client, object_png, [views_params(object_png, seed=s) for s in range(3)])
    assert [p.result(30).timings["batch_size"] for p in pending] == [1, 1, 1]
    assert client.status().max_batch == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--backend", "mock", "--max-batch", "0"), "--max-batch: must be at least 1, got 0"),
        (("--backend", "mock", "--max-batch", "65"), "--max-batch: must be at most 64, got 65"),
        (("--backend", "mock", "--batch-wait-ms", "nan"), "--batch-wait-ms: must be 0..1000 ms, got nan"),
    ],
)
def test_bad_batching_options_are_refused_at_start_in_one_line(
    worker_python: Path, args: tuple[str, ...], words: str
) -> None:
    with pytest.raises(WorkerStartError, match="rpcworker") as info:
        WorkerClient(WorkerCommand.python(worker_python), list(args), startup_timeout=30).start()
    assert words in str(info.value) and info.value.exit_code == 2


def test_the_python_api_sends_many_objects_at_once_so_they_batch(
    worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    # The wait (the longest allowed) only has to cover sending four requests down one pipe.
    args = ("--mock", DELAY, "--max-batch", "4", "--batch-wait-ms", "1000")
    with InstantMeshWorker(str(worker_python), backend="mock", worker_args=args) as worker:
        alone = worker.generate_views(object_png, seed=9, num_inference_steps=STEPS, save_grid=tmp_path / "alone.png")
        images = [object_png, tmp_path / "missing.png", object_png, object_png]
        outcomes = worker.generate_views_many(
            images, seeds=[1, 2, 9, 4], num_inference_steps=STEPS, save_grids=[tmp_path / f"{i}.png" for i in range(4)]
        )
        assert isinstance(outcomes[1], InputNotFound)
        good = [outcomes[i] for i in (0, 2, 3)]
        assert all(isinstance(v, Views) for v in good)
        assert [v.timings["batch_size"] for v in good] == [3, 3, 3] and [v.seed for v in good] == [1, 9, 4]
        assert alone.timings["batch_size"] == 1 and np.array_equal(_grid(good[1].grid_path), _grid(alone.grid_path))
        with pytest.raises(ValueError, match="as many seeds"):
            worker.generate_views_many(images, seeds=[1])


def test_map_keeps_batches_full_and_yields_every_object_in_order(
    worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    args = ("--mock", DELAY, "--max-batch", "4", "--batch-wait-ms", "1000")
    images = [object_png] * 10
    images[5] = tmp_path / "missing.png"
    with InstantMeshWorker(str(worker_python), backend="mock", worker_args=args) as worker:
        outcomes = list(
            worker.map(
                images, tmp_path / "out", format="ply", num_inference_steps=STEPS, names=[f"o{i}" for i in range(10)]
            )
        )
        assert [o.index for o in outcomes] == list(range(10))
        assert outcomes[5].error_code == "input_not_found" and not outcomes[5].ok
        good = [o for o in outcomes if o.ok]
        assert all(Path(o.mesh.path).is_file() and o.grid_path and Path(o.grid_path).is_file() for o in good)
        # Views went out a batch at a time: 4, then 4 less the bad input, then the last two.
        assert [o.views_timings.get("batch_size") for o in outcomes] == [4, 4, 4, 4, 3, None, 3, 3, 2, 2]
        alone = worker.generate_views(object_png, num_inference_steps=STEPS, save_grid=tmp_path / "alone.png")
        assert np.array_equal(_grid(outcomes[0].grid_path), _grid(alone.grid_path))


def test_leaving_a_map_early_cancels_what_is_in_flight(worker_python: Path, object_png: Path, tmp_path: Path) -> None:
    args = ("--mock", DELAY, "--max-batch", "2")
    with InstantMeshWorker(str(worker_python), backend="mock", worker_args=args) as worker:
        objects = worker.map([object_png] * 8, tmp_path / "out", num_inference_steps=STEPS)
        first = next(objects)
        objects.close()
        assert first.ok and first.index == 0
        assert worker.client.status().queued <= 4  # nothing new was sent; the rest are being cancelled
        mesh = worker.image_to_mesh(object_png, tmp_path / "after.obj", num_inference_steps=STEPS)
        assert mesh.num_faces > 0
        assert len(list((tmp_path / "out").glob("*.obj"))) <= 4  # the window: objects 5..8 were never sent


def test_a_long_map_never_loses_views_to_eviction(worker_python: Path, object_png: Path, tmp_path: Path) -> None:
    """Many more objects than the worker keeps views for, batches running while the next is queued: every
    object's views survive until its reconstruct (the host counts each object until its mesh is written)."""
    args = ("--mock", DELAY, "--max-batch", "2", "--max-handles", "4")
    with InstantMeshWorker(str(worker_python), backend="mock", worker_args=args) as worker:
        most, outcomes = most_in_flight(worker, [object_png] * 12, tmp_path / "out", num_inference_steps=STEPS)
        assert [o.error for o in outcomes] == [None] * 12
        assert most == 4  # never more objects in flight than the worker keeps views for
        assert worker.client.status().handles <= 4
