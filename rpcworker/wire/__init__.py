"""The wire, shared by host and worker: message types (``messages``), error classes with their codes
(``errors``), line framing (``framing``) and the cache both sides use: its private folders, atomic writer and
records (``cache``). Imports nothing but msgspec."""

from .errors import WIRE_ERRORS, RpcError, error_from_wire
from .framing import BadFrame, FrameTooLarge, MessageStream
from .messages import MAX_LINE_BYTES, METHODS, PROTOCOL_VERSION

__all__ = [
    "MAX_LINE_BYTES",
    "METHODS",
    "PROTOCOL_VERSION",
    "WIRE_ERRORS",
    "BadFrame",
    "FrameTooLarge",
    "MessageStream",
    "RpcError",
    "error_from_wire",
]
