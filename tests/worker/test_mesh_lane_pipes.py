"""The mesh lane (``--mesh-lane on``), over real pipes with the mock worker under Python 3.10: a reconstruct
runs beside a long generate_views, its reply still waits for the earlier request, and map's objects come out
as without the lane. What ran when is read from the worker itself (progress, ``status``), never from clocks."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from host import InstantMeshWorker
from rpcworker.wire.errors import Cancelled, InternalError, OutOfMemory
from rpcworker.wire.messages import STEPS_RANGE, GenerateViewsParams, ImagePath, ReconstructParams, ViewsHandle
from tests.worker.in_flight import most_in_flight

pytestmark = pytest.mark.pipe

LANE_ARGS = ("--mesh-lane", "on")
DELAY = "step_delay=0.02"
STEPS = 4
WAIT_S = 30


def _views(image: Path, steps: int = STEPS) -> GenerateViewsParams:
    return GenerateViewsParams(ImagePath(str(image)), num_inference_steps=steps)


def _long_views(client, object_png: Path):
    """A generate_views of the most steps, started (its first progress seen) before returning."""
    started = threading.Event()
    call = client.request(
        "generate_views",
        _views(object_png, STEPS_RANGE[1]),
        on_progress=lambda p: started.set() if p.stage == "diffusion" else None,
    )
    assert started.wait(WAIT_S), "the long generate_views never started"
    return call


def test_a_reconstruct_runs_beside_a_long_generate_views_and_answers_after_it(
    mock_client, object_png: Path, tmp_path: Path
) -> None:
    client = mock_client(DELAY, extra=LANE_ARGS)
    client.load()
    handle = client.generate_views(_views(object_png)).handle
    long = _long_views(client, object_png)
    meshed = threading.Event()
    mesh = client.request(
        "reconstruct",
        ReconstructParams(ViewsHandle(handle), str(tmp_path / "m.ply")),
        on_progress=lambda p: meshed.set() if p.stage == "reconstruct" and p.message == "mesh" else None,
    )
    assert meshed.wait(WAIT_S), "the reconstruct did not run beside the generate_views"
    status = client.status()
    assert status.mesh_lane and status.busy == "generate_views" and status.batch == [long.id]
    assert not long.done and not mesh.done  # its reply waits for the earlier request's
    long.cancel()
    with pytest.raises(Cancelled):
        long.result(WAIT_S)
    assert mesh.result(WAIT_S).num_faces > 0 and (tmp_path / "m.ply").is_file()


def test_status_names_the_reconstruct_on_the_lane(mock_client, object_png: Path, tmp_path: Path) -> None:
    client = mock_client(f"{DELAY},reconstruct_delay=60", extra=LANE_ARGS)
    client.load()
    handle = client.generate_views(_views(object_png)).handle
    long = _long_views(client, object_png)
    planes = threading.Event()
    mesh = client.request(
        "reconstruct",
        ReconstructParams(ViewsHandle(handle), str(tmp_path / "m.obj")),
        on_progress=lambda p: planes.set() if p.stage == "reconstruct" else None,
    )
    assert planes.wait(WAIT_S)
    assert client.status().reconstructing == [mesh.id]
    mesh.cancel()
    long.cancel()
    for call in (mesh, long):
        with pytest.raises(Cancelled):
            call.result(WAIT_S)
    assert not (tmp_path / "m.obj").exists()
    assert client.status().reconstructing == []


def test_before_both_models_are_loaded_a_reconstruct_waits_its_turn(
    mock_client, object_png: Path, tmp_path: Path
) -> None:
    client = mock_client(DELAY, extra=LANE_ARGS)
    handle = client.generate_views(_views(object_png)).handle  # loads views only
    client.unload(["mesh"])
    long = _long_views(client, object_png)
    mesh = client.request("reconstruct", ReconstructParams(ViewsHandle(handle), str(tmp_path / "m.ply")))
    assert client.status().queued == 1  # it would load the LRM beside the diffusion: it waits on the executor
    long.cancel()
    with pytest.raises(Cancelled):
        long.result(WAIT_S)
    assert mesh.result(WAIT_S).num_faces > 0


@pytest.mark.parametrize(
    ("misbehave", "error"), [("fail_once=reconstruct", InternalError), ("oom_once=reconstruct", OutOfMemory)]
)
def test_a_reconstruct_failing_on_the_lane_fails_alone(
    mock_client, object_png: Path, tmp_path: Path, misbehave: str, error: type
) -> None:
    client = mock_client(f"{DELAY},{misbehave}", extra=LANE_ARGS)
    client.load()
    handle = client.generate_views(_views(object_png)).handle
    long = _long_views(client, object_png)
    failed = client.request("reconstruct", ReconstructParams(ViewsHandle(handle), str(tmp_path / "bad.ply")))
    good = client.request("reconstruct", ReconstructParams(ViewsHandle(handle), str(tmp_path / "good.ply")))
    assert client.status().busy == "generate_views"
    long.cancel()
    with pytest.raises(Cancelled):
        long.result(WAIT_S)
    with pytest.raises(error):
        failed.result(WAIT_S)
    assert good.result(WAIT_S).num_faces > 0 and not (tmp_path / "bad.ply").exists()
    assert client.ping().pong and client.status().loaded == ["views", "mesh"]


def test_the_lane_is_off_by_default_on_the_mock(mock_client) -> None:
    assert not mock_client().status().mesh_lane


def test_map_through_the_lane_gives_what_it_gives_without(
    worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    images = [object_png] * 7
    images[3] = tmp_path / "missing.png"
    meshes = {}
    for lane in ("on", "off"):
        args = ("--mock", DELAY, "--max-batch", "2", "--mesh-lane", lane)
        with InstantMeshWorker(str(worker_python), backend="mock", worker_args=args) as worker:
            assert worker.client.status().mesh_lane == (lane == "on")
            outcomes = list(worker.map(images, tmp_path / lane, format="ply", num_inference_steps=STEPS))
        assert [o.index for o in outcomes] == list(range(7)) and outcomes[3].error_code == "input_not_found"
        meshes[lane] = [Path(o.mesh.path).read_bytes() if o.ok else None for o in outcomes]
    assert meshes["on"] == meshes["off"]


@pytest.mark.parametrize(("lane", "handles", "most"), [("on", None, 6), ("off", None, 4), ("on", "4", 4)])
def test_map_keeps_a_third_batch_in_flight_beside_the_lane(
    worker_python: Path, object_png: Path, tmp_path: Path, lane: str, handles: str | None, most: int
) -> None:
    """With the lane, the batch reconstructing there answers after the running one, so map keeps one more queued;
    never more than the worker keeps views for (its default grows to three batches)."""
    args = ("--mock", DELAY, "--max-batch", "2", "--mesh-lane", lane, *(("--max-handles", handles) if handles else ()))
    with InstantMeshWorker(str(worker_python), backend="mock", worker_args=args) as worker:
        seen, outcomes = most_in_flight(worker, [object_png] * 10, tmp_path / "out", num_inference_steps=STEPS)
        assert seen == most and all(o.ok for o in outcomes)
        assert worker.client.status().handles <= worker.client.status().max_handles
