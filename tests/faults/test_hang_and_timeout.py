"""The worker hangs or is slow: requests time out, stuck workers are replaced, later requests succeed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from host.worker.errors import RequestTimeout, WorkerCrashed
from rpcworker.wire.messages import GenerateViewsParams, ImagePath, ReconstructParams, ViewsGridPath

from .conftest import wait_gone

pytestmark = pytest.mark.faults


def views_params(image: Path, **kw) -> GenerateViewsParams:
    return GenerateViewsParams(ImagePath(str(image)), **kw)


def test_timeout_cancels_and_the_worker_keeps_serving(mock_client, object_png: Path) -> None:
    """A slow (but cancellable) request times out: RequestTimeout well before the request could have ended
    (a generous deadline, never a tight threshold), the cancel stops it, the same worker serves the next
    request, status is not left busy, and once the cancel watcher has finished the worker is still alive."""
    client = mock_client("step_delay=0.05", cancel_grace=2.0)
    pid = client.process.pid
    start = time.perf_counter()
    with pytest.raises(RequestTimeout, match="generate_views"):
        client.generate_views(views_params(object_png, num_inference_steps=200), timeout=0.3)
    assert time.perf_counter() - start < 8.0, "200 steps of 0.05 s take 10 s: the call must end at its timeout"
    assert client.generate_views(views_params(object_png, num_inference_steps=1)).handle
    assert client.status().busy is None
    for watcher in [t for t in threading.enumerate() if t.name.startswith("cancel-watch-")]:
        watcher.join(30)  # it ends once the call was answered (or it killed the worker)
        assert not watcher.is_alive()
    assert client.process.pid == pid and client.process.alive
    assert client._session.unknown_responses == 0, "the late `cancelled` answer must match its call"


def test_hung_worker_times_out_is_restarted_and_later_requests_succeed(
    mock_client, object_png: Path, tmp_path: Path
) -> None:
    """A request that hangs without ever checking cancel (mock hang_on=reconstruct) times out; once the
    cancel grace passes the host kills the stuck worker (calls queued behind it fail with WorkerCrashed
    saying why) and the next calls run on a fresh worker."""
    client = mock_client("hang_on=reconstruct", auto_restart=True, cancel_grace=1.0)
    grid = tmp_path / "grid.png"
    client.generate_views(views_params(object_png, num_inference_steps=1, output_path=str(grid)))
    stuck_pid = client.process.pid
    start = time.monotonic()
    hung = client.request("reconstruct", ReconstructParams(ViewsGridPath(str(grid)), str(tmp_path / "m.obj")))
    behind = client.request("generate_views", views_params(object_png, num_inference_steps=1))
    with pytest.raises(RequestTimeout):
        hung.result(0.5)
    assert time.monotonic() - start < 1.5
    assert client.ping().pong, "the reader thread answers while the executor is stuck"
    with pytest.raises(WorkerCrashed, match="did not stop within 1 s of its cancel"):
        behind.result(10)
    assert wait_gone(stuck_pid, 2.0)
    assert time.monotonic() - start < 4.0
    views = client.generate_views(views_params(object_png, num_inference_steps=1))
    assert client.process.pid != stuck_pid and client.generation == 2 and views.handle
    assert client.status().busy is None
