"""Back-pressure in the worker: the bytes of inline images held by queued requests are bounded, and a request
past the bound is refused busy at once (the worker's session over the in-memory pair)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.worker.errors import WorkerCrashed
from host.worker.session import PendingCall, RpcSession
from rpcworker.backends.mock import MockBackend, MockOptions
from rpcworker.options import parse_worker_options
from rpcworker.queued_inputs import DEFAULT_MAX_QUEUED_INLINE_MIB, QueuedInlineBytes, inline_bytes
from rpcworker.session import WorkerSession, serve_stream
from rpcworker.wire.errors import Cancelled, WorkerBusy
from rpcworker.wire.memory import stream_pair
from rpcworker.wire.messages import (
    PROTOCOL_VERSION,
    GenerateViewsParams,
    ImagePath,
    ImagePng,
    InitializeParams,
    ProgressParams,
    ReconstructParams,
    ViewsGridPng,
    ViewsHandle,
)

DEADLINE_S = 30.0
LIMIT = 3 * 1000
"""The bound of the in-memory worker: room for three of the test's images (each IMAGE_BYTES long)."""
IMAGE_BYTES = 1000


def test_the_bound_refuses_past_its_limit_admits_one_alone_and_frees_bytes_on_release() -> None:
    """A request whose bytes would pass the limit is refused (busy, with size, queued and limit, counting
    nothing); one alone is admitted whatever its size; released bytes make room again; size 0 always passes."""
    bound = QueuedInlineBytes(100)
    bound.admit("generate_views", 250)  # alone: admitted, larger than the limit
    with pytest.raises(WorkerBusy) as refused:
        bound.admit("generate_views", 1)
    assert refused.value.data == {"method": "generate_views", "size": 1, "queued": 250, "limit": 100}
    assert "\n" not in str(refused.value) and "--max-queued-inline-mib" in str(refused.value)
    bound.admit("generate_views", 0)
    assert bound.queued == 250
    bound.release(250)
    bound.admit("generate_views", 60)
    bound.admit("generate_views", 40)
    with pytest.raises(WorkerBusy):
        bound.admit("reconstruct", 1)
    with pytest.raises(ValueError, match="at least 1"):
        QueuedInlineBytes(0)


def test_inline_bytes_counts_png_and_grid_png_only() -> None:
    """Inline images count their bytes; paths and handles count nothing."""
    assert inline_bytes(GenerateViewsParams(ImagePng(b"x" * 7))) == 7
    assert inline_bytes(GenerateViewsParams(ImagePath("/a.png"))) == 0
    assert inline_bytes(ReconstructParams(ViewsGridPng(b"x" * 5), "/m.obj")) == 5
    assert inline_bytes(ReconstructParams(ViewsHandle("views-1-1"), "/m.obj")) == 0


def test_the_flag_sets_the_bound_in_mib_and_refuses_zero_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """--max-queued-inline-mib defaults to the named constant; 0 ends the worker with one stderr line."""
    assert parse_worker_options([]).max_queued_inline_mib == DEFAULT_MAX_QUEUED_INLINE_MIB
    assert parse_worker_options(["--max-queued-inline-mib", "8"]).max_queued_inline_mib == 8
    with pytest.raises(SystemExit):
        parse_worker_options(["--max-queued-inline-mib", "0"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-queued-inline-mib" in err and "at least 1" in err


@pytest.fixture()
def host() -> Iterator[RpcSession]:
    """An initialized in-memory worker (mock, 0.01 s a step) whose bound is LIMIT bytes."""
    host_stream, worker_stream, to_worker, _ = stream_pair()
    worker = WorkerSession(
        MockBackend(MockOptions(view_size=16, step_delay=0.01)), worker_stream, max_queued_inline_bytes=LIMIT
    )
    threading.Thread(target=serve_stream, args=(worker,), kwargs={"grace_s": 5}, daemon=True).start()
    session = RpcSession(host_stream, lambda: WorkerCrashed("the in-memory worker ended", 0, ""))
    info = session.call("initialize", InitializeParams(PROTOCOL_VERSION), timeout=DEADLINE_S)
    assert info.max_queued_inline_bytes == LIMIT
    yield session
    to_worker.close()
    session.close()


def running_slowly(host: RpcSession, object_png: Path) -> PendingCall:
    """A long generate_views, returned once it runs (its first diffusion step reported): the queue is behind it."""
    started = threading.Event()

    def on_progress(progress: ProgressParams) -> None:
        if progress.stage == "diffusion":
            started.set()

    call = host.request(
        "generate_views", GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=1000), on_progress
    )
    assert started.wait(DEADLINE_S)
    return call


def test_inline_requests_queued_past_the_bound_are_refused_at_once_and_paths_never(
    host: RpcSession, object_png: Path
) -> None:
    """Behind a running request, inline requests are queued up to the bound and the rest refused busy at once
    (while the first still runs), with the figures in data; a path request is queued whatever the bytes; status
    reports the bytes queued; once the queue moves, a refused request sent again succeeds."""
    slow = running_slowly(host, object_png)
    image = object_png.read_bytes()
    padded = image + b"\0" * (IMAGE_BYTES - len(image))  # PNG readers stop at IEND: the padding is ignored
    calls = [
        host.request("generate_views", GenerateViewsParams(ImagePng(padded), num_inference_steps=1)) for _ in range(5)
    ]
    refused = calls[3:]
    for call in refused:
        with pytest.raises(WorkerBusy) as busy:
            call.result(DEADLINE_S)
        assert busy.value.data == {
            "method": "generate_views",
            "size": IMAGE_BYTES,
            "queued": 3 * IMAGE_BYTES,
            "limit": LIMIT,
        }
    assert not slow.done, "refusals come at once, while the running request goes on"
    by_path = host.request("generate_views", GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=1))
    status = host.call("status", timeout=DEADLINE_S)
    assert status.queued == 4 and status.queued_inline_bytes == 3 * IMAGE_BYTES
    slow.cancel()
    with pytest.raises(Cancelled):
        slow.result(DEADLINE_S)
    for call in (*calls[:3], by_path):
        assert call.result(DEADLINE_S).grid_width == 32
    again = host.call(
        "generate_views", GenerateViewsParams(ImagePng(padded), num_inference_steps=1), timeout=DEADLINE_S
    )
    assert again.grid_width == 32
    assert host.call("status", timeout=DEADLINE_S).queued_inline_bytes == 0


def test_a_cancelled_queued_request_frees_its_bytes_when_it_leaves_the_queue(
    host: RpcSession, object_png: Path
) -> None:
    """Queued requests cancelled before they run still hold their bytes until the executor answers them
    cancelled; then the bound has room again."""
    slow = running_slowly(host, object_png)
    image = object_png.read_bytes()
    queued = [
        host.request("generate_views", GenerateViewsParams(ImagePng(image), num_inference_steps=1)) for _ in range(2)
    ]
    assert host.call("status", timeout=DEADLINE_S).queued_inline_bytes == 2 * len(image)
    for call in (*queued, slow):
        call.cancel()
    for call in (slow, *queued):
        with pytest.raises(Cancelled):
            call.result(DEADLINE_S)
    assert host.call("status", timeout=DEADLINE_S).queued_inline_bytes == 0
