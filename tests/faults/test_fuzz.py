"""Fuzzing the worker's decoder and dispatcher: no crash, no hang, every reply a valid JSON-RPC message,
every request answered, and no internal_error (every bad input maps to a specific error code).

In-process: the worker's own serve loop (the real MessageStream and WorkerSession on the mock backend), read
from a memory pipe (rpcworker/wire/memory.py) and writing into a validator, so 100k+ messages take seconds. Over real pipes: a smaller count through a worker
process. The counts and durations are recorded as test properties for docs/reliability.md.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rpcworker.backends.mock import MockBackend, MockOptions
from rpcworker.session import WorkerSession, serve_stream
from rpcworker.wire.envelopes import Incoming
from rpcworker.wire.framing import MessageStream
from rpcworker.wire.memory import MemoryPipe

from .conftest import RawWorker, assert_valid_reply, error_name
from .fuzzgen import MessageFuzzer

pytestmark = pytest.mark.faults

IN_PROCESS_MESSAGES = int(os.environ.get("FUZZ_MESSAGES", "120000"))
PIPE_MESSAGES = int(os.environ.get("FUZZ_PIPE_MESSAGES", "20000"))
HYPOTHESIS_EXAMPLES = int(os.environ.get("FUZZ_HYPOTHESIS_EXAMPLES", "1500"))
SEED = int(os.environ.get("FUZZ_SEED", "20240611"))
LINES_AHEAD = 256
"""How far the in-process fuzz's feeder may run ahead of the worker's reader."""

_envelope = msgspec.json.Decoder(Incoming)
_any = msgspec.json.Decoder()


def expected_reply_id(line: bytes) -> Any:
    """The id a reply must carry if this line is a request the worker has to answer, else None."""
    try:
        line.decode("utf-8")
        msg = _envelope.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if msg.id is msgspec.UNSET or msg.id is None:
        return None  # notifications (and null ids, answered with id null)
    if (
        msg.jsonrpc == "2.0"
        and msg.method is msgspec.UNSET
        and (msg.result is not msgspec.UNSET or msg.error is not msgspec.UNSET)
    ):
        return None  # a response sent to the worker: ignored
    return msg.id


class ReplyChecker:
    """A writer for the worker's MessageStream: validates every frame as it is written."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replies = 0
        self.notifications = 0
        self.answered: dict[Any, int] = {}
        self.codes: dict[str, int] = {}
        self.problems: list[str] = []
        self.internal_errors: list[dict[str, Any]] = []

    def write(self, data: bytes | bytearray) -> int:
        frame = bytes(data)
        try:
            assert frame.endswith(b"\n") and frame.count(b"\n") == 1, "a frame is one line"
            message = _any.decode(frame)
            assert_valid_reply(message)
        except AssertionError as exc:
            with self.lock:
                self.problems.append(f"{exc}: {frame[:300]!r}")
            return len(data)
        with self.lock:
            if "method" in message:
                self.notifications += 1
                return len(data)
            self.replies += 1
            name = error_name(message)
            self.codes[name] = self.codes.get(name, 0) + 1
            if name == "internal_error":
                self.internal_errors.append(message["error"])
            key = _key(message["id"])
            self.answered[key] = self.answered.get(key, 0) + 1
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _key(ident: Any) -> Any:
    return (type(ident).__name__, ident)


class FuzzPipe(MemoryPipe):
    """A memory pipe that holds at most ``LINES_AHEAD`` unread lines, so the fuzz's 200 MB never sit in memory
    at once. Its writer writes one whole line per call."""

    def __init__(self) -> None:
        super().__init__()
        self._room = threading.BoundedSemaphore(LINES_AHEAD)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._room.acquire()
        return super().write(data)

    def readline(self, limit: int = -1) -> bytes:
        chunk = super().readline(limit)
        if chunk.endswith(b"\n"):  # the end of a line: room for the next
            self._room.release()
        return chunk


def run_in_process(lines: Iterator[bytes], tmp_path: Path) -> tuple[ReplyChecker, int, set[Any]]:
    """Serves ``lines`` through the worker's own serve loop, read from a memory pipe that a thread fills;
    returns the checker, frames read, ids expected."""
    expected: set[Any] = {_key("init")}
    to_worker = FuzzPipe()

    def feed() -> None:
        for line in lines:
            ident = expected_reply_id(line)
            if ident is not None:
                expected.add(_key(ident))
            to_worker.write(line + b"\n")
        to_worker.close()

    checker = ReplyChecker()
    session = WorkerSession(
        MockBackend(MockOptions(view_size=16)),
        MessageStream(to_worker, checker),
        max_handles=4,
        output_root=str(tmp_path),
    )  # type: ignore[arg-type]
    shutdowns: list[None] = []
    session.on_shutdown = lambda: shutdowns.append(None)
    session.handle(
        _envelope.decode(b'{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocol_version":"1.0"}}')
    )
    feeder = threading.Thread(target=feed, name="fuzz-feed", daemon=True)
    feeder.start()
    drained: list[bool] = []
    frames = serve_stream(session, grace_s=5, at_end_of_input=lambda: drained.append(session.jobs.wait_idle(60)))
    feeder.join()
    assert not shutdowns, "the fuzz sent a valid shutdown: every later request got shutting_down"
    assert drained == [True], f"executor did not drain: {session.in_flight} jobs left"
    assert session.in_flight == 0
    assert not session.jobs.running, "executor thread did not stop"
    return checker, frames, expected


