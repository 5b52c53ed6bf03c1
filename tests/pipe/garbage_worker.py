"""A misbehaving worker for host robustness tests: answers initialize properly, then, for every ping,
writes garbage before the real answer: a non-JSON line, invalid UTF-8, a response with an unknown id,
an error not tied to a request, a notification for a request that does not exist, and (with --huge) a
line over the frame limit."""

from __future__ import annotations

import os
import sys

from rpcworker.protocol import MAX_LINE_BYTES, PROTOCOL_VERSION, InitializeResult, PingResult, Response
from rpcworker.transport import MessageStream


def main() -> None:
    huge = "--huge" in sys.argv
    stream = MessageStream(sys.stdin.buffer, sys.stdout.buffer)
    out = sys.stdout.buffer
    while True:
        msg = stream.receive()
        if msg is None:
            return
        if msg.method == "initialize":
            info = InitializeResult(PROTOCOL_VERSION, "garbage", "x", os.getpid(), "garbage", "garbage", "cpu", None, None, [], MAX_LINE_BYTES, 1)
            stream.send(Response(msg.id, info))
        elif msg.method == "ping":
            out.write(b"this is not json\n")
            out.write(b'{"jsonrpc":"2.0","id":1,"result":"\xff\xfe"}\n')
            out.write(b'{"jsonrpc":"2.0","id":999999,"result":{"pong":true}}\n')
            out.write(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"confused"}}\n')
            out.write(b'{"jsonrpc":"2.0","method":"progress","params":{"id":424242,"stage":"x","step":1,"total":1}}\n')
            out.write(b'{"jsonrpc":"2.0","method":"progress","params":{"oops":1}}\n')
            if huge:
                out.write(b"[" + b"1," * (MAX_LINE_BYTES // 2 + 10) + b"1]\n")
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
