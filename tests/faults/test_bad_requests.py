"""The host (or anything on the worker's stdin) sends bad input: every frame gets the right error code and
the worker keeps serving. Driven with raw bytes over the worker's pipes, and through the typed client.

Unreadable files: the tests run as root, which reads any file whatever its mode, so chmod 000 proves
nothing here. Unreadable inputs are made other ways: a FIFO (opening one for reading would block
forever), a character device, /proc/self/mem (open succeeds, read fails with EIO) and a path through a
regular file (ENOTDIR).
"""

from __future__ import annotations

import base64
import io
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rpcworker.wire.errors import MessageTooLarge
from rpcworker.wire.messages import MAX_LINE_BYTES, GenerateViewsParams, ImagePng

from .conftest import RawWorker, error_name

pytestmark = pytest.mark.faults

PING = b'{"jsonrpc":"2.0","id":"after","method":"ping"}\n'


def frame(**fields: Any) -> bytes:
    return msgspec.json.encode({"jsonrpc": "2.0", **fields})


def png(size: tuple[int, int] = (64, 64), mode: str = "RGBA", fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format=fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (8-bit grey) with an empty image body: tiny on the wire."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def gv(image: dict[str, Any], **extra: Any) -> bytes:
    return frame(id=7, method="generate_views", params={"image": image, "num_inference_steps": 1, **extra})


def inline(data: bytes) -> dict[str, Any]:
    return {"type": "png", "data": base64.b64encode(data).decode()}


# (line sent, expected error name, expected reply id; None = no reply at all)
ENVELOPE_CASES: dict[str, tuple[bytes, str | None, Any]] = {
    "not-json": (b"hello worker", "parse_error", None),
    "truncated-json": (b'{"jsonrpc":"2.0","id":1,"method":"ping"', "parse_error", None),
    "invalid-utf8-in-method": (b'{"jsonrpc":"2.0","id":1,"method":"p\xffng"}', "parse_error", None),
    "invalid-utf8-in-params": (
        b'{"jsonrpc":"2.0","id":1,"method":"load","params":{"models":["\xff"]}}',
        "parse_error",
        None,
    ),
    "deep-nesting": (
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "parse_error",
        None,
    ),
    "array": (b"[1, 2, 3]", "invalid_request", None),
    "batch": (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', "invalid_request", None),
    "empty-line": (b"", "invalid_request", None),
    "wrong-jsonrpc": (frame(jsonrpc="1.0", id=3, method="ping"), "invalid_request", 3),
    "no-jsonrpc": (b'{"id":3,"method":"ping"}', "invalid_request", 3),
    "null-id": (frame(id=None, method="ping"), "invalid_request", None),
    "array-id": (frame(id=[1], method="ping"), "invalid_request", None),
    "float-id": (frame(id=1.5, method="ping"), "invalid_request", None),
    "bool-id": (frame(id=True, method="ping"), "invalid_request", None),
    "huge-int-id-echoed-exactly": (
        b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}',
        "ok",
        123456789012345678901234567890,
    ),
    "method-not-string": (frame(id=4, method=5), "invalid_request", None),
    "no-method": (frame(id=4), "invalid_request", 4),
    "unknown-method": (frame(id=5, method="frobnicate"), "method_not_found", 5),
    "params-array": (frame(id=6, method="load", params=["views"]), "invalid_params", 6),
    "params-string": (frame(id=6, method="load", params="views"), "invalid_params", 6),
    "extra-param": (frame(id=6, method="ping", params={"x": 1}), "invalid_params", 6),
    "missing-param": (frame(id=6, method="generate_views", params={}), "invalid_params", 6),
    "missing-params": (frame(id=6, method="reconstruct"), "invalid_params", 6),
    "wrong-type-seed": (gv({"type": "path", "path": "/x.png"}, seed="42"), "invalid_params", 7),
    "wrong-type-image": (frame(id=7, method="generate_views", params={"image": 5}), "invalid_params", 7),
    "unknown-image-type": (gv({"type": "gif", "path": "/x.gif"}), "invalid_params", 7),
    "not-base64": (gv({"type": "png", "data": "***"}), "invalid_params", 7),
    "huge-seed": (
        b'{"jsonrpc":"2.0","id":7,"method":"generate_views","params":{"image":{"type":"path","path":"/x.png"},"seed":123456789012345678901234567890}}',
        "invalid_params",
        7,
    ),
    "negative-steps": (gv({"type": "path", "path": "/x.png"}, num_inference_steps=-1), "invalid_params", 7),
    "infinite-guidance": (
        b'{"jsonrpc":"2.0","id":7,"method":"generate_views","params":{"image":{"type":"path","path":"/x.png"},"guidance_scale":1e999}}',
        "invalid_params",
        7,
    ),
    "relative-path": (gv({"type": "path", "path": "x.png"}), "invalid_params", 7),
    "nul-in-path": (gv({"type": "path", "path": "/tmp/a\u0000b.png"}), "invalid_params", 7),
    "bad-model-name": (frame(id=8, method="load", params={"models": ["everything"]}), "invalid_params", 8),
    "bad-format": (
        frame(
            id=9, method="reconstruct", params={"views": {"type": "handle", "handle": "h"}, "output_path": "/tmp/m.stl"}
        ),
        "invalid_params",
        9,
    ),
    "bad-handle": (
        frame(
            id=9,
            method="reconstruct",
            params={"views": {"type": "handle", "handle": "views-0-1"}, "output_path": "/tmp/never/m.obj"},
        ),
        "handle_expired",
        9,
    ),
    "response-to-worker": (frame(id=10, result={"pong": True}), None, None),
    "unknown-notification": (frame(method="frobnicate", params={}), None, None),
    "cancel-bad-params": (frame(method="cancel", params={"id": [1]}), None, None),
    "cancel-unknown-id": (frame(method="cancel", params={"id": 424242}), None, None),
}


@pytest.mark.parametrize("case", sorted(ENVELOPE_CASES))
def test_bad_frame_gets_its_error_and_the_worker_keeps_serving(raw_worker, case: str, record_property) -> None:
    """One malformed frame (raw bytes on stdin): the exact error code on the right id (or no reply for
    notifications and stray responses), then a ping on the same pipe is answered."""
    line, expected, reply_id = ENVELOPE_CASES[case]
    record_property(
        "expect", "no reply" if expected is None else f"{expected} on id {'null' if reply_id is None else reply_id}"
    )
    worker: RawWorker = raw_worker()
    worker.write(line + b"\n" + PING)
    # Model methods are answered by the executor, so the ping may overtake their error: take both.
    replies = [worker.reply() for _ in range(1 if expected is None else 2)]
    pong = {"jsonrpc": "2.0", "id": "after", "result": {"pong": True}}
    assert pong in replies, replies
    if expected is not None:
        (reply,) = [r for r in replies if r != pong]
        assert error_name(reply) == expected, reply
        assert reply["id"] == reply_id
        assert len(msgspec.json.encode(reply)) < 16_384


def test_oversized_frame_and_huge_echoed_strings(raw_worker) -> None:
    """A frame over 64 MiB is discarded unparsed (message_too_large, id null); a 40 MB method name or
    path is refused with a short reply (echoed strings are cut), so no reply can exceed the frame limit."""
    worker: RawWorker = raw_worker()
    start = time.monotonic()
    worker.write(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * MAX_LINE_BYTES + b'"}}\n' + PING)
    reply = worker.reply(timeout=30)
    assert error_name(reply) == "message_too_large" and reply["id"] is None
    assert reply["error"]["data"]["limit"] == MAX_LINE_BYTES
    assert worker.reply()["id"] == "after"
    worker.write(b'{"jsonrpc":"2.0","id":2,"method":"' + b"x" * 40_000_000 + b'"}\n')
    line = worker.read_line(timeout=30)
    assert len(line) < 16_384 and error_name(msgspec.json.decode(line)) == "method_not_found"
    worker.write(gv({"type": "path", "path": "/" + "p" * 40_000_000 + ".png"}) + b"\n")
    line = worker.read_line(timeout=30)
    assert len(line) < 16_384 and error_name(msgspec.json.decode(line)) == "input_not_found"
    worker.write(PING)
    assert worker.reply()["id"] == "after"
    assert time.monotonic() - start < 30


def test_requests_before_initialize_and_duplicate_ids(raw_worker) -> None:
    """Before initialize every method gets not_initialized; an id already in flight gets invalid_request;
    after shutdown the worker exits 0."""
    worker: RawWorker = raw_worker("--mock", "step_delay=0.05", initialize=False)
    assert error_name(worker.call("ping")) == "not_initialized"
    assert error_name(worker.call("initialize", {"protocol_version": "9.0"})) == "version_mismatch"
    worker.initialize()
    job = {"image": inline(png()), "num_inference_steps": 20}
    worker.send({"jsonrpc": "2.0", "id": "dup", "method": "generate_views", "params": job})
    worker.send({"jsonrpc": "2.0", "id": "dup", "method": "generate_views", "params": job})
    first = worker.reply()
    assert error_name(first) == "invalid_request" and first["id"] == "dup"
    second = worker.reply()
    assert second["id"] == "dup" and "handle" in second["result"]
    assert error_name(worker.call("shutdown")) == "ok"
    assert worker.popen.wait(5) == 0


def _input_cases(tmp: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """(image source, expected error name) for every kind of bad input file or inline image."""
    from PIL import Image

    tmp.mkdir(exist_ok=True)
    fifo = tmp / "fifo.png"
    os.mkfifo(fifo)
    (tmp / "corrupt.png").write_bytes(png()[:60])
    (tmp / "random.png").write_bytes(os.urandom(4096))
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "i16.png").write_bytes(png(mode="I;16"))
    (tmp / "tiny.png").write_bytes(png((4, 4)))
    cmyk = io.BytesIO()
    Image.new("CMYK", (32, 32)).save(cmyk, format="JPEG")
    sparse = tmp / "sparse.png"
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, no disk used: over the 512 MiB input limit
    return {
        "nonexistent": ({"type": "path", "path": str(tmp / "missing.png")}, "input_not_found"),
        "through-a-file": ({"type": "path", "path": str(tmp / "corrupt.png" / "x.png")}, "input_not_found"),
        "directory": ({"type": "path", "path": str(tmp)}, "input_unreadable"),
        "fifo": ({"type": "path", "path": str(fifo)}, "input_unreadable"),
        "char-device": ({"type": "path", "path": "/dev/zero"}, "input_unreadable"),
        "read-fails-eio": ({"type": "path", "path": "/proc/self/mem"}, "input_unreadable"),
        "over-512MiB": ({"type": "path", "path": str(sparse)}, "input_unreadable"),
        "corrupt-png": ({"type": "path", "path": str(tmp / "corrupt.png")}, "input_unreadable"),
        "random-bytes": ({"type": "path", "path": str(tmp / "random.png")}, "input_unreadable"),
        "empty-file": ({"type": "path", "path": str(tmp / "empty.png")}, "input_unreadable"),
        "mode-I16": ({"type": "path", "path": str(tmp / "i16.png")}, "input_unreadable"),
        "mode-CMYK-jpeg": (inline(cmyk.getvalue()), "input_unreadable"),
        "too-small": ({"type": "path", "path": str(tmp / "tiny.png")}, "input_unreadable"),
        "too-many-pixels": (inline(png_header_only(10_000, 10_000)), "input_unreadable"),
        "inline-garbage": (inline(b"\x89PNG not really"), "input_unreadable"),
        "inline-ok": (inline(png((16, 16), "P")), "ok"),
    }


INPUT_CASES = [
    "nonexistent",
    "through-a-file",
    "directory",
    "fifo",
    "char-device",
    "read-fails-eio",
    "over-512MiB",
    "corrupt-png",
    "random-bytes",
    "empty-file",
    "mode-I16",
    "mode-CMYK-jpeg",
    "too-small",
    "too-many-pixels",
    "inline-garbage",
    "inline-ok",
]


@pytest.mark.parametrize("case", INPUT_CASES)
def test_bad_input_file_gets_its_code_and_the_worker_keeps_serving(
    raw_worker, tmp_path: Path, case: str, record_property
) -> None:
    """One bad input for generate_views (nonexistent path, a path through a file, a directory, a FIFO,
    /dev/zero, a file whose read fails, a 1 GiB file, corrupt/random/empty PNGs, modes I;16 and CMYK, a
    4x4 image, a 100 Mpixel header): input_not_found or input_unreadable within 5 s, not busy after."""
    image, expected = _input_cases(tmp_path / "inputs")[case]
    record_property("expect", expected)
    worker: RawWorker = raw_worker()
    start = time.monotonic()
    reply = worker.call("generate_views", {"image": image, "num_inference_steps": 1}, timeout=5)
    assert error_name(reply) == expected, reply
    assert time.monotonic() - start < 5
    assert worker.call("status")["result"]["busy"] is None
    assert error_name(worker.call("ping")) == "ok"


def test_views_grid_of_the_wrong_shape_is_refused(raw_worker, tmp_path: Path) -> None:
    """reconstruct from an inline grid that is not 3 rows x 2 columns: input_unreadable, no mesh written."""
    worker: RawWorker = raw_worker()
    bad_grid = worker.call(
        "reconstruct",
        {
            "views": {"type": "grid_png", "data": inline(png((64, 64), "RGB"))["data"]},
            "output_path": str(tmp_path / "m.obj"),
        },
    )
    assert error_name(bad_grid) == "input_unreadable" and "3 rows x 2 columns" in bad_grid["error"]["message"]
    assert not (tmp_path / "m.obj").exists()


def test_enormous_inline_image_through_the_client_is_refused_before_sending(mock_client) -> None:
    """An inline image whose frame would exceed 64 MiB: the typed client raises message_too_large at once
    without writing anything, and the same worker keeps serving."""
    client = mock_client()
    start = time.monotonic()
    with pytest.raises(MessageTooLarge, match="not sent") as info:
        client.generate_views(GenerateViewsParams(ImagePng(b"\0" * (MAX_LINE_BYTES * 3 // 4 + 1024))))
    assert info.value.data["limit"] == MAX_LINE_BYTES and time.monotonic() - start < 5
    assert client.ping().pong and client.status().requests_served == 2