def assert_clean(checker: ReplyChecker, expected: set[Any]) -> None:
    assert not checker.problems, checker.problems[:5]
    assert not checker.internal_errors, checker.internal_errors[:3]
    missing = [ident for ident in expected if ident not in checker.answered]
    assert not missing, f"{len(missing)} requests never answered, e.g. {missing[:5]}"
    unknown = [ident for ident in checker.answered if ident not in expected and ident != ("NoneType", None)]
    assert not unknown, f"replies to ids never sent: {unknown[:5]}"


@pytest.fixture()
def out_dir(tmp_path: Path) -> Iterator[Path]:
    """Where fuzzed outputs go: tmpfs when there is one (fsync there is free, halving the fuzz's time)."""
    import shutil
    import tempfile

    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="instantmesh-rpc-fuzz-", dir="/dev/shm"))
        yield path
        shutil.rmtree(path)
    else:
        yield tmp_path


@pytest.fixture()
def quiet_worker_logs() -> Iterator[None]:
    """The dispatcher logs every ignored notification; at 100k messages that is noise, not signal."""
    logger = logging.getLogger("rpcworker")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.mark.slow
def test_fuzz_in_process_dispatcher(out_dir: Path, object_png: Path, quiet_worker_logs: None, record_property) -> None:
    """120k seeded messages (valid ones and structured mutations: wrong types, dropped/extra fields,
    random JSON, truncation, flipped and random bytes, huge numbers, deep nesting, invalid UTF-8, long
    strings, broken envelopes) through the real MessageStream + WorkerSession: every reply valid, every
    request answered, no internal_error, executor drained."""
    fuzzer = MessageFuzzer(SEED, str(out_dir), str(object_png))
    start = time.perf_counter()
    checker, frames, expected = run_in_process((fuzzer.next_line() for _ in range(IN_PROCESS_MESSAGES)), out_dir)
    seconds = time.perf_counter() - start
    record_property("fuzz_messages", frames)
    record_property("fuzz_seconds", round(seconds, 2))
    record_property("fuzz_replies", checker.replies)
    record_property("fuzz_codes", dict(sorted(checker.codes.items())))
    assert frames == IN_PROCESS_MESSAGES
    assert_clean(checker, expected)
    assert checker.codes.get("ok", 0) > IN_PROCESS_MESSAGES // 20, (
        "too few valid requests: the fuzz is not reaching the methods"
    )
    assert not [p for p in out_dir.rglob("*") if ".partial-" in p.name], "temporary output files left behind"


@pytest.mark.slow
def test_fuzz_hypothesis_arbitrary_json_and_bytes(out_dir: Path, quiet_worker_logs: None, record_property) -> None:
    """Hypothesis-generated JSON values (as whole messages and as params of every method) and arbitrary
    byte lines through the dispatcher: every reply valid, every request answered, no internal_error."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from rpcworker.wire.messages import METHODS

    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    )
    methods = st.sampled_from(sorted(set(METHODS) - {"shutdown"}) + ["cancel", "nope"])
    ids = st.one_of(st.integers(), st.text(max_size=8), st.none(), st.floats(allow_nan=False))
    messages = st.one_of(
        json_values.map(msgspec.json.encode),
        st.builds(
            lambda i, m, p: msgspec.json.encode({"jsonrpc": "2.0", "id": i, "method": m, "params": p}),
            ids,
            methods,
            json_values,
        ),
        st.builds(lambda m, p: msgspec.json.encode({"jsonrpc": "2.0", "method": m, "params": p}), methods, json_values),
        st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ")),
    )
    lines: list[bytes] = []

    @settings(
        max_examples=HYPOTHESIS_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(messages)
    def collect(line: bytes) -> None:
        lines.append(line)

    start = time.perf_counter()
    collect()
    checker, frames, expected = run_in_process(iter(lines), out_dir)
    seconds = time.perf_counter() - start
    record_property("fuzz_messages", frames)
    record_property("fuzz_seconds", round(seconds, 2))
    assert frames == len(lines) >= HYPOTHESIS_EXAMPLES // 2
    assert_clean(checker, expected)


@pytest.mark.slow
def test_fuzz_over_real_pipes(out_dir: Path, object_png: Path, worker_python: Path, record_property) -> None:
    """20k seeded messages written to a real worker process's stdin while its stdout is read and every
    reply validated: all requests answered, no internal_error, then EOF and exit code 0."""
    worker = RawWorker(
        "--backend",
        "mock",
        "--mock",
        "view_size=16",
        "--output-root",
        str(out_dir),
        "--max-handles",
        "4",
        python=worker_python,
    )
    fuzzer = MessageFuzzer(SEED + 1, str(out_dir), str(object_png))
    expected: set[Any] = set()
    lines = [fuzzer.next_line() for _ in range(PIPE_MESSAGES)]
    for line in lines:
        ident = expected_reply_id(line)
        if ident is not None:
            expected.add(_key(ident))
    init = b'{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocol_version":"1.0"}}'
    barrier = b'{"jsonrpc":"2.0","id":"barrier","method":"unload","params":{"models":[]}}'
    expected |= {_key("init"), _key("barrier")}
    checker = ReplyChecker()
    start = time.perf_counter()

    def feed() -> None:
        worker.write(init + b"\n")
        for i in range(0, len(lines), 200):
            worker.write(b"".join(line + b"\n" for line in lines[i : i + 200]))
        worker.write(barrier + b"\n")  # a model method: answered after every earlier model job

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        while _key("barrier") not in checker.answered:
            checker.write(worker.read_line(timeout=30) + b"\n")
        writer.join(10)
        assert worker.close() == 0, "the worker must exit 0 at EOF"
    finally:
        if worker.popen.poll() is None:
            worker.popen.kill()
    seconds = time.perf_counter() - start
    record_property("fuzz_messages", len(lines))
    record_property("fuzz_seconds", round(seconds, 2))
    assert_clean(checker, expected)
