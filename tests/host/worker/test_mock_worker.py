"""The host (this interpreter, 3.11) driving the mock worker (Python 3.10) over real pipes.

Fault cases (crashes, hangs, garbage, host death, OOM, start failures) live in tests/faults/."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest

from host import InstantMeshWorker
from host.worker.client import WorkerClient
from host.worker.process import WorkerCommand
from rpcworker.wire.errors import (
    Cancelled,
    HandleExpired,
    InputNotFound,
    InputUnreadable,
    InvalidParams,
    MethodNotFound,
    ModelNotLoaded,
    OutputRefused,
    VersionMismatch,
)
from rpcworker.wire.messages import (
    PROTOCOL_VERSION,
    GenerateViewsParams,
    ImagePath,
    InitializeParams,
    ReconstructParams,
    ViewsHandle,
)

pytestmark = pytest.mark.pipe


def views_params(image: Path, **kw) -> GenerateViewsParams:
    return GenerateViewsParams(ImagePath(str(image)), **kw)


def test_handshake_reports_the_worker_environment(mock_client) -> None:
    client = mock_client()
    info = client.info
    assert info.python.startswith("3.10."), "the pipe suite must run the worker under Python 3.10"
    assert sys.version_info[:2] != (3, 10) or os.environ.get("CI_ALLOW_SAME_PYTHON")
    assert info.backend == "mock" and info.protocol_version == PROTOCOL_VERSION and info.pid == client.process.pid
    assert client.ping().pong


def test_views_then_meshes_from_one_handle(mock_client, object_png: Path, tmp_path: Path) -> None:
    client = mock_client()
    grid = tmp_path / "out" / "grid.png"
    views = client.generate_views(views_params(object_png, num_inference_steps=5, output_path=str(grid)))
    assert grid.exists() and views.grid_path == str(grid) and views.weights == "mock"
    assert (views.grid_width, views.grid_height, views.view_size) == (640, 960, 320)
    for fmt in ("obj", "glb", "ply"):
        mesh = client.reconstruct(ReconstructParams(ViewsHandle(views.handle), str(tmp_path / f"m.{fmt}")))
        assert (
            mesh.format == fmt
            and mesh.weights == "mock"
            and mesh.num_faces > 0
            and Path(mesh.mesh_path).stat().st_size > 0
        )
    assert client.status().handles == 1 and client.status().weights == "mock"


def test_python_api_end_to_end(worker_python: Path, object_png: Path, tmp_path: Path) -> None:
    with InstantMeshWorker(str(worker_python), backend="mock") as worker:
        mesh = worker.image_to_mesh(object_png, tmp_path / "m.obj", save_grid=tmp_path / "g.png", num_inference_steps=3)
        assert mesh.path == str(tmp_path / "m.obj") and "mock" in mesh.model_label
        again = worker.reconstruct(tmp_path / "g.png", tmp_path / "from_grid.ply")
        assert again.num_vertices == mesh.num_vertices
        pid = worker.client.process.pid
    assert not _alive(pid)


def test_progress_arrives_in_order(mock_client, object_png: Path) -> None:
    client = mock_client()
    seen = []
    client.generate_views(
        views_params(object_png, num_inference_steps=12), on_progress=lambda p: seen.append((p.stage, p.step, p.total))
    )
    assert seen[0] == ("load", 1, 1), "the first call loads the views model and says so"
    assert seen[1:] == [("diffusion", i, 12) for i in range(1, 13)]


def test_ping_and_status_answer_while_a_model_call_runs(mock_client, object_png: Path) -> None:
    client = mock_client("step_delay=0.05")
    stepping = threading.Event()
    pending = client.request(
        "generate_views",
        views_params(object_png, num_inference_steps=400),
        on_progress=lambda p: stepping.set() if p.stage == "diffusion" else None,
    )
    assert stepping.wait(30), "the model call never started"
    assert client.ping().pong
    # Still busy after the ping was answered: the ping overtook the model call rather than waiting for it.
    assert client.status().busy == "generate_views" and not pending.done
    pending.cancel()
    with pytest.raises(Cancelled):
        pending.result(5)


def test_concurrent_requests_from_threads(mock_client, object_png: Path, tmp_path: Path) -> None:
    client = mock_client()
    errors: list[BaseException] = []
    results: list[int] = []

    def work(n: int) -> None:
        try:
            v = client.generate_views(views_params(object_png, num_inference_steps=2, seed=n))
            m = client.reconstruct(ReconstructParams(ViewsHandle(v.handle), str(tmp_path / f"{n}.obj")))
            for _ in range(20):
                client.ping()
            results.append(m.num_faces)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 8
    assert len(list(tmp_path.glob("*.obj"))) == 8


def test_queued_request_can_be_cancelled_before_it_starts(mock_client, object_png: Path) -> None:
    client = mock_client("step_delay=0.02")
    first = client.request("generate_views", views_params(object_png, num_inference_steps=20))
    second = client.request("generate_views", views_params(object_png, num_inference_steps=20))
    second.cancel()
    assert first.result(10).handle
    with pytest.raises(Cancelled):
        second.result(10)


def test_errors_come_back_with_codes_and_the_worker_survives(mock_client, object_png: Path, tmp_path: Path) -> None:
    client = mock_client()
    with pytest.raises(MethodNotFound, match="frobnicate"):
        client.call("frobnicate", timeout=5)
    with pytest.raises(InvalidParams, match=r"\$\.params\.image"):
        client.call("generate_views", msgspec.Raw(b'{"image": 5}'), timeout=5)
    with pytest.raises(InvalidParams, match="num_inference_steps"):
        client.generate_views(views_params(object_png, num_inference_steps=0))
    with pytest.raises(InputNotFound) as missing:
        client.generate_views(views_params(tmp_path / "nope.png"))
    assert missing.value.data["path"] == str(tmp_path / "nope.png")
    with pytest.raises(InputUnreadable, match="directory"):
        client.generate_views(views_params(tmp_path))
    with pytest.raises(HandleExpired):
        client.reconstruct(ReconstructParams(ViewsHandle("views-0-1"), str(tmp_path / "m.obj")))
    with pytest.raises(InvalidParams, match="format"):
        client.reconstruct(ReconstructParams(ViewsHandle("views-0-1"), str(tmp_path / "m.stl")))
    existing = tmp_path / "keep.obj"
    existing.write_text("precious")
    v = client.generate_views(views_params(object_png, num_inference_steps=1))
    with pytest.raises(OutputRefused, match="exists"):
        client.reconstruct(ReconstructParams(ViewsHandle(v.handle), str(existing)))
    assert existing.read_text() == "precious"
    assert client.ping().pong and client.process.alive


def test_version_mismatch_is_refused(worker_python: Path) -> None:
    client = WorkerClient(WorkerCommand.python(worker_python), ["--backend", "mock"])
    client.start()
    try:
        with pytest.raises(VersionMismatch, match="2.0"):
            client.call("initialize", InitializeParams("2.0"), timeout=5)
    finally:
        client.close()


def test_model_not_loaded_when_loading_is_required(mock_client, object_png: Path) -> None:
    client = mock_client("require_load=1")
    with pytest.raises(ModelNotLoaded, match="views"):
        client.generate_views(views_params(object_png, num_inference_steps=1))
    loaded = client.load(["views"])
    assert loaded.loaded == ["views"] and "views" in loaded.load_seconds
    assert client.generate_views(views_params(object_png, num_inference_steps=1)).handle
    assert client.unload(["views"]).unloaded == ["views"]


def test_worker_writing_to_stdout_and_fd1_does_not_corrupt_the_stream(mock_client, object_png: Path) -> None:
    client = mock_client("noisy=1")
    client.generate_views(views_params(object_png, num_inference_steps=2))
    # stderr is drained by its own thread: wait (with a generous deadline) until the last line is there.
    deadline = time.monotonic() + 30
    while "mock C printf: generate_views done" not in client.process.stderr_tail() and time.monotonic() < deadline:
        time.sleep(0.02)
    tail = client.process.stderr_tail()
    for text in ("mock print", "mock fd1 write", "mock C printf"):
        assert text in tail


def test_shutdown_leaves_no_process(mock_client) -> None:
    client = mock_client()
    pid = client.process.pid
    assert client.close() == 0
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
