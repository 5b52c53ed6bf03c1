"""The worker writes garbage on the protocol stream: the host skips it, counts it, and keeps working."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from host.worker.client import WorkerClient
from host.worker.errors import WorkerCrashed
from host.worker.process import WorkerCommand
from rpcworker.wire.errors import RpcError
from tests.conftest import ROOT
from tests.faults.garbage_worker import GARBAGE

pytestmark = pytest.mark.faults


def garbage_client(worker_python: Path, *args: str) -> WorkerClient:
    command = WorkerCommand.python(worker_python)
    command.module = "tests.faults.garbage_worker"
    command.worker_code = str(ROOT)  # the checkout on the worker's path: the staged code holds no tests
    client = WorkerClient(command, list(args), startup_timeout=30)
    client.start()
    return client


# What each kind of garbage must do to the session's counters: bad frames or unknown responses.
COUNTED = {
    "not_json": "bad_frames",
    "invalid_utf8": "bad_frames",
    "partial_line": "bad_frames",
    "deep_nesting": "bad_frames",
    "empty_line": "bad_frames",
    "huge": "bad_frames",
    "unknown_id": "unknown_responses",
    "string_id": "unknown_responses",
    "null_id_error": None,
    "stray_progress": None,
    "bad_progress": None,
}


@pytest.mark.parametrize("mode", sorted(COUNTED))
def test_host_skips_one_kind_of_garbage(worker_python: Path, mode: str) -> None:
    """Before every answer the worker writes one kind of garbage (not JSON, invalid UTF-8, a partial
    line, 200k-deep nesting, an empty line, a line over 64 MiB, a response with an unknown id, an
    untied error, stray/malformed progress): each ping still gets its answer, within 10 s."""
    assert mode in GARBAGE or mode == "huge"
    client = garbage_client(worker_python, "--mode", mode)
    try:
        start = time.monotonic()
        for _ in range(2):
            assert client.ping(timeout=30).pong
        assert time.monotonic() - start < 10
        counter = COUNTED[mode]
        if counter is not None:
            assert getattr(client._session, counter) == 2
        assert client.alive
    finally:
        client.close()


def test_all_garbage_at_once_then_a_partial_frame_and_exit(worker_python: Path) -> None:
    """Every kind of garbage plus a huge line before one answer; then the worker writes half a frame and
    exits 5: the waiting call fails with WorkerCrashed carrying exit code 5."""
    client = garbage_client(worker_python, "--huge")
    try:
        assert client.ping(timeout=30).pong
        session = client._session
        assert session.bad_frames >= 3 and session.unknown_responses >= 1
        with pytest.raises(WorkerCrashed) as crash:
            client.call("partial_then_exit", timeout=10)
        assert crash.value.exit_code == 5
    finally:
        client.close()


def test_response_with_a_wrong_result_shape_is_an_error_not_a_crash(worker_python: Path) -> None:
    """A response on the right id whose result has the wrong shape raises RpcError naming the method."""
    client = garbage_client(worker_python, "--mode", "bad_result")
    try:
        with pytest.raises(RpcError, match="invalid ping result"):
            client.ping(timeout=10)
        with pytest.raises(RpcError, match="invalid ping result"):
            client.ping(timeout=10)
        assert client.alive
    finally:
        client.close()
