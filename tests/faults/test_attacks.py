"""The failure classes an adversarial review found, each over real pipes with the worker under Python 3.10."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from host.worker.client import WorkerClient
from host.worker.errors import RequestTimeout, WorkerCrashed, WorkerStartError, WorkerStopped
from host.worker.process import STDERR_LINE_CHARS, STDERR_TAIL_CHARS, WorkerCommand, WorkerProcess
from rpcworker.wire.messages import CancelParams, GenerateViewsParams, ImagePath, ImagePng

from .conftest import error_name, wait_gone

pytestmark = pytest.mark.faults

GENEROUS_S = 20.0
"""A deadline far above what any of these steps needs, so a loaded machine never fails them; a hang would."""


def _views(image: str, **extra: object) -> dict[str, object]:
    return {"image": {"type": "path", "path": image}, "num_inference_steps": 1, **extra}


# ---------------------------------------------------------------- replies that cannot be encoded


def test_an_output_path_that_resolves_to_a_non_utf8_name_gets_an_error_reply(
    raw_worker, object_png: Path, tmp_path: Path
) -> None:
    """An output path through a symlink to a directory whose name is not UTF-8: the result could not carry
    the resolved path, so the request gets `output_refused` naming the reason (never silence), nothing is
    written, and the worker keeps serving."""
    odd = os.path.join(os.fsencode(tmp_path), b"dir-\xff")
    os.mkdir(odd)
    (tmp_path / "link").symlink_to(os.fsdecode(odd))
    worker = raw_worker()
    reply = worker.call("generate_views", _views(str(object_png), output_path=str(tmp_path / "link" / "grid.png")))
    assert error_name(reply) == "output_refused" and reply["error"]["data"]["reason"] == "not valid UTF-8", reply
    assert os.listdir(odd) == []
    assert worker.call("ping")["result"] == {"pong": True}


def test_a_reply_that_cannot_be_encoded_becomes_an_error_on_its_id() -> None:
    """In-process, the last line of defence: a result holding a lone surrogate is answered with
    `internal_error` on the request's id, and an error holding one is sent with the surrogate escaped."""
    import io

    import msgspec

    from rpcworker.replies import ReplySender
    from rpcworker.wire.envelopes import Response
    from rpcworker.wire.errors import InputNotFound
    from rpcworker.wire.framing import MessageStream
    from rpcworker.wire.messages import PingResult

    out = io.BytesIO()
    replies = ReplySender(MessageStream(io.BytesIO(), out))
    replies.send(Response(7, {"path": "/tmp/\udcff"}))
    replies.error(8, InputNotFound("input file not found: /tmp/\udcff", {"path": "/tmp/\udcff"}))
    replies.send(Response(9, PingResult()))
    sent = [msgspec.json.decode(line) for line in out.getvalue().splitlines()]
    assert [r["id"] for r in sent] == [7, 8, 9]
    assert sent[0]["error"]["code"] == -32603 and "not valid UTF-8" in sent[0]["error"]["message"]
    assert sent[1]["error"]["data"]["path"] == "/tmp/\\udcff"


# ---------------------------------------------------------------- writes to a worker that stopped reading


@pytest.mark.slow
def test_a_worker_that_stopped_reading_never_blocks_a_call_past_its_timeout(mock_client) -> None:
    """SIGSTOP the worker, then send a request far larger than a pipe holds: the call raises RequestTimeout
    within its timeout (plus a generous margin), a cancel from another thread returns at once, and the
    stuck-worker rule kills the stopped worker so the next call runs on a new one."""
    client = mock_client(auto_restart=True, cancel_grace=1.0)
    first_pid = client.process.pid
    os.kill(first_pid, signal.SIGSTOP)
    big = GenerateViewsParams(ImagePng(os.urandom(4 << 20)), num_inference_steps=1)
    began = time.monotonic()
    with pytest.raises(RequestTimeout):
        client.call("generate_views", big, timeout=1.0)
    assert time.monotonic() - began < GENEROUS_S
    cancelled = threading.Event()
    session = client._session
    assert session is not None

    def cancel_in_thread() -> None:
        session.notify("cancel", CancelParams(12345))
        cancelled.set()

    threading.Thread(target=cancel_in_thread, daemon=True).start()
    assert cancelled.wait(GENEROUS_S), "a cancel must never wait for the stopped worker"
    assert wait_gone(first_pid, GENEROUS_S), "the stopped worker was not replaced by the stuck-worker rule"
    assert client.ping(timeout=GENEROUS_S).pong
    assert client.process.pid != first_pid


