"""A misbehaving worker for host robustness tests: answers initialize properly, then, for every ping,
writes garbage before the real answer. ``--mode NAME`` picks one kind of garbage (see GARBAGE); without
it every kind is written, and ``--huge`` adds a line over the frame limit. The method
``partial_then_exit`` writes half a frame and exits with code 5. ``--stray HEX`` writes those bytes first,
before the handshake (as a banner printed by the worker's environment would)."""

from __future__ import annotations

import os
import sys

from rpcworker.wire.envelopes import Response
from rpcworker.wire.framing import MessageStream
from rpcworker.wire.messages import MAX_LINE_BYTES, PROTOCOL_VERSION, InitializeResult, PingResult

GARBAGE: dict[str, bytes] = {
    "not_json": b"this is not json\n",
    "invalid_utf8": b'{"jsonrpc":"2.0","id":1,"result":"\xff\xfe"}\n',
    "unknown_id": b'{"jsonrpc":"2.0","id":999999,"result":{"pong":true}}\n',
    "string_id": b'{"jsonrpc":"2.0","id":"who","result":{"pong":true}}\n',
    "null_id_error": b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"confused"}}\n',
    "stray_progress": b'{"jsonrpc":"2.0","method":"progress","params":{"id":424242,"stage":"x","step":1,"total":1}}\n',
    "bad_progress": b'{"jsonrpc":"2.0","method":"progress","params":{"oops":1}}\n',
    "partial_line": b'{"jsonrpc":"2.0","id":\n',
    "deep_nesting": b"[" * 200_000 + b"]" * 200_000 + b"\n",
    "empty_line": b"\n",
}
"""Lines a broken worker might write; the host must skip every one and still match the real answer."""


def main() -> None:
    mode = sys.argv[sys.argv.index("--mode") + 1] if "--mode" in sys.argv else "all"
    huge = "--huge" in sys.argv or mode == "huge"
    stream = MessageStream(sys.stdin.buffer, sys.stdout.buffer)
    out = sys.stdout.buffer
    if "--stray" in sys.argv:
        out.write(bytes.fromhex(sys.argv[sys.argv.index("--stray") + 1]))
        out.flush()
    while True:
        msg = stream.receive()
        if msg is None:
            return
        if msg.method == "initialize":
            info = InitializeResult(
                PROTOCOL_VERSION,
                "garbage",
                "x",
                os.getpid(),
                "garbage",
                "garbage",
                "cpu",
                None,
                None,
                [],
                MAX_LINE_BYTES,
                1,
            )
            stream.send(Response(msg.id, info))
        elif msg.method == "ping":
            if mode == "all":
                for name in (
                    "not_json",
                    "invalid_utf8",
                    "unknown_id",
                    "null_id_error",
                    "stray_progress",
                    "bad_progress",
                ):
                    out.write(GARBAGE[name])
            elif mode in GARBAGE:
                out.write(GARBAGE[mode])
            if huge:
                out.write(b"[" + b"1," * (MAX_LINE_BYTES // 2 + 10) + b"1]\n")
            if mode == "bad_result":
                out.write(b'{"jsonrpc":"2.0","id":%d,"result":{"pong":"yes"}}\n' % msg.id)
                out.flush()
                continue
            out.flush()
            stream.send(Response(msg.id, PingResult()))
        elif msg.method == "partial_then_exit":
            out.write(b'{"jsonrpc":"2.0","id":')
            out.flush()
            os._exit(5)
        elif msg.method == "shutdown":
            return


if __name__ == "__main__":
    main()
