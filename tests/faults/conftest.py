"""Fixtures for the fault suite: raw-pipe workers, a per-test orphan check, a hard per-test deadline.

Every process a test starts (workers, host scripts and their workers) inherits a per-test tag in its
environment; after the test, no process carrying the tag may still be alive. That is how "no orphan
process" is checked for every case, not only the ones about process death.
"""

from __future__ import annotations

import faulthandler
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.conftest import ROOT, WORKER_PYTHON

TAG_VAR = "INSTANTMESH_RPC_FAULT_TAG"
TEST_DEADLINE_S = 150
"""A test still running after this is dumped and the run aborted, so CI can never hang."""

_json = msgspec.json.Decoder()


def tagged_pids(tag: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``tag``; pytest itself excluded."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            if process_alive(int(entry)):
                found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def process_alive(pid: int) -> bool:
    """True for a running process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_exited(process, timeout: float) -> bool:
    """Until the kernel reports the worker exited: /proc shows a killed multi-threaded process as a zombie
    while its other threads (and its pipes) are still going away."""
    deadline = time.monotonic() + timeout
    while process.alive:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(autouse=True)
def no_orphans_and_a_deadline(request: pytest.FixtureRequest) -> Iterator[str]:
    """Tags every child of the test; fails the test if any tagged process outlives it by 3 s."""
    tag = uuid.uuid4().hex
    old = os.environ.get(TAG_VAR)
    os.environ[TAG_VAR] = tag
    faulthandler.dump_traceback_later(TEST_DEADLINE_S, exit=True)
    doc = (request.function.__doc__ or "").strip().split("\n\n")[0]
    request.node.user_properties.append(("checks", " ".join(doc.split())))
    try:
        yield tag
    finally:
        faulthandler.cancel_dump_traceback_later()
        if old is None:
            os.environ.pop(TAG_VAR, None)
        else:
            os.environ[TAG_VAR] = old
        deadline = time.monotonic() + 3.0
        left = tagged_pids(tag)
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = tagged_pids(tag)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"orphan processes left behind by the test: {left}"


# ---------------------------------------------------------------------------------------------------
# A worker driven with raw bytes over its pipes (no host code in the way)


class RawWorker:
    """``python -m rpcworker`` with raw stdin/stdout: write any bytes, read reply lines with a deadline."""

    def __init__(self, *args: str, python: Path = WORKER_PYTHON) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(
            [str(python), "-m", "rpcworker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self._buffer = bytearray()
        self._next_id = 1000

    @property
    def pid(self) -> int:
        return self.popen.pid

    def write(self, data: bytes) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(data)
        self.popen.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.write(msgspec.json.encode(message) + b"\n")

    def read_line(self, timeout: float = 10.0) -> bytes:
        """The next line from the worker's stdout; fails the test if none comes in time."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        scanned = 0
        while (end := self._buffer.find(b"\n", scanned)) < 0:
            scanned = len(self._buffer)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                pytest.fail(f"no line from the worker within {timeout} s (have {bytes(self._buffer[:200])!r})")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                pytest.fail(f"worker closed its stdout (exit {self.popen.poll()})")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    def reply(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next response or error, skipping notifications; its shape is validated."""
        while True:
            message = _json.decode(self.read_line(timeout))
            assert_valid_reply(message)
            if "method" not in message:
                return message

    def call(self, method: str, params: Any = None, timeout: float = 10.0) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        reply = self.reply(timeout)
        assert reply["id"] == self._next_id, reply
        return reply

    def initialize(self) -> dict[str, Any]:
        return self.call("initialize", {"protocol_version": "1.0", "client": "fault-suite"})["result"]

    def close(self) -> int:
        """EOF on stdin; the worker must exit 0 within 5 s."""
        if self.popen.stdin and not self.popen.stdin.closed:
            self.popen.stdin.close()
        try:
            return self.popen.wait(5)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()
            if self.popen.stdout:
                self.popen.stdout.close()


@pytest.fixture()
def raw_worker(worker_python: Path) -> Iterator[Callable[..., RawWorker]]:
    """Factory for initialized RawWorkers on the mock backend; each is closed (and checked) after the test."""
    made: list[RawWorker] = []

    def make(*args: str, initialize: bool = True) -> RawWorker:
        worker = RawWorker("--backend", "mock", *args, python=worker_python)
        made.append(worker)
        if initialize:
            worker.initialize()
        return worker

    yield make
    for worker in made:
        worker.close()


# ---------------------------------------------------------------------------------------------------
# Reply validation: every line the worker writes must be one of these shapes


def _is_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def assert_valid_reply(message: Any) -> None:
    """A JSON-RPC 2.0 response, error response, or progress/log notification, exactly as protocol.md says."""
    assert isinstance(message, dict), f"reply is not an object: {message!r:.200}"
    assert message.get("jsonrpc") == "2.0", f"bad jsonrpc in {message!r:.200}"
    keys = set(message)
    if "method" in message:
        assert keys == {"jsonrpc", "method", "params"}, f"bad notification keys {keys}"
        params = message["params"]
        assert isinstance(params, dict)
        if message["method"] == "progress":
            assert _is_id(params["id"]) and isinstance(params["stage"], str)
            assert isinstance(params["step"], int) and isinstance(params["total"], int)
        else:
            assert message["method"] == "log", f"unknown notification {message['method']!r}"
            assert isinstance(params["level"], str) and isinstance(params["message"], str)
        return
    if "result" in message:
        assert keys == {"jsonrpc", "id", "result"}, f"bad response keys {keys}"
        assert _is_id(message["id"]), f"response id {message['id']!r}"
        assert isinstance(message["result"], dict)
        return
    assert keys == {"jsonrpc", "id", "error"}, f"bad error keys {keys}"
    assert message["id"] is None or _is_id(message["id"])
    error = message["error"]
    assert isinstance(error, dict) and set(error) <= {"code", "message", "data"}
    assert isinstance(error["code"], int) and isinstance(error["message"], str) and error["message"]
    assert isinstance(error.get("data", {}), dict)


def error_name(reply: dict[str, Any]) -> str:
    """The protocol's error name for a reply (``ok`` for a result)."""
    from rpcworker.wire.errors import WIRE_ERRORS

    if "result" in reply:
        return "ok"
    code = reply["error"]["code"]
    return WIRE_ERRORS[code].name if code in WIRE_ERRORS else str(code)


def host_script_env() -> dict[str, str]:
    """The environment for a host subprocess: this checkout importable, the test's tag inherited."""
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


HOST_PYTHON = Path(sys.executable)