# ---------------------------------------------------------------- the stderr drain


def test_an_on_stderr_callback_that_raises_is_reported_once_and_the_drain_goes_on(worker_python: Path, caplog) -> None:
    """A user's on_stderr callback raising: logged once, never called again, and the drain keeps every
    later line (the tail still grows), so the worker never blocks on a full stderr pipe."""
    calls: list[str] = []

    def bad(line: str) -> None:
        calls.append(line)
        raise RuntimeError("user callback bug")

    client = WorkerClient(
        WorkerCommand.python(worker_python), ["--backend", "mock", "--mock", "noisy"], startup_timeout=30, on_stderr=bad
    )
    with caplog.at_level(logging.ERROR, logger="host.worker.process"):
        try:
            client.start()
            params = GenerateViewsParams(ImagePng(_png_bytes()), num_inference_steps=1)
            for _ in range(3):
                client.generate_views(params, timeout=GENEROUS_S)
            assert client.process is not None
            tail = client.process.stderr_tail(200)
        finally:
            client.close()
    assert len(calls) == 1
    assert sum("on_stderr callback raised" in r.getMessage() for r in caplog.records) == 1
    assert tail.count("generate_views done") >= 3


def test_one_endless_stderr_line_is_kept_bounded_and_errors_quoting_it_stay_small(worker_python: Path) -> None:
    """A worker that writes one 20 MB stderr line and exits: the kept line is cut to its first
    characters with a note, and the WorkerStartError quoting stderr stays a few kilobytes."""
    script = "import sys; sys.stderr.write('x' * 20_000_000); sys.stderr.flush(); sys.exit(4)"
    command = WorkerCommand([str(worker_python), "-c", script])
    client = WorkerClient(command, startup_timeout=GENEROUS_S)
    with pytest.raises(WorkerStartError) as info:
        client.start()
    assert len(str(info.value)) < STDERR_TAIL_CHARS + 1000
    assert "line cut" in str(info.value)
    process = WorkerProcess(command)
    try:
        assert process.wait_exit(GENEROUS_S) == 4
        assert len(process.stderr_tail()) < STDERR_LINE_CHARS + 100
    finally:
        process.stop(1.0)


# ---------------------------------------------------------------- ids and shutdown


def test_an_id_in_flight_is_refused_for_every_method(raw_worker, object_png: Path) -> None:
    """While generate_views id 7 runs, ping, status and generate_views with id 7 all get `invalid_request`;
    then id 7's own answer arrives, and afterwards id 7 can be used again."""
    worker = raw_worker("--mock", "step_delay=0.05")
    worker.send(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "generate_views",
            "params": _views(str(object_png), num_inference_steps=40),
        }
    )
    for method, params in (("ping", None), ("status", None), ("generate_views", _views(str(object_png)))):
        message = {"jsonrpc": "2.0", "id": 7, "method": method, **({"params": params} if params else {})}
        worker.send(message)
        reply = worker.reply(GENEROUS_S)
        assert reply["id"] == 7 and error_name(reply) == "invalid_request", (method, reply)
    done = worker.reply(GENEROUS_S)
    assert done["id"] == 7 and "result" in done
    worker.send({"jsonrpc": "2.0", "id": 7, "method": "ping"})
    assert worker.reply(GENEROUS_S)["result"] == {"pong": True}


