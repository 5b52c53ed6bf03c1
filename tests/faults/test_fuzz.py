"""Fuzzing the worker's decoder and dispatcher: no crash, no hang, every reply a valid JSON-RPC message,
every request answered, and no internal_error (every bad input maps to a specific error code).

In-process: the real MessageStream and WorkerSession on the mock backend, fed from a generator and writing
into a validator, so 100k+ messages take seconds. Over real pipes: a smaller count through a worker
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
from rpcworker.session import WorkerSession
from rpcworker.wire.framing import MessageStream
from rpcworker.wire.messages import Incoming

from .conftest import RawWorker, assert_valid_reply, error_name
from .fuzzgen import MessageFuzzer

pytestmark = pytest.mark.faults

IN_PROCESS_MESSAGES = int(os.environ.get("FUZZ_MESSAGES", "120000"))
PIPE_MESSAGES = int(os.environ.get("FUZZ_PIPE_MESSAGES", "20000"))
HYPOTHESIS_EXAMPLES = int(os.environ.get("FUZZ_HYPOTHESIS_EXAMPLES", "1500"))
SEED = int(os.environ.get("FUZZ_SEED", "20240611"))

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
    if msg.jsonrpc == "2.0" and msg.method is msgspec.UNSET and (msg.result is not msgspec.UNSET or msg.error is not msgspec.UNSET):
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


class LineFeed:
    """A reader for MessageStream that produces the fuzzer's lines on demand (nothing held in memory)."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._rest = b""

    def readline(self, size: int = -1) -> bytes:
        if not self._rest:
            line = next(self._lines, None)
            if line is None:
                return b""
            self._rest = line + b"\n"
        if 0 <= size < len(self._rest):
            chunk, self._rest = self._rest[:size], self._rest[size:]
            return chunk
        chunk, self._rest = self._rest, b""
        return chunk


def run_in_process(lines: Iterator[bytes], tmp_path: Path) -> tuple[ReplyChecker, int, set[Any]]:
    """Serves ``lines`` like rpcworker.server.serve does; returns the checker, frames read, ids expected."""
    expected: set[Any] = set()

    def watched() -> Iterator[bytes]:
        for line in lines:
            ident = expected_reply_id(line)
            if ident is not None:
                expected.add(_key(ident))
            yield line

    checker = ReplyChecker()
    stream = MessageStream(LineFeed(watched()), checker)  # type: ignore[arg-type]
    backend = MockBackend(MockOptions(view_size=16))
    dispatcher = WorkerSession(backend, stream, max_handles=4, output_root=str(tmp_path))
    dispatcher.handle(_envelope.decode(b'{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocol_version":"1.0"}}'))
    expected.add(_key("init"))
    frames = 0
    while True:
        received = stream.receive()
        if received is None:
            break
        frames += 1
        dispatcher.handle(received)
        if dispatcher.stopping:  # a fuzzed shutdown: go on with a fresh dispatcher, as a restarted worker would
            dispatcher.stop(grace=10)
            dispatcher = WorkerSession(backend, stream, max_handles=4, output_root=str(tmp_path))
            dispatcher.initialized = True
    assert dispatcher.jobs.wait_idle(60), f"executor did not drain: {dispatcher.in_flight} jobs left"
    assert dispatcher.in_flight == 0
    dispatcher.stop(grace=5)
    assert not dispatcher.jobs.running, "executor thread did not stop"
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
    assert checker.codes.get("ok", 0) > IN_PROCESS_MESSAGES // 20, "too few valid requests: the fuzz is not reaching the methods"
    assert not [p for p in out_dir.rglob("*") if ".partial-" in p.name], "temporary output files left behind"


@pytest.mark.slow
def test_fuzz_hypothesis_arbitrary_json_and_bytes(out_dir: Path, quiet_worker_logs: None, record_property) -> None:
    """Hypothesis-generated JSON values (as whole messages and as params of every method) and arbitrary
    byte lines through the dispatcher: every reply valid, every request answered, no internal_error."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from rpcworker.wire.messages import METHODS

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    )
    methods = st.sampled_from(sorted(set(METHODS) - {"shutdown"}) + ["cancel", "nope"])
    ids = st.one_of(st.integers(), st.text(max_size=8), st.none(), st.floats(allow_nan=False))
    messages = st.one_of(
        json_values.map(msgspec.json.encode),
        st.builds(lambda i, m, p: msgspec.json.encode({"jsonrpc": "2.0", "id": i, "method": m, "params": p}), ids, methods, json_values),
        st.builds(lambda m, p: msgspec.json.encode({"jsonrpc": "2.0", "method": m, "params": p}), methods, json_values),
        st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ")),
    )
    lines: list[bytes] = []

    @settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
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
    worker = RawWorker("--backend", "mock", "--mock", "view_size=16", "--output-root", str(out_dir), "--max-handles", "4", python=worker_python)
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
