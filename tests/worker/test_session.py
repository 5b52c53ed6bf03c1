"""The host's RpcSession against the worker's WorkerSession in one process, over the in-memory pair."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from host.worker.errors import HostError, WorkerCrashed
from host.worker.session import RpcSession
from rpcworker.backends.mock import MockBackend, MockOptions
from rpcworker.session import WorkerSession, serve_stream
from rpcworker.wire.errors import Cancelled, InvalidParams, NotInitialized
from rpcworker.wire.memory import MemoryPipe, stream_pair
from rpcworker.wire.messages import PROTOCOL_VERSION, GenerateViewsParams, ImagePath, InitializeParams, ProgressParams

DEADLINE_S = 30.0


@dataclass
class Pair:
    host: RpcSession
    worker: WorkerSession
    to_worker: MemoryPipe
    to_host: MemoryPipe


@pytest.fixture()
def pair() -> Iterator[Pair]:
    host_stream, worker_stream, to_worker, to_host = stream_pair()
    worker = WorkerSession(MockBackend(MockOptions(view_size=16, step_delay=0.01)), worker_stream)
    threading.Thread(target=serve_stream, args=(worker,), kwargs={"grace_s": 5}, daemon=True).start()
    host = RpcSession(host_stream, lambda: WorkerCrashed("the in-memory worker ended", 0, ""))
    yield Pair(host, worker, to_worker, to_host)
    to_worker.close()
    host.close()


def test_a_request_before_initialize_gets_not_initialized_whatever_its_params(pair: Pair) -> None:
    with pytest.raises(NotInitialized):
        pair.host.call("generate_views", InitializeParams("x"), timeout=DEADLINE_S)
    with pytest.raises(NotInitialized):
        pair.host.call("no_such_method", timeout=DEADLINE_S)


def test_initialize_generate_with_progress_and_range_errors(pair: Pair, object_png: Path) -> None:
    info = pair.host.call("initialize", InitializeParams(PROTOCOL_VERSION, "memory"), timeout=DEADLINE_S)
    assert info.protocol_version == PROTOCOL_VERSION
    steps: list[int] = []
    last_step = threading.Event()

    def on_progress(progress: ProgressParams) -> None:
        if progress.stage == "diffusion":
            steps.append(progress.step)
            if progress.step == progress.total:
                last_step.set()

    result = pair.host.call(
        "generate_views",
        GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=3),
        timeout=DEADLINE_S,
        on_progress=on_progress,
    )
    assert result.grid_width == 32 and result.seed == 42
    with pytest.raises(InvalidParams, match=r"\$\.params\.num_inference_steps"):
        pair.host.call(
            "generate_views", GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=0), timeout=DEADLINE_S
        )
    assert pair.host.call("status", timeout=DEADLINE_S).requests_served == 2  # refused requests are not served
    assert last_step.wait(DEADLINE_S), "progress callbacks run on their own thread, in order"
    assert steps == [1, 2, 3]


def test_cancel_and_end_of_stream(pair: Pair, object_png: Path) -> None:
    pair.host.call("initialize", InitializeParams(PROTOCOL_VERSION), timeout=DEADLINE_S)
    call = pair.host.request(
        "generate_views", GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=1000)
    )
    call.cancel()
    with pytest.raises(Cancelled):
        call.result(DEADLINE_S)
    pending = pair.host.request(
        "generate_views", GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=1000)
    )
    pair.to_worker.close()  # EOF: the worker cancels its work and ends its output
    with pytest.raises((Cancelled, HostError)):
        pending.result(DEADLINE_S)