def test_a_request_after_the_shutdown_reply_gets_shutting_down(raw_worker) -> None:
    """shutdown and a ping in the same write: shutdown is answered, the ping gets `shutting_down`, and the
    worker exits 0 at EOF."""
    worker = raw_worker()
    worker.write(b'{"jsonrpc":"2.0","id":1,"method":"shutdown"}\n{"jsonrpc":"2.0","id":2,"method":"ping"}\n')
    first, second = worker.reply(GENEROUS_S), worker.reply(GENEROUS_S)
    assert first["id"] == 1 and "requests_served" in first["result"]
    assert second["id"] == 2 and error_name(second) == "shutting_down", second
    assert worker.close() == 0


def test_the_worker_exits_after_shutdown_even_if_stdin_stays_open(raw_worker) -> None:
    """After the shutdown reply the worker lingers at most its exit grace, then exits 0 by itself."""
    worker = raw_worker()
    assert "result" in worker.call("shutdown")
    assert worker.popen.wait(GENEROUS_S) == 0


# ---------------------------------------------------------------- outputs


def test_names_near_the_length_limit_work(raw_worker, object_png: Path, tmp_path: Path) -> None:
    """An output name of exactly NAME_MAX bytes (its temporary name is cut to fit) is written, and no
    temporary file remains."""
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    target = tmp_path / ("n" * (name_max - len(".png")) + ".png")
    worker = raw_worker()
    reply = worker.call("generate_views", _views(str(object_png), output_path=str(target)))
    assert "result" in reply, reply
    assert target.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir() if p != target and p.name != "object.png"] == []


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_overwrite_never_replaces_what_is_not_a_regular_file(
    raw_worker, object_png: Path, tmp_path: Path, kind: str
) -> None:
    """overwrite=true onto a FIFO, a directory or a device (a symlink to /dev/null) is `output_refused`, and
    the thing is still there, untouched."""
    target = tmp_path / "target.png"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    else:
        target.symlink_to("/dev/null")
    worker = raw_worker()
    reply = worker.call("generate_views", _views(str(object_png), output_path=str(target), overwrite=True))
    assert error_name(reply) == "output_refused", reply
    assert reply["error"]["data"]["reason"] in ("not a regular file", "is a directory")
    if kind == "fifo":
        assert target.is_fifo()
    elif kind == "directory":
        assert target.is_dir()
    else:
        assert target.is_symlink() and os.readlink(target) == "/dev/null"


def test_a_symlink_loop_gets_an_accurate_message(raw_worker, object_png: Path, tmp_path: Path) -> None:
    """An output path that is a symlink loop: `output_refused` whose reason says "a symlink loop"."""
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    reply = raw_worker().call("generate_views", _views(str(object_png), output_path=str(tmp_path / "a.png")))
    assert error_name(reply) == "output_refused" and reply["error"]["data"]["reason"] == "a symlink loop", reply
    assert "symlink loop" in reply["error"]["message"]


@pytest.mark.slow
def test_a_host_killed_during_a_write_leaves_no_temporary_file_after_the_next_write(
    raw_worker, object_png: Path, tmp_path: Path
) -> None:
    """The host dies (EOF on the worker's stdin, as the kernel delivers it) while an output sits at its
    temporary path: the worker exits and the temporary file is the only debris; the next write of that
    target removes it once stale."""
    target = tmp_path / "out" / "grid.png"
    target.parent.mkdir()
    worker = raw_worker("--mock", "write_delay=30")
    worker.send(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "generate_views",
            "params": _views(str(object_png), output_path=str(target)),
        }
    )
    deadline = time.monotonic() + GENEROUS_S
    while not (left := [p for p in target.parent.iterdir() if ".partial-" in p.name]):
        assert time.monotonic() < deadline, "the worker never started writing"
        time.sleep(0.02)
    assert worker.close() == 0
    assert not target.exists()
    os.utime(left[0], (time.time() - 60, time.time() - 60))
    reply = raw_worker().call("generate_views", _views(str(object_png), output_path=str(target)))
    assert "result" in reply, reply
    assert [p.name for p in target.parent.iterdir()] == ["grid.png"]


# ---------------------------------------------------------------- inputs


