"""Line framing over a pair of byte streams: one UTF-8 JSON object per ``\\n``-terminated line.

Both sides of the pipe use this module (the worker on its stdin/stdout, the host on the child's pipes), so
framing exists once. It knows nothing about methods: it reads and writes messages.
"""

from __future__ import annotations

import contextlib
import threading
from typing import IO, Union

import msgspec

from .envelopes import Incoming
from .messages import MAX_LINE_BYTES


class BadFrame(msgspec.Struct, frozen=True):
    """A line that could not become a message. ``reason`` is "too_large", "parse" or "invalid"."""

    reason: str
    detail: str
    size: int


Received = Union[Incoming, BadFrame]


class FrameTooLarge(ValueError):
    """A message that would encode to a line over the frame limit; nothing was written."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the frame limit of {limit} bytes; not sent")
        self.size = size
        self.limit = limit


class MessageStream:
    """Reads and writes JSON-RPC frames; ``send`` is safe from several threads, ``receive`` from one."""

    def __init__(self, reader: IO[bytes], writer: IO[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._reader = reader
        self._writer = writer
        self.max_line_bytes = max_line_bytes
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Incoming)
        self._write_lock = threading.Lock()
        self._buffer = bytearray()
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(self, message: msgspec.Struct) -> None:
        """Encode and write one frame. Raises OSError (BrokenPipeError) when the peer is gone.

        A message over the frame limit raises FrameTooLarge before anything is written: the peer would
        discard it unread, so the sender has to learn it now rather than wait for an answer forever.
        """
        with self._write_lock:
            self._buffer.clear()
            self._encoder.encode_into(message, self._buffer)
            if len(self._buffer) > self.max_line_bytes:
                size = len(self._buffer)
                self._buffer = bytearray()  # do not keep a huge buffer alive
                raise FrameTooLarge(size, self.max_line_bytes)
            self._buffer.extend(b"\n")
            self._writer.write(self._buffer)
            self._writer.flush()
            self.bytes_sent += len(self._buffer)

    def encode_frame(self, message: msgspec.Struct) -> bytes:
        """One frame's bytes, newline included, for writers that do their own I/O (the host's writer
        thread). Raises FrameTooLarge like ``send``."""
        frame = self._encoder.encode(message)
        if len(frame) > self.max_line_bytes:
            raise FrameTooLarge(len(frame), self.max_line_bytes)
        return frame + b"\n"

    def write_frame(self, frame: bytes) -> None:
        """Writes bytes from ``encode_frame`` whole, under the write lock."""
        with self._write_lock:
            self._writer.write(frame)
            self._writer.flush()
            self.bytes_sent += len(frame)

    def receive(self) -> Received | None:
        """The next frame, a BadFrame for a line that is not a message, or None at end of stream."""
        line = self._reader.readline(self.max_line_bytes + 1)
        if not line:
            return None
        self.bytes_received += len(line)
        if len(line) > self.max_line_bytes and not line.endswith(b"\n"):
            size = len(line) + self._discard_rest_of_line()
            return BadFrame("too_large", f"line of {size} bytes exceeds the limit of {self.max_line_bytes}", size)
        if line.endswith(b"\n"):
            line = line[:-1]
        if not line.strip():
            return BadFrame("invalid", "empty line", 0)
        if not line.isascii():
            # msgspec checks UTF-8 only in the strings it decodes, not inside Raw fields (params, result):
            # check the whole line here, so invalid UTF-8 anywhere is a parse error, as protocol.md says.
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return BadFrame("parse", f"invalid UTF-8: {exc}", len(line))
        try:
            return self._decoder.decode(line)
        except msgspec.ValidationError as exc:
            return BadFrame("invalid", str(exc), len(line))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return BadFrame("parse", str(exc), len(line))
        except RecursionError as exc:  # JSON nested deeper than msgspec's decoder recurses
            return BadFrame("parse", f"nested too deeply: {exc}", len(line))

    def arrived(self) -> bytes | None:
        """The bytes that have arrived and are not read yet, without consuming them; waits for the first
        (empty: the stream ended). None when the reader cannot look ahead (it has no ``peek``)."""
        peek = getattr(self._reader, "peek", None)
        return None if peek is None else bytes(peek(1))

    def _discard_rest_of_line(self) -> int:
        skipped = 0
        while True:
            chunk = self._reader.readline(self.max_line_bytes + 1)
            skipped += len(chunk)
            self.bytes_received += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                return skipped

    def close_writer(self) -> None:
        with self._write_lock, contextlib.suppress(OSError):
            self._writer.close()