@pytest.mark.parametrize("name", ["eps", "gif", "bmp"])
def test_inline_image_data_must_be_png_or_jpeg(raw_worker, name: str) -> None:
    """Inline data in another format (EPS, which would start Ghostscript; GIF; BMP) gets `input_unreadable`
    with reason "unsupported format", and no external program runs."""
    import base64
    import io

    from PIL import Image

    if name == "eps":
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n"
    else:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (10, 20, 30)).save(buffer, format=name.upper())
        data = buffer.getvalue()
    reply = raw_worker().call(
        "generate_views", {"image": {"type": "png", "data": base64.b64encode(data).decode()}, "num_inference_steps": 1}
    )
    assert error_name(reply) == "input_unreadable" and reply["error"]["data"]["reason"] == "unsupported format", reply


def test_a_file_whose_reported_size_is_zero_is_read_with_the_cap(raw_worker) -> None:
    """/proc/self/status reports size 0 but has content: it is read (within the cap) and refused as not an
    image, at once; the worker keeps serving."""
    worker = raw_worker()
    reply = worker.call("generate_views", _views("/proc/self/status"))
    assert error_name(reply) == "input_unreadable", reply
    assert worker.call("ping")["result"] == {"pong": True}


def test_the_input_cap_holds_when_the_reported_size_is_zero(monkeypatch) -> None:
    """In-process: with the cap lowered below /proc/self/maps' content, reading it is refused as too large."""
    from rpcworker import images
    from rpcworker.wire.errors import InputUnreadable
    from rpcworker.wire.messages import ImagePath

    monkeypatch.setattr(images, "MAX_INPUT_BYTES", 64)
    with pytest.raises(InputUnreadable, match="over the limit"):
        images.load_input_image(ImagePath("/proc/self/maps"))


# ---------------------------------------------------------------- smaller ones


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-handles", "0"],
        ["--max-handles", "many"],
        ["--view-size", "-3"],
        ["--output-root", "/no/such/dir"],
        ["--frobnicate"],
    ],
)
def test_bad_worker_flags_give_one_line_errors(worker_python: Path, flags: list[str]) -> None:
    """Bad worker flags: the worker exits at once with one stderr line naming the flag; WorkerStartError quotes it."""
    client = WorkerClient(
        WorkerCommand.python(worker_python), ["--backend", "mock", *flags], startup_timeout=GENEROUS_S
    )
    with pytest.raises(WorkerStartError) as info:
        client.start()
    tail = info.value.stderr_tail.strip().splitlines()
    assert len(tail) == 1 and tail[0].startswith("rpcworker: bad arguments:"), tail
    assert flags[0] in tail[0]


def test_a_clean_shutdown_is_not_a_crash(mock_client) -> None:
    """After shutdown() a call raises WorkerStopped (exit code 0), not WorkerCrashed."""
    client = mock_client()
    client.shutdown()
    assert client.process is not None and client.process.wait_exit(GENEROUS_S) == 0
    with pytest.raises(WorkerStopped) as info:
        client.ping()
    assert not isinstance(info.value, WorkerCrashed)


def test_a_call_after_close_raises_without_auto_restart(mock_client) -> None:
    """With auto_restart=False a call after close() raises WorkerStopped and starts no worker; start() works."""
    client = mock_client(auto_restart=False)
    client.close()
    with pytest.raises(WorkerStopped):
        client.ping()
    assert client.process is None
    client.start()
    assert client.ping().pong


def test_a_progress_callback_that_calls_the_client_does_not_deadlock(mock_client, object_png: Path) -> None:
    """Progress callbacks run on their own thread, so one that calls client.status() gets its answer
    (the reader keeps reading) and the call it watches completes."""
    client = mock_client("step_delay=0.01")
    seen: list[str | None] = []

    def on_progress(progress) -> None:
        if progress.stage == "diffusion" and not seen:
            seen.append(client.status(timeout=GENEROUS_S).busy)

    result = client.generate_views(
        GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=20),
        timeout=GENEROUS_S,
        on_progress=on_progress,
    )
    assert result.handle and seen == ["generate_views"]


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 80, 40)).save(buffer, format="PNG")
    return buffer.getvalue()
